"""Per-stage counters of a running pipeline, and the frozen records users read."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:
    from ._errors import ErrorBudget


class CounterSource(Protocol):
    """Anything that counts a stage's traffic (a task stage's counters, an inline op)."""

    @property
    def items_in(self) -> int: ...

    @property
    def items_out(self) -> int: ...

    @property
    def errors_skipped(self) -> int: ...


class StageCounters:
    """Mutable counters owned by one task stage (or source) of one run."""

    __slots__ = ("budget", "items_in", "items_out", "retries", "timeouts", "workers_lost")

    def __init__(self) -> None:
        self.items_in = 0
        self.items_out = 0
        self.retries = 0
        self.timeouts = 0
        self.workers_lost = 0
        self.budget: ErrorBudget | None = None

    @property
    def errors_skipped(self) -> int:
        return self.budget.skipped if self.budget is not None else 0


@attrs.frozen
class StageStatistics:
    """A snapshot of one stage's counters."""

    #: The stage as it appears in the stream's repr, with its position: ``#2 map(f)``.
    name: str
    #: Items the stage has received from the stage before it (produced, for a source).
    items_in: int
    #: Items the stage has passed on.
    items_out: int
    #: Items dropped under ``on_error("skip")``.
    errors_skipped: int
    #: Items run again after a worker crash or a timeout (``retries=``).
    retries: int
    #: Items that ran past ``timeout=``.
    timeouts: int
    #: Worker processes that died or were killed (crash, timeout) and were replaced.
    workers_lost: int


@attrs.frozen
class PipelineStatistics:
    """A snapshot of every stage of an opened pipeline, in order."""

    #: One record per stage, source first.
    stages: tuple[StageStatistics, ...]

    def stage(self, position: int) -> StageStatistics:
        """The record of the stage at ``position`` (0 is the source)."""
        return self.stages[position]


def snapshot(name: str, source: object) -> StageStatistics:
    def get(field: str) -> int:
        value = getattr(source, field, 0)
        return int(value)

    return StageStatistics(
        name=name,
        items_in=get("items_in"),
        items_out=get("items_out"),
        errors_skipped=get("errors_skipped"),
        retries=get("retries"),
        timeouts=get("timeouts"),
        workers_lost=get("workers_lost"),
    )
