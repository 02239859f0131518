"""The three kinds of stage spec, and the fused chain of inline operators."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._chan import Inbox
    from .._run import Context

Chunk = list[Any]


class Spec(abc.ABC):
    """A frozen description of one stage; ``describe()`` is its part of the repr."""

    __slots__ = ()

    @abc.abstractmethod
    def describe(self) -> str: ...


class SourceSpec(Spec):
    """The first stage of a stream: produces chunks of items."""

    __slots__ = ()

    @abc.abstractmethod
    async def run(self, ctx: Context, fused: Fused, send: Any) -> None:
        """Produce items through ``fused`` into the ``send`` channel, then close it."""


class InlineSpec(Spec):
    """A cheap per-item stage, fused into the task of the stage before it."""

    __slots__ = ()

    @abc.abstractmethod
    def make(self, label: str) -> Op:
        """A fresh, stateful operator for one run of the pipeline."""


class TaskSpec(Spec):
    """A stage that runs as its own task(s), between two channels."""

    __slots__ = ()

    @abc.abstractmethod
    async def run(self, ctx: Context, label: str, inbox: Inbox, fused: Fused, send: Any) -> None:
        """Consume ``inbox``, produce through ``fused`` into ``send``, then close it."""


class Op(abc.ABC):
    """One inline operator, applied to whole chunks. Stateful; one per run."""

    __slots__ = ("label", "done", "seen")

    def __init__(self, label: str) -> None:
        self.label = label
        #: True once the operator needs no more input (take() satisfied).
        self.done = False
        #: Items this operator has consumed so far (for error notes).
        self.seen = 0

    @abc.abstractmethod
    def __call__(self, chunk: Chunk) -> Chunk: ...

    def flush(self) -> Chunk:
        """Items held back until the end of the input (a partial batch)."""
        return []

    def demand(self, downstream: int | None) -> int | None:
        """Inputs needed to satisfy ``downstream`` outputs (None: no limit known)."""
        return downstream


class Fused:
    """Adjacent inline operators run as one function over each chunk."""

    __slots__ = ("ops",)

    def __init__(self, ops: list[Op]) -> None:
        self.ops = ops

    def __call__(self, chunk: Chunk) -> Chunk:
        for op in self.ops:
            if not chunk:
                return chunk
            chunk = op(chunk)
        return chunk

    @property
    def done(self) -> bool:
        for op in self.ops:
            if op.done:
                return True
        return False

    def demand(self) -> int | None:
        """How many more input items could still matter (None: unbounded)."""
        d: int | None = None
        for op in reversed(self.ops):
            d = op.demand(d)
        return d

    def flush(self) -> Chunk:
        """Flush every operator in order at the end of the input."""
        chunk: Chunk = []
        for op in self.ops:
            if chunk:
                chunk = op(chunk)
            if not op.done:
                chunk = chunk + op.flush()
        return chunk
