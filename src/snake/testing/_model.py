"""What a pipeline may give: the sequential reference, and how ordering weakens it.

Items are compared through a canonical form (:func:`canonical`) so that lists,
dicts, NumPy arrays and NaN can be counted as a multiset, and numbers of another
kind (``1`` for ``True`` or ``1.0``) are told apart. An output is checked
against an :class:`Expect`:

- ``exact``: the items of the reference, in order (every stage so far keeps order);
- ``bag``: the same multiset (an unordered stage, or a shuffle, came before);
- ``sub``: a sub-multiset of ``items`` with a length in ``[lo, hi]`` (a ``take`` or
  ``skip`` after an unordered stage: which items it keeps depends on timing).

A tail stage (``enumerate`` or ``batch``) after a ``bag`` or ``sub`` is checked
by its shape (indices 0..n-1; full batches but the last) and by the items it holds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable
from typing import Any, Literal

import attrs
import numpy as np

Kind = Literal["exact", "bag", "sub"]

LAW_ORDERED = "an ordered pipeline gives exactly the items of its sequential reference, in order"
LAW_MULTISET = (
    "an unordered pipeline gives every item of its sequential reference exactly once (the same multiset)"
)
LAW_SUBSET = (
    "after an unordered stage, take/skip give as many items as the reference, each one of the reference's"
)
LAW_SHAPE = "enumerate numbers the items from 0; batch makes full batches but the last"
LAW_RELEASE = (
    "a pipeline releases every task, thread, worker process and shared-memory file it started, "
    "when it ends and when it is stopped early (take, break)"
)
LAW_STOP = "stopping after k items gives k items (or all of them, if there are fewer)"
LAW_ERRORS = "an exception of a stage's function comes out of the pipeline unchanged, with snake's note"
LAW_RUNS_AGREE = "without unordered stages, every run gives the same items in the same order"

_MAX_REPR = 300


def _real(x: Any) -> Hashable:
    """A real number's value, with every NaN the same (NaN != NaN, but it is the same item)."""
    if math.isnan(x):
        return "nan"
    # float16/32/64 widen to a float exactly; a longdouble keeps its precision (and equals a
    # float of the same value, as NumPy scalars do).
    return float(x) if not isinstance(x, np.floating) or x.itemsize <= 8 else x


def _number(x: Any) -> Hashable | None:
    """The canonical form of a bool, int, float or complex (Python's or NumPy's), else None.

    The kind goes into it: ``1``, ``True``, ``1.0`` and ``1+0j`` compare equal in Python,
    but a stage that gives one for another gives the wrong type. A NumPy scalar equals the
    Python number of the same kind and value (``np.int64(1)`` and ``1``: ``.item()`` and
    ``.tolist()`` make one from the other), while ``np.float32(0.1)`` is not ``0.1``.
    """
    t = type(x)
    if t is bool or isinstance(x, np.bool_):
        return ("bool", bool(x))
    if t is int or isinstance(x, np.integer):
        return ("int", int(x))
    if t is float or isinstance(x, np.floating):
        return ("float", _real(x))
    if t is complex or isinstance(x, np.complexfloating):
        return ("complex", _real(x.real), _real(x.imag))
    if isinstance(x, (np.datetime64, np.timedelta64)) and np.isnat(x):
        return ("nat", str(x.dtype))
    return None


def canonical(x: object) -> Hashable:
    """A hashable stand-in for ``x`` that equals another's when the items are equal.

    Numbers compare by kind and value (:func:`_number`), and every NaN equals itself;
    lists, tuples, dicts and sets by content; NumPy arrays by dtype, shape and bytes.
    """
    number = _number(x)
    if number is not None:
        return number
    if isinstance(x, list):
        return ("list", tuple(canonical(v) for v in x))
    if isinstance(x, tuple):  # a named tuple is not the plain tuple of its fields
        return ("tuple", type(x).__qualname__, tuple(canonical(v) for v in x))
    if isinstance(x, dict):
        return ("dict", frozenset((canonical(k), canonical(v)) for k, v in x.items()))
    if isinstance(x, (set, frozenset)):
        return ("set", frozenset(canonical(v) for v in x))
    if isinstance(x, np.ndarray):
        if x.dtype.hasobject:
            return ("ndarray", str(x.dtype), x.shape, tuple(canonical(v) for v in np.ravel(x).tolist()))
        return ("ndarray", str(x.dtype), x.shape, x.tobytes())
    try:
        hash(x)
    except TypeError:
        return ("repr", type(x).__qualname__, repr(x))
    return x  # hash() succeeded


def count(n: int) -> str:
    return f"{n} item" if n == 1 else f"{n} items"


def short(x: object) -> str:
    text = repr(x)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def _counter(items: Iterable[Any]) -> tuple[Counter[Hashable], dict[Hashable, Any]]:
    counts: Counter[Hashable] = Counter()
    first: dict[Hashable, Any] = {}
    for x in items:
        key = canonical(x)
        counts[key] += 1
        first.setdefault(key, x)
    return counts, first


