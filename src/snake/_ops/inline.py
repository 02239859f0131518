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

from .._buffers.collate import Collator, PadCollator, Spare, format_path
from .._engine.errors import ErrorBudget, ErrorPolicy
from .._engine.resume import Cut, Drops, refill_pairs
from .._engine.spec import Chunk, HoldingOp, InlineSpec, Op, Spec
from .._engine.util import add_note, describe_callable

_RAISE = ErrorPolicy()


def _failed_index(op: Op, chunk: Chunk, it: Any) -> int:
    # ``it`` is a list iterator: its length hint is what is left after the failing item.
    return op.seen + len(chunk) - operator.length_hint(it) - 1


class _MapOp(Op):
    """``map(fn)``; with ``on_error("skip")`` it drops items, and keeps which (for
    checkpoints: an output's input number is then not its own)."""

    __slots__ = ("drops", "errors", "fn")

    def __init__(self, label: str, fn: Callable[[Any], Any], errors: ErrorPolicy = _RAISE) -> None:
        super().__init__(label)
        self.fn = fn
        #: Input numbers of the items dropped (by the policy, or by a filter).
        self.drops = Drops()
        #: Input numbers of the items the policy dropped, for its count at a checkpoint.
        self.errors = Drops()
        if errors.mode != "raise":
            self.budget = ErrorBudget(errors, label)

    # -- checkpoints ---------------------------------------------------------------------
    def cut(self, r: int) -> Cut:
        u = self.drops.input_of(r)
        if self.budget is None:
            return Cut(u)
        return Cut(u, {"skipped": self.errors.dropped_before(u)})

    def locate(self, positions: list[int]) -> list[int]:
        return [self.drops.input_of(p) for p in positions]

    def refill_state(self, outs: list[int], ins: list[int]) -> Any:
        return len(outs) if outs == ins else refill_pairs(outs, ins)

    def prune(self, r: int) -> None:
        u = self.drops.input_of(r)
        self.drops.prune(u)
        self.errors.prune(u)

    def restore(self, entry: dict[str, Any]) -> None:
        super().restore(entry)
        self.drops.forgotten = int(entry["resume"]) - int(entry["at"])
        self.errors.forgotten = int(entry.get("skipped", 0))

    def refill(self, items: Chunk) -> Chunk:
        return list(map(self.fn, items))

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
        drops, errors = self.drops, self.errors
        for x in chunk:
            self.seen += 1
            n = len(out)
            try:
                one(x, out)
            except Exception as exc:
                add_note(exc, self.label, self.seen - 1)
                if not budget.absorb(exc, self.seen - 1, self.seen):
                    raise
                errors.add(self.seen - 1)
            if len(out) == n:
                drops.add(self.seen - 1)
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
        if len(out) < len(chunk):
            self._note_drops(chunk, out)
        self.seen += len(chunk)
        return out

    def _note_drops(self, chunk: Chunk, out: Chunk) -> None:
        # The kept items are the chunk's own objects, in order: the others were dropped
        # (a pure predicate decides alike for an object that appears twice).
        drops = self.drops
        k = 0
        for i, x in enumerate(chunk):
            if k < len(out) and out[k] is x:
                k += 1
            else:
                drops.add(self.seen + i)

    def refill(self, items: Chunk) -> Chunk:
        return items  # they passed before

    def demand(self, downstream: int | None) -> int | None:
        return None


class _FlatMapOp(_MapOp):
    """``flat_map(fn)``. For checkpoints it keeps, for each input since the consumer's
    position, the number of its first output: a checkpoint may fall among one input's
    outputs, and a resumed run then drops those the consumer had."""

    __slots__ = ("discard", "first", "starts")

    passes_refill = False

    def __init__(self, label: str, fn: Callable[[Any], Any], errors: ErrorPolicy = _RAISE) -> None:
        super().__init__(label, fn, errors)
        #: Output number of the first output of each input from ``first`` on.
        self.starts: list[int] = []
        self.first = 0
        #: Outputs of the next input that a resumed run drops (the consumer had them).
        self.discard = 0

    def _one(self, x: Any, out: Chunk) -> None:
        out.extend(list(self.fn(x)))

    def __call__(self, chunk: Chunk) -> Chunk:
        base = self.emitted - self.discard
        if self.budget is not None:
            out = self._skipping(chunk, base)
        else:
            it = iter(chunk)
            out = []
            extend = out.extend
            fn = self.fn
            mark = self.starts.append
            try:
                for x in it:
                    mark(base + len(out))
                    extend(fn(x))
            except Exception as exc:
                del self.starts[len(self.starts) - (len(chunk) - operator.length_hint(it)) :]
                add_note(exc, self.label, _failed_index(self, chunk, it))
                raise
            self.seen += len(chunk)
        if self.discard:
            out = out[self.discard :]
            self.discard = 0
        return out

    def _skipping(self, chunk: Chunk, base: int = 0) -> Chunk:
        budget = self.budget
        assert budget is not None
        out: Chunk = []
        for x in chunk:
            self.seen += 1
            self.starts.append(base + len(out))
            try:
                out.extend(list(self.fn(x)))
            except Exception as exc:
                add_note(exc, self.label, self.seen - 1)
                if not budget.absorb(exc, self.seen - 1, self.seen):
                    raise
                self.errors.add(self.seen - 1)
        return out

    def _input_of(self, r: int) -> tuple[int, int]:
        """(input number, how many of its outputs come before output ``r``)."""
        starts = self.starts
        j = bisect.bisect_right(starts, r) - 1
        if j < 0:
            return self.first, 0
        end = starts[j + 1] if j + 1 < len(starts) else self.emitted
        if end <= r:  # every output of the inputs seen so far is out: the next input
            return self.first + len(starts), 0
        return self.first + j, r - starts[j]

    def cut(self, r: int) -> Cut:
        u, d = self._input_of(r)
        state: dict[str, Any] = {"discard": d} if d else {}
        if self.budget is not None:
            state["skipped"] = self.errors.dropped_before(u)
        return Cut(u, state)

    def prune(self, r: int) -> None:
        u, _ = self._input_of(r)
        k = u - self.first
        if k > 0:
            del self.starts[:k]
            self.first = u
        self.errors.prune(u)

    def restore(self, entry: dict[str, Any]) -> None:
        Op.restore(self, entry)
        self.first = self.seen
        self.discard = int(entry.get("discard", 0))
        self.emitted = int(entry["at"])  # outputs so far, the discarded ones included
        self.errors.forgotten = int(entry.get("skipped", 0))

    def demand(self, downstream: int | None) -> int | None:
        return None


