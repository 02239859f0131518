"""The state one opened pipeline's stages share: labels, counters, checkpoint records."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .resume import Pending, Resumable
from .stats import CounterSource, PipelineStatistics, StageCounters, snapshot


def nothing() -> int:
    """The consumer's count of items when no run feeds it."""
    return 0


class Context:
    """Per-run state shared by the stages of one opened pipeline."""

    __slots__ = (
        "_budget",
        "_counters",
        "_index",
        "base",
        "closed",
        "consumer_wait_s",
        "delivered",
        "entries",
        "hosts",
        "labels",
        "notes",
        "opened",
        "prunes",
        "received",
        "resumables",
        "sources",
    )

    def __init__(
        self, labels: list[str], notes: tuple[str, ...] = (), entries: list[dict[str, Any]] | None = None
    ) -> None:
        self.labels = labels
        self._index = {label: i for i, label in enumerate(labels)}
        #: For checkpoints: what each stage answers (see ``resume.py``); a stage that has
        #: not started yet has given nothing and answers as a one-to-one stage would.
        self.resumables: list[Resumable] = (
            [Resumable() for _ in labels] if entries is None else [Pending(e) for e in entries]
        )
        #: The checkpoint this run resumes from, one entry per stage (None: from the start),
        #: and the items the consumer had then: counts of items received are the epoch's.
        self.entries = entries
        self.base = 0
        #: How many items the consumer has surely received (for pruning checkpoint
        #: ledgers): the handle's own count, or a bridge's to the consumer beyond it.
        self.delivered: Callable[[], int] = nothing
        #: Whether the consumer's handle prunes the checkpoint ledgers as it reads. Not
        #: for a child pipeline (of ``chain``, ``mix``, ...): its reader is the parent
        #: stage, ahead of the parent's consumer; the parent prunes it at that position.
        self.prunes = True
        #: What the plan decided (see ``snake._plan``).
        self.notes = notes
        self._counters = {label: StageCounters() for label in labels}
        #: Where each stage's statistics are read from: its counters, or its inline op.
        self.sources: list[CounterSource] = [self._counters[label] for label in labels]
        #: For each stage, the position of the stage whose task runs it (itself for tasks).
        self.hosts = list(range(len(labels)))
        #: perf_counter() when the pipeline opened, and when its consumer got the end
        #: or left (0.0: not yet).
        self.opened = time.perf_counter()
        self.closed = 0.0
        #: Seconds the consumer waited for chunks, and the items it received.
        self.consumer_wait_s = 0.0
        self.received = 0
        #: What the tuned stages share (``workers="auto"``, ``limit="auto"``): made by
        #: the first of them.
        self._budget: Any = None

    def budget(self, settings: Any) -> Any:
        """The run's :class:`snake._ops.tune.Budget`, made from ``settings`` (a
        ``TuneSettings``, the same for every tuned stage of a run) on first use."""
        if self._budget is None:
            self._budget = settings.budget()
        return self._budget

    def label(self, index: int) -> str:
        return self.labels[index]

    def resumable(self, label: str, stage: Resumable) -> dict[str, Any] | None:
        """Register the checkpoint side of the stage ``label``; its checkpoint entry to
        resume from, if this run resumes."""
        i = self._index[label]
        self.resumables[i] = stage
        return self.entries[i] if self.entries is not None else None

    def counters(self, label: str) -> StageCounters:
        return self._counters[label]

    def count_source(self, n: int) -> None:
        c = self._counters[self.labels[0]]
        c.items_in += n
        c.items_out += n

    def statistics(self) -> PipelineStatistics:
        now = time.perf_counter()
        counters = [self._counters[lb] for lb in self.labels]
        stages = tuple(
            snapshot(lb, src, counters[host], None if host == i else host, now)
            for i, (lb, src, host) in enumerate(zip(self.labels, self.sources, self.hosts))
        )
        return PipelineStatistics(
            stages,
            elapsed_s=(self.closed or now) - self.opened,
            consumer_wait_s=self.consumer_wait_s,
            items_received=self.received,
            plan=self.notes,
        )
