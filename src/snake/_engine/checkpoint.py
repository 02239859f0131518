"""Checkpoints of a running pipeline: ``items.state_dict()`` and pruning.

The walk from the consumer back to the source that :mod:`.resume` describes, over the
stages of one run (its :class:`~.context.Context`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .context import Context
from .resume import FORMAT, Cut, Pending, Resumable, refill_map

# -- the walk ------------------------------------------------------------------------------


def _walk(ctx: Context, received: int, *, keep_held: bool = False) -> list[tuple[int, Cut, str]]:
    """For each stage, first to last: the output number it resumes at, its cut, and how
    a buffering stage's held items come again ("refill", "select" or ""). With
    ``keep_held`` (for pruning) the stages before a buffering stage keep what they need
    to make its oldest held item again, whatever the mode."""
    stages = ctx.resumables
    entries = ctx.entries
    out: list[tuple[int, Cut, str]] = []
    r = received
    for i in range(len(stages) - 1, -1, -1):
        said = None
        if entries is not None and r == int(entries[i]["at"]):
            # Where the run resumed from: the checkpoint says it (the stage may still be
            # taking back what it held, its own records not yet up to it), and how its
            # held items come again (the stages before it may not have started yet).
            cut = Pending(entries[i]).cut(r)
            said = entries[i].get("mode")
        else:
            cut = stages[i].cut(r)
        mode = ""
        nxt = cut.upstream
        if cut.held:
            mode = said or ("refill" if all(stages[k].passes_refill for k in range(i)) else "select")
            if mode == "select" or keep_held:
                nxt = min(nxt, min(cut.held))
        out.append((r, cut, mode))
        r = nxt
    out.reverse()
    return out


def _refills(ctx: Context, walk: list[tuple[int, Cut, str]]) -> dict[int, Any]:
    """For a stage that refills: the items to make again, named to every stage before
    it (stage index -> its ``refill_state`` of the ascending numbers of its outputs
    that come again first, before it goes on from its cut)."""
    stages = ctx.resumables
    wanted: dict[int, Any] = {}
    for i, (_, cut, mode) in enumerate(walk):
        if mode != "refill":
            continue
        positions = sorted(cut.held)
        for k in range(i - 1, -1, -1):
            stage = stages[k]
            if k and ctx.entries is not None and any(p < int(ctx.entries[k]["at"]) for p in positions):
                stage = _Resumed(stage, ctx.entries[k])  # some came again at its resume
            ins = stage.locate(positions) if k else positions
            wanted[k] = stage.refill_state(positions, ins)
            positions = sorted(ins)
    return wanted


class _Resumed(Resumable):
    """A resumed stage asked where items before its checkpoint came from: those that
    came again at its resume, as its checkpoint named them; the rest, its own records."""

    __slots__ = ("again", "at", "stage")

    def __init__(self, stage: Resumable, entry: dict[str, Any]) -> None:
        self.stage = stage
        self.at = int(entry["at"])
        #: Those its checkpoint named; the others kept their numbers through it.
        self.again = refill_map(entry)

    def locate(self, positions: list[int]) -> list[int]:
        at, again = self.at, self.again
        rest = [p for p in positions if p >= at]
        found = dict(zip(rest, self.stage.locate(rest), strict=True)) if rest else {}
        return [found[p] if p >= at else again.get(p, p) for p in positions]

    def refill_state(self, outs: list[int], ins: list[int]) -> Any:
        return self.stage.refill_state(outs, ins)


def state_dict(ctx: Context, received: int) -> dict[str, Any]:
    """The state of the pipeline of ``ctx`` right after the consumer's item ``received - 1``."""
    walk = _walk(ctx, received)
    for i, (_, _, mode) in enumerate(walk):
        if mode == "select" and any(ctx.resumables[k].unordered for k in range(i)):
            raise ValueError(
                f"state_dict(): {ctx.labels[i]} holds items that would have to be made again "
                "in their order, and a stage before it gives its items in another order "
                "(ordered=False); put that stage after it, or make it ordered"
            )
        if ctx.resumables[i].replays and any(ctx.resumables[k].unordered for k in range(i)):
            raise ValueError(
                f"state_dict(): {ctx.labels[i]} would run again over its input and drop the outputs "
                "already given, which needs that input in the same order, and a stage before it gives "
                "its items in another order (ordered=False); put that stage after it, or make it ordered"
            )
    refills = _refills(ctx, walk)
    stages = []
    for i, (r, cut, mode) in enumerate(walk):
        entry: dict[str, Any] = {"stage": ctx.labels[i], "at": r, "resume": cut.upstream, **cut.state}
        if cut.held:
            entry["held"] = list(cut.held)
            entry["mode"] = mode
        if i in refills:
            entry["refill"] = refills[i]
        stages.append(entry)
    return {"format": FORMAT, "received": received, "stages": stages}


def prune(ctx: Context, received: int) -> None:
    """Let every stage forget what it kept for checkpoints before the consumer's
    position ``received`` (or the oldest item a buffering stage still holds)."""
    entries = ctx.entries
    for i, ((r, _, _), stage) in enumerate(zip(_walk(ctx, received, keep_held=True), ctx.resumables, strict=True)):
        if entries is None or r != int(entries[i]["at"]):
            stage.prune(r)


def start_state(labels: Sequence[str]) -> dict[str, Any]:
    """The state of a pipeline that has not given anything yet."""
    stages = [{"stage": label, "at": 0, "resume": 0} for label in labels]
    return {"format": FORMAT, "received": 0, "stages": stages}