class _EnumerateOp(Op):
    __slots__ = ("counts",)

    def __init__(self, label: str) -> None:
        super().__init__(label)
        #: The numbers of the items that come again on resume (see ``resume.py``).
        self.counts: list[int] = []

    def __call__(self, chunk: Chunk) -> Chunk:
        start = self.seen
        self.seen = start + len(chunk)
        return list(zip(range(start, self.seen), chunk))

    def restore(self, entry: dict[str, Any]) -> None:
        super().restore(entry)
        self.counts = [int(p) for p in entry.get("refill", ())]

    def refill_state(self, outs: list[int], ins: list[int]) -> Any:
        return outs  # the numbers of the items that come again: their counts

    def refill(self, items: Chunk) -> Chunk:
        counts, self.counts = self.counts[: len(items)], self.counts[len(items) :]
        return list(zip(counts, items))


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

    def restore(self, entry: dict[str, Any]) -> None:
        super().restore(entry)
        self.remaining = max(0, self.remaining - self.seen)
        self.done = self.remaining == 0


class _SkipOp(Op):
    __slots__ = ("n", "remaining")

    def __init__(self, label: str, n: int) -> None:
        super().__init__(label)
        self.n = n
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

    def cut(self, r: int) -> Cut:
        # Before the first output, no further than the inputs the stage before has made.
        return Cut(r + self.n if r else min(self.n, self.seen))

    def locate(self, positions: list[int]) -> list[int]:
        return [p + self.n for p in positions]

    def restore(self, entry: dict[str, Any]) -> None:
        super().restore(entry)
        self.remaining = max(0, self.n - self.seen)


class _BatchOp(Op):
    """Groups items into lists of ``size``, then collates each list (if ``collate``)."""

    __slots__ = ("batches", "buf", "collate", "drop_last", "size")

    passes_refill = False

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

    def cut(self, r: int) -> Cut:
        # Batch r holds inputs r*size on: the partial batch after it comes again.
        return Cut(r * self.size)

    def restore(self, entry: dict[str, Any]) -> None:
        super().restore(entry)
        self.batches = int(entry["at"])


class _SlidingOp(Op):
    """Windows of ``size`` consecutive items, one every ``step`` items.

    Window ``w`` holds inputs ``w*step`` to ``w*step + size - 1``. The operator keeps
    the inputs from the start of the next window on (at most ``size - 1`` of them
    between chunks); for checkpoints, window ``r`` is made again from input
    ``r*step`` on, as a ``batch`` remakes a partial batch.
    """

    __slots__ = ("base", "buf", "size", "step")

    passes_refill = False

    def __init__(self, label: str, size: int, step: int) -> None:
        super().__init__(label)
        self.size = size
        self.step = step
        #: The inputs from number ``base`` on that a window still needs.
        self.buf: Chunk = []
        self.base = 0

    def __call__(self, chunk: Chunk) -> Chunk:
        size, step = self.size, self.step
        buf = self.buf + chunk if self.buf else chunk
        base = self.base
        self.seen += len(chunk)
        start = self.emitted * step - base  # where the next window starts in buf
        stop = len(buf) - size + 1
        out = [tuple(buf[i : i + size]) for i in range(start, stop, step)] if start < stop else []
        nxt = start + len(out) * step
        if nxt < len(buf):
            self.buf = buf[nxt:] if nxt else (buf if buf is not chunk else list(chunk))
            self.base = base + nxt
        else:  # the next window starts past what came (step > size): keep nothing
            self.buf = []
            self.base = self.seen
        return out

    def demand(self, downstream: int | None) -> int | None:
        if downstream is None:
            return None
        if downstream <= 0:
            return 0
        last = (self.emitted + downstream - 1) * self.step + self.size  # inputs the last one needs
        return max(0, last - self.seen)

    def cut(self, r: int) -> Cut:
        return Cut(r * self.step)

    def restore(self, entry: dict[str, Any]) -> None:
        super().restore(entry)
        self.base = self.seen
        self.emitted = int(entry["at"])  # window numbers go on from the checkpoint's


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


