"""Exact checkpoints: ``items.state_dict()`` and ``open(state_dict=...)``.

A pipeline's stages run ahead of its consumer: chunks sit in buffers and channels,
items run in workers, a ``batch()`` holds a partial batch, a ``shuffle()`` holds its
buffer. A checkpoint describes the position right after the last item the consumer
received, so it is computed backwards from the consumer, one stage at a time. Each
stage answers :meth:`Resumable.cut`: *to give again my outputs from number* ``r`` *on,
I must be restarted at my input number* ``u`` *with this state*. The answer for the
last stage is the upstream cut of the one before it, and so on to the source, which
resumes at its own position (by seeking where it can).

Most stages answer without remembering anything: a ``map`` gives output ``r`` for
input ``r``, a ``batch(n)`` output ``r`` from inputs ``r*n`` on, a ``shard()`` output
``r`` from input ``rank + r*world_size``. Stages whose answer depends on the items
(a ``filter``, a ``flat_map``, an unordered ``par_map``) keep a small *ledger* of the
outputs that the consumer has not received yet, pruned as it receives them.

A stage that buffers items (``shuffle``, ``bucket_by_length``) also names the inputs
it holds at the cut, by position: the state never holds items, so it is small and
plain (a ``dict`` of ints, strings and lists that ``json`` and ``torch.save`` keep as
they are). On resume those items are made again, one of two ways:

- *refill*: when every stage between the source and the buffering stage can pass an
  item through on its own (``map``, ``par_map``, ``then``, ``par_then``, ``prefetch``,
  ``filter``, ``take``, ``skip``, ``shard``, ``enumerate``, ...), the source produces
  just those items first, and each stage's function runs once more on each of them;
- *select*: otherwise the stages before the buffering stage resume at the oldest
  buffered item and run forward to the cut, and the buffering stage keeps the items it
  held and drops the rest. That reruns the functions before it on the items between,
  which the consumer had received already.

A state from one pipeline given to another is refused with a ``ValueError`` naming
the first stage that differs.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

#: Written into every state; a state of another format is refused.
FORMAT = "snake.state/1"


@attrs.frozen
class Cut:
    """Where a stage resumes to give its outputs from number ``r`` on."""

    #: The number of the first input it needs then (its upstream's output number).
    upstream: int
    #: What else it needs to resume exactly (plain values only).
    state: dict[str, Any] = attrs.field(factory=dict)
    #: Inputs, by number, that it held at the cut (a buffer's contents), in the order
    #: of their slots; all below ``upstream``.
    held: tuple[int, ...] = ()


class Resumable:
    """What a stage (an inline operator, a task stage, a source) does for checkpoints.

    The defaults suit a stage that gives one output for each input, in order, and
    keeps no state: a ``map``, an ordered ``par_map``.
    """

    __slots__ = ()

    #: Whether the stage can pass on an item made again for a buffering stage after it,
    #: on its own (see the module docstring); if not, that stage selects instead.
    passes_refill: bool = True
    #: True for a stage whose outputs come in another order than its inputs.
    unordered: bool = False
    #: True for a stage that, resumed, runs its function again over inputs before the
    #: checkpoint and drops outputs by count (a ``pipe``): exact only if those inputs
    #: come again in the same order.
    replays: bool = False

    def cut(self, r: int) -> Cut:
        """How to resume to give outputs ``r``, ``r + 1``, ... again."""
        return Cut(r)

    def locate(self, positions: list[int]) -> list[int]:
        """The input numbers that gave the outputs numbered ``positions``, one for one,
        for a stage that ``passes_refill``."""
        return positions

    def refill_state(self, outs: list[int], ins: list[int]) -> Any:
        """How the checkpoint of a stage before a buffering one names its outputs
        ``outs`` (from its inputs ``ins``) that come again first (see the module
        docstring): most only need how many; a source needs which (a Parquet source: by
        piece and row); a stage whose outputs are not numbered as its inputs, which of
        its outputs came from which input (a later checkpoint may need them again)."""
        return len(outs)

    def prune(self, r: int) -> None:
        """The consumer has what this stage gave before output ``r``: forget it."""

    def restore(self, entry: dict[str, Any]) -> None:
        """Take up the state :meth:`cut` described (``entry["resume"]`` is its input
        number, ``entry`` also holds ``Cut.state`` and refill directions)."""


class Pending(Resumable):
    """A stage of a resumed run that has not started yet: it is where its checkpoint
    entry says."""

    __slots__ = ("entry",)

    _OWN = ("stage", "at", "resume", "held", "mode", "refill")

    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry

    def cut(self, r: int) -> Cut:
        entry = self.entry
        if r != int(entry["at"]):
            raise AssertionError(f"snake: {entry['stage']} has not started, yet its output {r} is asked for")
        state = {k: v for k, v in entry.items() if k not in self._OWN}
        return Cut(int(entry["resume"]), state, tuple(map(int, entry.get("held", ()))))

    def refill_state(self, outs: list[int], ins: list[int]) -> Any:
        refill = self.entry.get("refill")
        return refill if refill is not None else outs  # as the checkpoint named them


class Numbered(Resumable):
    """A source that gives the items again by their numbers (an iterable's)."""

    __slots__ = ()

    def refill_state(self, outs: list[int], ins: list[int]) -> Any:
        return outs


def refill_pairs(outs: list[int], ins: list[int]) -> list[list[int]]:
    """``refill_state`` of a stage whose outputs are not numbered as its inputs."""
    return [[o, i] for o, i in zip(outs, ins, strict=True)]


def refill_map(entry: dict[str, Any]) -> dict[int, int]:
    """Output number -> input number of the items that came again first through the
    stage of ``entry`` (see :func:`refill_pairs`)."""
    refill = entry.get("refill")
    if not isinstance(refill, list):
        return {}
    return {int(x[0]): int(x[1]) if isinstance(x, list) else int(x) for x in refill}


# -- ledgers -------------------------------------------------------------------------------


class Drops:
    """Input numbers a stage dropped (a ``filter``, ``on_error("skip")``), to map an
    output number back to its input number."""

    __slots__ = ("dropped", "forgotten")

    def __init__(self) -> None:
        #: Ascending input numbers of dropped items, since the last prune.
        self.dropped: list[int] = []
        #: Dropped items forgotten by prunes (they all came before what is kept).
        self.forgotten = 0

    def add(self, index: int) -> None:
        if self.dropped and index < self.dropped[-1]:
            bisect.insort(self.dropped, index)  # parallel stages drop out of order
        else:
            self.dropped.append(index)

    def extend(self, indices: Iterable[int]) -> None:
        self.dropped.extend(indices)

    def input_of(self, r: int) -> int:
        """The input number of output ``r`` (the next input, if ``r`` is not out yet)."""
        u = r + self.forgotten
        for d in self.dropped:
            if d <= u:
                u += 1
            else:
                break
        return u

    def dropped_before(self, u: int) -> int:
        return self.forgotten + bisect.bisect_left(self.dropped, u)

    def prune(self, u: int) -> None:
        k = bisect.bisect_left(self.dropped, u)
        if k:
            self.forgotten += k
            del self.dropped[:k]


def _start(span: list[int]) -> int:
    return span[0]


class Ranges:
    """A set of ints kept as sorted, disjoint ``[start, end)`` ranges."""

    __slots__ = ("spans",)

    def __init__(self, spans: Iterable[Sequence[int]] = ()) -> None:
        self.spans: list[list[int]] = [[int(a), int(b)] for a, b in spans]

    def add(self, start: int, end: int) -> None:
        if start >= end:
            return
        spans = self.spans
        i = bisect.bisect_left(spans, start, key=_start)
        if i and spans[i - 1][1] >= start:
            i -= 1
        j = i
        while j < len(spans) and spans[j][0] <= end:
            start = min(start, spans[j][0])
            end = max(end, spans[j][1])
            j += 1
        spans[i:j] = [[start, end]]

    def __contains__(self, x: int) -> bool:
        i = bisect.bisect_right(self.spans, x, key=_start) - 1
        return i >= 0 and x < self.spans[i][1]

    def first_gap(self, at: int) -> int:
        """The smallest number >= ``at`` not in the set."""
        for a, b in self.spans:
            if a <= at < b:
                return b
        return at

    def next_start(self, at: int) -> int | None:
        """The smallest number > ``at`` where a range starts, if any."""
        i = bisect.bisect_right(self.spans, at, key=_start)
        return self.spans[i][0] if i < len(self.spans) else None

    def above(self, at: int) -> list[list[int]]:
        """The ranges from ``at`` on, as plain lists."""
        return [[max(a, at), b] for a, b in self.spans if b > at]

    def prune(self, below: int) -> None:
        self.spans = [[max(a, below), b] for a, b in self.spans if b > below]


def refill_count(entry: dict[str, Any]) -> int:
    """How many items come again first through the stage of ``entry``."""
    refill = entry.get("refill", 0)
    return len(refill) if isinstance(refill, list) else int(refill)


def check_state(state: object, labels: Sequence[str]) -> list[dict[str, Any]]:
    """The per-stage entries of ``state`` for a pipeline whose stages are ``labels``, or
    a ``ValueError`` saying why it does not fit."""
    if not isinstance(state, dict):
        raise TypeError(f"state_dict={state!r} must be a dict from items.state_dict()")
    fmt = state.get("format")
    if fmt != FORMAT:
        raise ValueError(f"state_dict: format {fmt!r} is not {FORMAT!r}; it was not made by this snake")
    stages = state.get("stages")
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        raise ValueError("state_dict: it has no list of stages")
    for i, label in enumerate(labels):
        if i >= len(stages):
            raise ValueError(f"state_dict: it describes {len(stages)} stage(s); the pipeline has {label} after them")
        if stages[i].get("stage") != label:
            raise ValueError(
                f"state_dict: stage {i} differs: the state is of {stages[i].get('stage')!r}, "
                f"the pipeline has {label!r}"
            )
    if len(stages) > len(labels):
        raise ValueError(
            f"state_dict: it describes {len(stages)} stages; the pipeline has {len(labels)} "
            f"(the first one missing: {stages[len(labels)].get('stage')!r})"
        )
    return stages