def _listing(counts: Counter[Hashable], first: dict[Hashable, Any]) -> str:
    parts = [short(first[k]) if n == 1 else f"{short(first[k])} (x{n})" for k, n in counts.items()]
    text = "[" + ", ".join(parts) + "]"
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 4] + "...]"


def multiset_diff(expected: Iterable[Any], got: Iterable[Any]) -> str:
    """``missing: [...]; extra: [...]`` between two multisets, or "" if they are equal."""
    exp, exp_first = _counter(expected)
    have, have_first = _counter(got)
    missing = exp - have
    extra = have - exp
    parts = []
    if missing:
        parts.append(f"missing: {_listing(missing, exp_first)}")
    if extra:
        parts.append(f"extra (duplicated or not in the reference): {_listing(extra, have_first)}")
    return "; ".join(parts)


def not_included(got: Iterable[Any], pool: Iterable[Any]) -> str:
    """The items of ``got`` that ``pool`` does not hold (as many times), or ""."""
    have, have_first = _counter(got)
    allowed, _ = _counter(pool)
    extra = have - allowed
    return _listing(extra, have_first) if extra else ""


def same_list(expected: list[Any], got: list[Any]) -> str:
    """Where two lists differ, or "" if they are equal item by item."""
    if len(expected) == len(got) and all(
        canonical(a) == canonical(b) for a, b in zip(expected, got, strict=True)
    ):
        return ""
    for i, (a, b) in enumerate(zip(expected, got, strict=False)):
        if canonical(a) != canonical(b):
            where = f"first difference at index {i}: expected {short(a)}, got {short(b)}"
            break
    else:
        where = f"expected {count(len(expected))}, got {len(got)}"
    diff = multiset_diff(expected, got)
    if diff:
        return f"{where}; {diff}"
    return f"{where}; the same items in another order"


@attrs.frozen
class Expect:
    """The outputs a pipeline's body (the stages before any tail) may give."""

    kind: Kind
    #: The reference (exact), the multiset (bag), or the items a sub-multiset is taken from (sub).
    items: tuple[Any, ...]
    #: The number of items the output has, at least and at most (exact and bag: len(items)).
    lo: int
    hi: int

    @classmethod
    def exact(cls, items: Iterable[Any]) -> Expect:
        t = tuple(items)
        return cls("exact", t, len(t), len(t))

    @classmethod
    def bag(cls, items: Iterable[Any]) -> Expect:
        t = tuple(items)
        return cls("bag", t, len(t), len(t))

    def law(self) -> str:
        return {"exact": LAW_ORDERED, "bag": LAW_MULTISET, "sub": LAW_SUBSET}[self.kind]

    def problem(self, got: list[Any], lengths: set[int] | None = None) -> str:
        """Why ``got`` is not an output of this body, or "".

        ``lengths``: the only lengths ``got`` may have (a ``drop_last`` batch cut it);
        otherwise ``lo..hi``.
        """
        if self.kind == "exact" and lengths is None:
            return same_list(list(self.items), got)
        if self.kind == "bag" and lengths is None:
            return multiset_diff(self.items, got)
        ok = lengths if lengths is not None else set(range(self.lo, self.hi + 1))
        if len(got) not in ok:
            want = f"{self.lo}..{self.hi}" if lengths is None else sorted(ok)
            return f"got {count(len(got))}, expected {want}"
        extra = not_included(got, self.items)
        if extra:
            return f"items the reference does not hold (as many times): {extra}"
        return ""


@attrs.frozen
class Tail:
    """``enumerate()`` or ``batch(size, drop_last)`` at the end of a pipeline."""

    name: Literal["enumerate", "batch"]
    size: int = 0
    drop_last: bool = False

    def apply(self, items: list[Any]) -> list[Any]:
        if self.name == "enumerate":
            return list(enumerate(items))
        n = self.size
        batches = [items[i : i + n] for i in range(0, len(items), n)]
        if self.drop_last and batches and len(batches[-1]) < n:
            batches.pop()
        return batches

    def problem(self, body: Expect, got: list[Any]) -> str:
        """Why ``got`` is not this tail applied to an output of ``body``, or ""."""
        if self.name == "enumerate":
            if not all(isinstance(p, tuple) and len(p) == 2 for p in got):
                return "enumerate gave items that are not (index, item) pairs"
            indices = [p[0] for p in got]
            if indices != list(range(len(got))):
                return f"enumerate numbered the items {short(indices)}, not 0..{len(got) - 1}"
            return body.problem([p[1] for p in got])
        n = self.size
        if not all(isinstance(b, list) for b in got):
            return "batch(collate=None) gave items that are not lists"
        sizes = [len(b) for b in got]
        last_ok = (not got) or (sizes[-1] == n if self.drop_last else 1 <= sizes[-1] <= n)
        if any(s != n for s in sizes[:-1]) or not last_ok:
            return f"batch({n}, drop_last={self.drop_last}) gave batches of sizes {short(sizes)}"
        flat = [x for b in got for x in b]
        if not self.drop_last:
            return body.problem(flat)
        return body.problem(flat, {k // n * n for k in range(body.lo, body.hi + 1)})
