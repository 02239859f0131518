"""Inline stages: cheap per-item work fused into the task of the stage before them.

Every operator works on a whole chunk at once (``list(map(fn, chunk))``), so the
per-item cost is that of the user's function plus a few tens of nanoseconds.
When a user function raises, the item's index is recovered from how far the
chunk's iterator got, at no cost on the fast path.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from .._errors import ErrorBudget, ErrorPolicy
from .._util import add_note, describe_callable
from .base import Chunk, InlineSpec, Op


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
        if len(chunk) >= r:
            self.done = True
            chunk = chunk[:r]
        self.remaining = r - len(chunk)
        self.seen += len(chunk)
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
    __slots__ = ("size", "drop_last", "buf")

    def __init__(self, label: str, size: int, drop_last: bool) -> None:
        super().__init__(label)
        self.weight = size
        self.size = size
        self.drop_last = drop_last
        self.buf: Chunk = []

    def __call__(self, chunk: Chunk) -> Chunk:
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
        return out

    def flush(self) -> Chunk:
        buf, self.buf = self.buf, []
        if buf and not self.drop_last:
            return [buf]
        return []

    def demand(self, downstream: int | None) -> int | None:
        if downstream is None:
            return None
        return max(0, downstream * self.size - len(self.buf))


@attrs.frozen
class Map(InlineSpec):
    fn: Callable[[Any], Any]
    errors: ErrorPolicy = _RAISE

    def describe(self) -> str:
        return f"map({describe_callable(self.fn)}){self.errors.describe()}"

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

    def make(self, label: str) -> Op:
        return _EnumerateOp(label)


@attrs.frozen
class Take(InlineSpec):
    n: int

    def describe(self) -> str:
        return f"take({self.n})"

    def make(self, label: str) -> Op:
        return _TakeOp(label, self.n)


@attrs.frozen
class Skip(InlineSpec):
    n: int

    def describe(self) -> str:
        return f"skip({self.n})"

    def make(self, label: str) -> Op:
        return _SkipOp(label, self.n)


@attrs.frozen
class Batch(InlineSpec):
    size: int
    drop_last: bool = False

    def describe(self) -> str:
        extra = ", drop_last=True" if self.drop_last else ""
        return f"batch({self.size}{extra})"

    def make(self, label: str) -> Op:
        return _BatchOp(label, self.size, self.drop_last)


