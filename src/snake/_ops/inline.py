"""Inline stages: cheap per-item work fused into the task of the stage before them.

Every operator works on a whole chunk at once (``list(map(fn, chunk))``), so the
per-item cost is that of the user's function plus a few tens of nanoseconds.
When a user function raises, the item's index is recovered from how far the
chunk's iterator got, at no cost on the fast path.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Union

import attrs

from .._buffers.collate import Collator, PadCollator, format_path
from .._engine.errors import ErrorBudget, ErrorPolicy
from .._engine.spec import Chunk, InlineSpec, Op, Spec
from .._engine.util import add_note, describe_callable

_RAISE = ErrorPolicy()


def _failed_index(op: Op, chunk: Chunk, it: Any) -> int:
    # ``it`` is a list iterator: its length hint is what is left after the failing item.
    return op.seen + len(chunk) - operator.length_hint(it) - 1


class _MapOp(Op):
    __slots__ = ("fn",)

    def __init__(self, label: str, fn: Callable[[Any], Any], errors: ErrorPolicy = _RAISE) -> None:
        super().__init__(label)
        self.fn = fn
        if errors.mode != "raise":
            self.budget = ErrorBudget(errors, label)

    def __call__(self, chunk: Chunk) -> Chunk:
        if self.budget is not None:
            return self._skipping(chunk)
        it = iter(chunk)
        try:
            out = list(map(self.fn, it))
        except Exception as exc:
            add_note(exc, self.label, _failed_index(self, chunk, it))
            raise
        self.seen += len(chunk)
        return out

    def _one(self, x: Any, out: Chunk) -> None:
        out.append(self.fn(x))

    def _skipping(self, chunk: Chunk) -> Chunk:
        """The ``on_error("skip")`` path: item by item, dropping the items that raise."""
        budget = self.budget
        assert budget is not None
        out: Chunk = []
        one = self._one
        for x in chunk:
            self.seen += 1
            try:
                one(x, out)
            except Exception as exc:
                add_note(exc, self.label, self.seen - 1)
                if not budget.absorb(exc, self.seen - 1, self.seen):
                    raise
        return out


class _FilterOp(_MapOp):
    __slots__ = ()

    def _one(self, x: Any, out: Chunk) -> None:
        if self.fn(x):
            out.append(x)

    def __call__(self, chunk: Chunk) -> Chunk:
        if self.budget is not None:
            return self._skipping(chunk)
        it = iter(chunk)
        try:
            out = list(filter(self.fn, it))
        except Exception as exc:
            add_note(exc, self.label, _failed_index(self, chunk, it))
            raise
        self.seen += len(chunk)
        return out

    def demand(self, downstream: int | None) -> int | None:
        return None


class _FlatMapOp(_MapOp):
    __slots__ = ()

    def _one(self, x: Any, out: Chunk) -> None:
        out.extend(list(self.fn(x)))

    def __call__(self, chunk: Chunk) -> Chunk:
        if self.budget is not None:
            return self._skipping(chunk)
        it = iter(chunk)
        out: Chunk = []
        extend = out.extend
        fn = self.fn
        try:
            for x in it:
                extend(fn(x))
        except Exception as exc:
            add_note(exc, self.label, _failed_index(self, chunk, it))
            raise
        self.seen += len(chunk)
        return out

    def demand(self, downstream: int | None) -> int | None:
        return None


class _EnumerateOp(Op):
    __slots__ = ()

    def __call__(self, chunk: Chunk) -> Chunk:
        start = self.seen
        self.seen = start + len(chunk)
        return list(zip(range(start, self.seen), chunk))


class _TakeOp(Op):
    __slots__ = ("remaining",)

    def __init__(self, label: str, n: int) -> None:
        super().__init__(label)
        self.remaining = n
        self.done = n == 0

    def __call__(self, chunk: Chunk) -> Chunk:
        r = self.remaining
        self.seen += len(chunk)
        if len(chunk) >= r:
            self.done = True
            chunk = chunk[:r]
        self.remaining = r - len(chunk)
        return chunk

    def demand(self, downstream: int | None) -> int | None:
        if downstream is None:
            return self.remaining
        return min(self.remaining, downstream)


class _SkipOp(Op):
    __slots__ = ("remaining",)

    def __init__(self, label: str, n: int) -> None:
        super().__init__(label)
        self.remaining = n

    def __call__(self, chunk: Chunk) -> Chunk:
        r = self.remaining
        self.seen += len(chunk)
        if r:
            dropped = min(r, len(chunk))
            self.remaining = r - dropped
            chunk = chunk[dropped:]
        return chunk

    def demand(self, downstream: int | None) -> int | None:
        if downstream is None:
            return None
        return downstream + self.remaining


class _BatchOp(Op):
    """Groups items into lists of ``size``, then collates each list (if ``collate``)."""

    __slots__ = ("batches", "buf", "collate", "drop_last", "size")

    def __init__(
        self, label: str, size: int, drop_last: bool, collate: Callable[[list[Any]], Any] | None = None
    ) -> None:
        super().__init__(label)
        self.weight = size
        self.size = size
        self.drop_last = drop_last
        self.buf: Chunk = []
        self.collate = collate
        #: Batches emitted so far (for error notes).
        self.batches = 0

    def __call__(self, chunk: Chunk) -> Chunk:
        self.seen += len(chunk)
        buf = self.buf
        n = self.size
        if buf:
            buf.extend(chunk)
        else:
            buf = chunk
        full = len(buf) - len(buf) % n
        if not full:
            self.buf = buf if buf is not chunk else list(chunk)
            return []
        out = [buf[i : i + n] for i in range(0, full, n)]
        self.buf = buf[full:]
        if self.collate is not None:
            return self._collate(out)
        return out

    def _collate(self, batches: Chunk) -> Chunk:
        fn = self.collate
        assert fn is not None
        it = iter(batches)
        try:
            out = list(map(fn, it))
        except Exception as exc:
            k = len(batches) - operator.length_hint(it) - 1
            b = self.batches + k
            start = b * self.size
            batch_note(exc, self.label, fn, b, range(start, start + len(batches[k])))
            raise
        self.batches += len(batches)
        return out

    def flush(self) -> Chunk:
        buf, self.buf = self.buf, []
        out: Chunk = []
        if buf and not self.drop_last:
            out = self._collate([buf]) if self.collate is not None else [buf]
        if isinstance(self.collate, Collator):
            self.collate.release()  # the end of the input: the pools are done with
        return out

    def demand(self, downstream: int | None) -> int | None:
        if downstream is None:
            return None
        return max(0, downstream * self.size - len(self.buf))


def batch_note(
    exc: BaseException, label: str, collate: object, b: int, indices: Sequence[int]
) -> None:
    """Note a failed collate: the stage and offending item (if known), then the batch."""
    path: tuple[object, ...] = ()
    at: int | None = None
    if isinstance(collate, Collator) and collate.failure is not None:
        path, i = collate.failure
        if i is not None and i < len(indices):
            at = indices[i]
    add_note(exc, label, at)
    if isinstance(indices, range):
        shown = f"{indices.start}..{indices.stop - 1}"
    else:
        shown = ", ".join(map(str, indices[:8])) + (", ..." if len(indices) > 8 else "")
    note = f"snake: in batch index {b} (item indices {shown})"
    if path:
        note += f", field {format_path(path)}"
    exc.add_note(note)


class _BucketOp(Op):
    """Puts items in buckets by length; a full bucket becomes a padded batch."""

    __slots__ = ("batches", "boundaries", "buckets", "collate", "drop_last", "indices", "length", "sizes")

    def __init__(
        self,
        label: str,
        boundaries: tuple[int, ...],
        sizes: tuple[int, ...],
        length: Callable[[Any], int],
        drop_last: bool,
        collate: Callable[[list[Any]], Any],
    ) -> None:
        super().__init__(label)
        self.weight = max(sizes)
        self.boundaries = boundaries
        self.sizes = sizes
        self.length = length
        self.drop_last = drop_last
        self.collate = collate
        self.buckets: list[Chunk] = [[] for _ in sizes]
        self.indices: list[list[int]] = [[] for _ in sizes]
        self.batches = 0

    def __call__(self, chunk: Chunk) -> Chunk:
        full: list[tuple[Chunk, list[int]]] = []
        length = self.length
        bounds = self.boundaries
        buckets, indices, sizes = self.buckets, self.indices, self.sizes
        i = self.seen
        try:
            for x in chunk:
                n = length(x)
                if type(n) is not int:
                    n = _as_length(n)
                if n < 0:
                    raise ValueError(f"bucket_by_length: length(item) returned {n}; a length must be >= 0")
                b = bisect.bisect_right(bounds, n)
                bucket = buckets[b]
                bucket.append(x)
                indices[b].append(i)
                i += 1
                if len(bucket) == sizes[b]:
                    full.append((bucket, indices[b]))
                    buckets[b], indices[b] = [], []
        except Exception as exc:
            add_note(exc, self.label, i)
            raise
        self.seen = i
        return self._emit(full)

    def _emit(self, full: list[tuple[Chunk, list[int]]]) -> Chunk:
        out = []
        for items, where in full:
            try:
                out.append(self.collate(items))
            except Exception as exc:
                batch_note(exc, self.label, self.collate, self.batches, where)
                raise
            self.batches += 1
        return out

    def flush(self) -> Chunk:
        full = [(b, w) for b, w in zip(self.buckets, self.indices) if b]
        self.buckets = [[] for _ in self.sizes]
        self.indices = [[] for _ in self.sizes]
        out = [] if self.drop_last else self._emit(full)
        if isinstance(self.collate, Collator):
            self.collate.release()
        return out

    def demand(self, downstream: int | None) -> int | None:
        return None


def _as_length(n: object) -> int:
    if isinstance(n, bool):
        raise TypeError("bucket_by_length: length(item) returned a bool; it must return an int")
    try:
        return operator.index(n)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"bucket_by_length: length(item) returned {type(n).__qualname__}; it must return an int"
        ) from None


@attrs.frozen
class Map(InlineSpec):
    fn: Callable[[Any], Any]
    errors: ErrorPolicy = _RAISE

    def describe(self) -> str:
        return f"map({describe_callable(self.fn)}){self.errors.describe()}"

    def out_length(self, n: int) -> int | None:
        return n if self.errors.mode == "raise" else None

    def make(self, label: str) -> Op:
        return _MapOp(label, self.fn, self.errors)


@attrs.frozen
class Filter(InlineSpec):
    pred: Callable[[Any], Any]
    errors: ErrorPolicy = _RAISE

    def describe(self) -> str:
        return f"filter({describe_callable(self.pred)}){self.errors.describe()}"

    def make(self, label: str) -> Op:
        return _FilterOp(label, self.pred, self.errors)


@attrs.frozen
class FlatMap(InlineSpec):
    fn: Callable[[Any], Iterable[Any]]
    errors: ErrorPolicy = _RAISE

    def describe(self) -> str:
        return f"flat_map({describe_callable(self.fn)}){self.errors.describe()}"

    def make(self, label: str) -> Op:
        return _FlatMapOp(label, self.fn, self.errors)


@attrs.frozen
class Enumerate(InlineSpec):
    def describe(self) -> str:
        return "enumerate()"

    def out_length(self, n: int) -> int | None:
        return n

    def make(self, label: str) -> Op:
        return _EnumerateOp(label)


@attrs.frozen
class Take(InlineSpec):
    n: int

    def describe(self) -> str:
        return f"take({self.n})"

    def out_length(self, n: int) -> int | None:
        return min(n, self.n)

    def make(self, label: str) -> Op:
        return _TakeOp(label, self.n)


@attrs.frozen
class Skip(InlineSpec):
    n: int

    def describe(self) -> str:
        return f"skip({self.n})"

    def out_length(self, n: int) -> int | None:
        return max(0, n - self.n)

    def make(self, label: str) -> Op:
        return _SkipOp(label, self.n)


@attrs.frozen
class OnError(Spec):
    """``.on_error(mode, max_errors=...)`` as written: the plan binds it to the stage
    before it (``errors=``); it never runs itself."""

    policy: ErrorPolicy

    def describe(self) -> str:
        return self.policy.describe().removeprefix(".")

    def out_length(self, n: int) -> int | None:
        return n if self.policy.mode == "raise" else None


#: ``batch(collate=...)``: the default collate, none (plain lists), or the user's function.
CollateArg = Union[Literal["default"], None, Callable[[list[Any]], Any]]  # noqa: UP007


@attrs.frozen
class Batch(InlineSpec):
    size: int
    drop_last: bool = False
    collate: CollateArg = "default"

    def describe(self) -> str:
        extra = ", drop_last=True" if self.drop_last else ""
        if self.collate is None:
            extra += ", collate=None"
        elif self.collate != "default":
            extra += f", collate={describe_callable(self.collate)}"
        return f"batch({self.size}{extra})"

    def make(self, label: str) -> Op:
        collate = self.collate
        if collate == "default":
            collate = Collator("batch")  # one per run: it owns the buffer pools
        return _BatchOp(label, self.size, self.drop_last, collate)


@attrs.frozen
class PadBatch(InlineSpec):
    size: int
    pad_value: complex = 0
    pad_to_multiple: int | None = None
    drop_last: bool = False

    def describe(self) -> str:
        extra = ""
        if not (self.pad_value == 0 and type(self.pad_value) is int):
            extra += f", pad_value={self.pad_value!r}"
        if self.pad_to_multiple is not None:
            extra += f", pad_to_multiple={self.pad_to_multiple}"
        if self.drop_last:
            extra += ", drop_last=True"
        return f"pad_batch({self.size}{extra})"

    def make(self, label: str) -> Op:
        collate = PadCollator("pad_batch", self.pad_value, self.pad_to_multiple)
        return _BatchOp(label, self.size, self.drop_last, collate)


@attrs.frozen
class BucketByLength(InlineSpec):
    boundaries: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    length: Callable[[Any], int] = len
    pad_value: complex = 0
    drop_last: bool = False

    def describe(self) -> str:
        extra = ""
        if self.length is not len:
            extra += f", length={describe_callable(self.length)}"
        if not (self.pad_value == 0 and type(self.pad_value) is int):
            extra += f", pad_value={self.pad_value!r}"
        if self.drop_last:
            extra += ", drop_last=True"
        return f"bucket_by_length({list(self.boundaries)}, {list(self.batch_sizes)}{extra})"

    def make(self, label: str) -> Op:
        collate = PadCollator("bucket_by_length", self.pad_value, None)
        return _BucketOp(label, self.boundaries, self.batch_sizes, self.length, self.drop_last, collate)