class _BucketOp(HoldingOp):
    """Puts items in buckets by length; a full bucket becomes a padded batch.

    For checkpoints it keeps, for each batch since the consumer's position, its bucket,
    the input numbers in it and the input that completed it: the buckets' contents at
    any output number since follow from those (see ``resume.py``).
    """

    __slots__ = (
        "back",
        "base_c",
        "batches",
        "boundaries",
        "buckets",
        "collate",
        "drop_last",
        "indices",
        "length",
        "made",
        "made_first",
        "sizes",
    )

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
        #: Each batch from output number ``made_first`` on: its input numbers and the
        #: number of the input that completed it.
        self.made: list[tuple[list[int], int]] = []
        self.made_first = 0
        #: Inputs taken at output number ``made_first`` (a resumed op's checkpoint).
        self.base_c = 0
        #: The input numbers of the items a resumed op takes back, ascending.
        self.back: list[int] = []

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
                    self.made.append((indices[b], i - 1))
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
        if not self.drop_last:
            self.made.extend((w, self.seen - 1) for _, w in full)
        out = [] if self.drop_last else self._emit(full)
        if isinstance(self.collate, Collator):
            self.collate.release()
        return out

    def demand(self, downstream: int | None) -> int | None:
        return None

    # -- checkpoints ---------------------------------------------------------------------
    def cut(self, r: int) -> Cut:
        if r == 0:
            return Cut(0)
        k = r - 1 - self.made_first
        c = self.made[k][1] + 1 if k >= 0 else self.base_c  # inputs taken when batch r-1 came out
        held = [p for where in self.indices for p in where if p < c]
        held += [p for where, _ in self.made[r - self.made_first :] for p in where if p < c]
        return Cut(c, {}, tuple(sorted(held)))

    def prune(self, r: int) -> None:
        k = r - 1 - self.made_first
        if k > 0:
            self.base_c = self.made[k - 1][1] + 1
            del self.made[:k]
            self.made_first += k

    def restore(self, entry: dict[str, Any]) -> None:
        super().restore(entry)
        self.batches = self.made_first = int(entry["at"])
        self.base_c = int(entry["resume"])

    def take_back(self, held: list[int]) -> None:
        self.back = sorted(held)

    def put_back(self, rank: int, item: Any) -> None:
        n = self.length(item)
        b = bisect.bisect_right(self.boundaries, n if type(n) is int else _as_length(n))
        self.buckets[b].append(item)
        self.indices[b].append(self.back[rank])


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
    #: Free buffers of one run for the next run of the stream, by field (see
    #: ``_buffers.collate.Spare``); not part of the stage's identity.
    spares: dict[tuple[object, ...], Spare] = attrs.field(factory=dict, eq=False, repr=False)

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
            collate = Collator("batch", self.spares)  # one per run: it owns the buffer pools
        return _BatchOp(label, self.size, self.drop_last, collate)


@attrs.frozen
class Sliding(InlineSpec):
    size: int
    step: int = 1

    def describe(self) -> str:
        return f"sliding({self.size}{f', step={self.step}' if self.step != 1 else ''})"

    def out_length(self, n: int) -> int | None:
        return 0 if n < self.size else (n - self.size) // self.step + 1

    def make(self, label: str) -> Op:
        return _SlidingOp(label, self.size, self.step)


@attrs.frozen
class PadBatch(InlineSpec):
    size: int
    pad_value: complex = 0
    pad_to_multiple: int | None = None
    drop_last: bool = False
    #: Free buffers of one run for the next run of the stream, by field (see
    #: ``_buffers.collate.Spare``); not part of the stage's identity.
    spares: dict[tuple[object, ...], Spare] = attrs.field(factory=dict, eq=False, repr=False)

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
        collate = PadCollator("pad_batch", self.pad_value, self.pad_to_multiple, self.spares)
        return _BatchOp(label, self.size, self.drop_last, collate)


@attrs.frozen
class BucketByLength(InlineSpec):
    boundaries: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    length: Callable[[Any], int] = len
    pad_value: complex = 0
    drop_last: bool = False
    #: Free buffers of one run for the next run of the stream, by field (see
    #: ``_buffers.collate.Spare``); not part of the stage's identity.
    spares: dict[tuple[object, ...], Spare] = attrs.field(factory=dict, eq=False, repr=False)

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
        collate = PadCollator("bucket_by_length", self.pad_value, None, self.spares)
        return _BucketOp(label, self.boundaries, self.batch_sizes, self.length, self.drop_last, collate)
