"""The three kinds of stage spec, and the fused chain of inline operators."""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .resume import Resumable, refill_count
from .util import CHUNK_CAP

if TYPE_CHECKING:
    from .chan import Inbox
    from .context import Context
    from .errors import ErrorBudget

Chunk = list[Any]


class Spec(abc.ABC):
    """A frozen description of one stage; ``describe()`` is its part of the repr."""

    __slots__ = ()

    @abc.abstractmethod
    def describe(self) -> str: ...

    def out_length(self, n: int) -> int | None:
        """How many items come out of this stage for ``n`` in, when that is known before
        it runs (None: it depends on the items, as for ``filter`` or ``batch``)."""
        return None


class SourceSpec(Spec):
    """The first stage of a stream: produces chunks of items."""

    __slots__ = ()

    def length(self) -> int | None:
        """How many items this source produces, when that is known before it runs."""
        return None

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


class Op(Resumable, abc.ABC):
    """One inline operator, applied to whole chunks. Stateful; one per run.

    For checkpoints (see ``resume.py``) an operator is a :class:`Resumable`: the
    defaults suit one that gives one output per input and keeps nothing, like
    ``map``. ``seen`` is the number of its inputs, which a resumed operator takes up
    from its checkpoint, so that error notes keep naming items by their number in
    the epoch.
    """

    __slots__ = (
        "budget",
        "busy_s",
        "done",
        "emitted",
        "label",
        "refill_left",
        "refilled",
        "run_base",
        "seen",
        "selecting",
        "weight",
    )

    def __init__(self, label: str) -> None:
        self.label = label
        #: True once the operator needs no more input (take() satisfied).
        self.done = False
        #: Items this operator has consumed so far (for error notes).
        self.seen = 0
        #: Items it has passed on (counted by :class:`Fused`).
        self.emitted = 0
        #: Input items one output item stands for (``size`` for ``batch``).
        self.weight = 1
        #: The ``on_error`` accounting, for operators that call user functions.
        self.budget: ErrorBudget | None = None
        #: Seconds spent in this operator (timed per chunk by :class:`Fused`).
        self.busy_s = 0.0
        #: Items still to come that a buffering stage after it holds again on resume
        #: (see ``resume.py``): passed on before the rest, not counted.
        self.refill_left = 0
        #: True while a resumed buffering operator picks its held items out of its input.
        self.selecting = False
        #: Items passed on again for a buffering stage after it (counted in statistics).
        self.refilled = 0
        #: ``(seen, emitted)`` where a resumed run started: statistics count from there.
        self.run_base = (0, 0)

    @property
    def items_in(self) -> int:
        """Inputs of this run (``seen`` and ``emitted`` are positions in the epoch)."""
        return self.seen - self.run_base[0] + self.refilled

    @property
    def items_out(self) -> int:
        return self.emitted - self.run_base[1] + self.refilled

    @property
    def errors_skipped(self) -> int:
        return self.budget.skipped if self.budget is not None else 0

    @abc.abstractmethod
    def __call__(self, chunk: Chunk) -> Chunk: ...

    def flush(self) -> Chunk:
        """Items held back until the end of the input (a partial batch)."""
        return []

    def demand(self, downstream: int | None) -> int | None:
        """Inputs needed to satisfy ``downstream`` outputs (None: no limit known)."""
        return downstream

    def restore(self, entry: dict[str, Any]) -> None:
        self.seen = int(entry["resume"])
        self.refill_left = refill_count(entry)
        if self.budget is not None:
            self.budget.skipped = int(entry.get("skipped", 0))

    def refill(self, items: Chunk) -> Chunk:
        """``items``, which come again for a buffering stage after this one, as this
        operator passes them (a ``map`` applies its function; most pass them as they are)."""
        return items

    def split_refill(self, chunk: Chunk) -> tuple[Chunk, Chunk]:
        """``(refill items passed on, the rest of chunk)`` while refill items are due."""
        k = min(self.refill_left, len(chunk))
        self.refill_left -= k
        self.refilled += k
        return self.refill(chunk[:k]), chunk[k:]


class HoldingOp(Op):
    """An operator that holds items across chunks (``shuffle``, ``bucket_by_length``):
    its checkpoint names the inputs it holds, and a resumed one takes them back first,
    made again by the stages before it (``refill``) or picked out of their outputs as
    they run again from the oldest one (``select``); see ``resume.py``."""

    __slots__ = ("keep", "keep_until", "taken")

    passes_refill = False

    def __init__(self, label: str) -> None:
        super().__init__(label)
        #: In "select" mode: input number -> its rank among the held ones (ascending),
        #: until input number ``keep_until`` (the checkpoint's own).
        self.keep: dict[int, int] = {}
        self.keep_until = 0
        #: Held items taken back so far in "refill" mode.
        self.taken = 0

    def restore(self, entry: dict[str, Any]) -> None:
        super().restore(entry)
        held = list(entry.get("held", ()))  # ints from the checkpoint (see take_back)
        if not held:
            return
        self.take_back(held)
        if entry.get("mode") == "select":
            self.keep = {p: q for q, p in enumerate(sorted(held))}
            self.keep_until = self.seen
            self.seen = min(held)
            self.selecting = True
        else:
            self.refill_left = len(held)

    @property
    def items_out(self) -> int:
        return self.emitted - self.run_base[1]  # the items it took back are not passed on

    def take_back(self, held: list[int]) -> None:
        """Make room for the items held at the checkpoint (numbers ``held``, in the order
        the checkpoint gave them)."""

    def put_back(self, rank: int, item: Any) -> None:
        """Put back the held item whose number is the ``rank``-th smallest."""

    def put_back_many(self, rank: int, items: Chunk) -> None:
        """Put back ``items``, the held items whose numbers are the ``rank``-th smallest
        and the ones after it."""
        for k, x in enumerate(items, rank):
            self.put_back(k, x)

    def refill(self, items: Chunk) -> Chunk:
        self.put_back_many(self.taken, items)
        self.taken += len(items)
        return []

    def select(self, chunk: Chunk) -> Chunk:
        """In "select" mode: take the held items back out of ``chunk``; the rest of it."""
        n = self.seen
        k = min(len(chunk), self.keep_until - n)
        keep = self.keep
        for i in range(k):
            rank = keep.get(n + i)
            if rank is not None:
                self.put_back(rank, chunk[i])
        self.seen = n + k
        if self.seen >= self.keep_until:
            self.keep = {}
            self.selecting = False
        return chunk[k:]


class Fused:
    """Adjacent inline operators run as one function over each chunk."""

    __slots__ = ("ops",)

    def __init__(self, ops: list[Op]) -> None:
        self.ops = ops

    def __call__(self, chunk: Chunk) -> Chunk:
        if not self.ops:
            return chunk
        perf = time.perf_counter
        t = perf()
        for op in self.ops:
            if not chunk:
                return chunk
            if op.refill_left or op.selecting:
                chunk = _resuming(op, chunk)
            else:
                chunk = op(chunk)
                op.emitted += len(chunk)
            t1 = perf()
            op.busy_s += t1 - t
            t = t1
        return chunk

    def weight(self) -> int:
        """Input items one output item stands for (a batch of 64 counts as 64)."""
        weight = 1
        for op in self.ops:
            weight *= op.weight
        return weight

    def outbox_cap(self) -> int:
        """How many output items an :class:`Outbox` after these operators may hold:
        ``CHUNK_CAP`` input items' worth."""
        return max(1, CHUNK_CAP // self.weight())

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
                if op.refill_left or op.selecting:
                    chunk = _resuming(op, chunk)
                else:
                    chunk = op(chunk)
                    op.emitted += len(chunk)
            if not op.done:
                tail = op.flush()
                op.emitted += len(tail)
                chunk = chunk + tail
        return chunk


def _resuming(op: Op, chunk: Chunk) -> Chunk:
    """``op(chunk)`` for an operator of a resumed run that is still taking back the
    items it held (see ``resume.py``): those are passed on first, and not counted."""
    if op.refill_left:
        head, rest = op.split_refill(chunk)
    else:
        assert isinstance(op, HoldingOp)
        head, rest = [], op.select(chunk)
    rest = op(rest) if rest else rest
    op.emitted += len(rest)
    return head + rest


def known_length(specs: Sequence[Spec]) -> int | None:
    """How many items the stages ``specs`` (as planned: see ``_plan``) produce, if that
    is known before they run; else None.

    Sized sources (a ``range``, a list, Parquet files, ...) know their count, and
    one-to-one stages (map, par_map, shuffle, monitor, progress, ...) keep it;
    ``filter``, ``flat_map``, ``batch`` and ``on_error("skip")`` make it unknown.
    Sizing Parquet files reads their footers, and may raise what reading them raises.
    """
    source = specs[0]
    assert isinstance(source, SourceSpec)
    n = source.length()
    for spec in specs[1:]:
        if n is None:
            return None
        n = spec.out_length(n)
    return n


def chain_repr(specs: Sequence[Spec]) -> str:
    """The ``repr`` of a stream made of ``specs``: the calls that build it, chained."""
    return ".".join(text for text in (spec.describe() for spec in specs) if text)

