"""Per-stage counters of a running pipeline, and the frozen records users read.

Counters are updated per chunk or per unit of work, never per item: a stage adds
the time it spent blocked (on its input, or on a full output buffer) when it
unblocks, and everything else is derived when ``statistics()`` takes a snapshot.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

import attrs

if TYPE_CHECKING:
    from .chan import Outbox
    from .errors import ErrorBudget


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

    __slots__ = (
        "budget",
        "idle_slot_s",
        "in_flight",
        "items_in",
        "items_out",
        "last_sent",
        "outbox",
        "parked",
        "parked_since",
        "replayed",
        "retries",
        "send_chan",
        "sending",
        "slots",
        "stalls",
        "started",
        "stopped",
        "timeouts",
        "tuner",
        "wait_down_s",
        "wait_up_s",
        "watch",
        "workers_lost",
    )

    def __init__(self) -> None:
        self.items_in = 0
        self.items_out = 0
        self.retries = 0
        #: Items a source produced again, and did not pass on, to resume from a checkpoint.
        self.replayed = 0
        self.timeouts = 0
        self.workers_lost = 0
        #: Stall warnings logged (``stall_timeout``), and what watches the items in flight.
        self.stalls = 0
        self.watch: Any = None
        #: The Tuner of a ``workers="auto"``/``limit="auto"`` stage (None: fixed).
        self.tuner: Any = None
        self.budget: ErrorBudget | None = None
        #: Items handed to the stage's function and not finished (parallel stages).
        self.in_flight = 0
        #: perf_counter() when the stage's task started and stopped (0.0: not yet).
        self.started = 0.0
        self.stopped = 0.0
        #: Seconds blocked on the input, and on the output (direct sends only; an
        #: Outbox keeps its own).
        self.wait_up_s = 0.0
        self.wait_down_s = 0.0
        #: Concurrency of a parallel stage (0 for a sequential one), and the slot-seconds
        #: its runners spent parked (not running the user's function).
        self.slots = 0
        self.idle_slot_s = 0.0
        self.parked = 0
        self.parked_since = 0.0
        #: The stage's output buffer, if it has one; else its channel and the sizes of
        #: the chunk being sent and of the last chunk sent.
        self.outbox: Outbox | None = None
        self.send_chan: Any = None
        self.sending = 0
        self.last_sent = 0

    @property
    def errors_skipped(self) -> int:
        return self.budget.skipped if self.budget is not None else 0

    def park(self) -> float:
        """A runner stops working (waits for input, room or the reorder window)."""
        t = time.perf_counter()
        self.parked += 1
        self.parked_since += t
        return t

    def unpark(self, t0: float) -> None:
        t = time.perf_counter()
        self.parked -= 1
        self.parked_since -= t0
        self.idle_slot_s += t - t0

    def elapsed(self, now: float) -> float:
        if not self.started:
            return 0.0
        return (self.stopped or now) - self.started

    def wait_down(self, now: float) -> float:
        if self.outbox is not None:
            return self.outbox.blocked(now)
        return self.wait_down_s

    def busy(self, now: float) -> float:
        """Seconds working: for a parallel stage, busy slot-seconds over its slots."""
        elapsed = self.elapsed(now)
        if self.slots:
            # Runners parked now (or when the stage stopped) count up to then.
            idle = self.idle_slot_s + self.parked * (self.stopped or now) - self.parked_since
            return max(0.0, elapsed - idle / self.slots)
        return max(0.0, elapsed - self.wait_up_s - self.wait_down(now))

    def buffered(self) -> int:
        if self.outbox is not None:
            return self.outbox.held()
        n = self.sending
        chan = self.send_chan
        if chan is not None and self.last_sent and chan.statistics().current_buffer_used:
            n += self.last_sent
        return n


@attrs.frozen
class StageStatistics:
    """A frozen snapshot (an ``attrs`` class, compared by value) of one stage's counters.

    One record per stage in :attr:`PipelineStatistics.stages`. The counters a stage
    does not have (``retries`` of a ``map``, say) are 0. Times are measured per chunk or
    per call, never per item: reading them costs nothing, and keeping them costs a few
    ``time.perf_counter()`` calls per chunk.
    """

    #: ``#i`` and the stage's part of the ``repr``, as error notes name it:
    #: ``#2 par_map(fib, workers=2)``, with its ``.on_error(...)`` if set.
    name: str
    #: Items the stage has received: for the source, the items it has read; for
    #: ``then``, ``par_then`` and ``par_map``, the items taken into calls so far, those
    #: in progress included; for ``prefetch``, the items of the chunks it has received;
    #: for ``pipe``, the items of the chunks handed to its function's input iterator;
    #: for an inline stage, the items it has consumed (``take(n)`` counts only the items
    #: it kept, and ``skip(n)`` reports 0).
    items_in: int
    #: Items the stage has produced, before any inline stage fused after it: for the
    #: source, the same as ``items_in``; for ``then``, ``par_then`` and ``par_map``, the
    #: results of finished calls.
    items_out: int
    #: Items dropped under ``on_error("skip")``.
    errors_skipped: int
    #: ``par_map``, process backend: items run again after a lost call (a dead worker or
    #: a timeout): every retry of the item it was running, and the items of the call
    #: before it, which ran again; without shared memory, every item of the lost call.
    retries: int
    #: Calls that ran past their ``timeout``: for ``par_map``, each killed call counts,
    #: retries included; for ``par_then``, each item.
    timeouts: int
    #: ``par_map``, process backend: calls whose worker process died or was killed for a
    #: timeout; each such worker is replaced when needed.
    workers_lost: int
    #: ``then``, ``par_then``, ``par_map``: items taken into calls that have not
    #: finished (0 for other stages); ``items_in == items_out + in_flight +
    #: errors_skipped`` at every snapshot.
    in_flight: int = 0
    #: For a source resumed from a checkpoint that cannot seek (an iterable that is not
    #: a sequence, an async iterable): the items it produced again, from its start to
    #: the checkpoint, without passing them on.
    replayed: int = 0
    #: ``then``, ``par_then``, ``par_map``: stall warnings the stage logged (an item ran
    #: past ``stall_timeout``).
    stalls: int = 0
    #: ``then``, ``par_then``, ``par_map``: seconds the longest-running item in flight
    #: has been running; 0.0 when none runs. Which item a call is on is sampled every
    #: ``min(stall_timeout / 4, 1 s)`` (more often with a ``timeout``); with neither set,
    #: this is how long the longest-running call has run.
    oldest_item_s: float = 0.0
    #: Seconds the stage's task has run (until it stopped); for an inline stage, its
    #: host task's.
    elapsed_s: float = 0.0
    #: Seconds the stage worked: its elapsed time less its waits; for ``then``,
    #: ``par_then`` and ``par_map``, the slot-seconds spent running calls divided by the
    #: slots; for an inline stage, the time spent in it (timed per chunk); for
    #: ``chain``, ``zip``, ``mix`` and ``repeat``, the time their input streams took to
    #: deliver counts as busy (the inputs' stages are not shown).
    busy_s: float = 0.0
    #: Seconds the stage waited for the stage before it to deliver a chunk.
    wait_upstream_s: float = 0.0
    #: Seconds the stage could not go on because its output buffer was full: the stage
    #: after it (or the consumer) was not taking items.
    wait_downstream_s: float = 0.0
    #: Items the stage produced that the next stage has not taken yet: its output
    #: buffer, the chunk being sent and the chunk in the channel.
    buffered: int = 0
    #: ``then``, ``par_then``, ``par_map``: busy slot-seconds / (slots x elapsed), from 0
    #: to 1; None for other stages.
    utilization: float | None = None
    #: The ``limit`` or ``workers`` of a concurrent stage; 1 otherwise.
    slots: int = 1
    #: For an inline stage (``map``, ``filter``, ``batch``, ...): the position of the
    #: stage whose task runs it; None for a stage with its own task.
    fused_into: int | None = None
    #: ``pack()``: the share of the token slots of the rows it made that are padding,
    #: from 0 to 1 (0.0 before its first row); None for other stages.
    padding: float | None = None
    #: ``par_map(workers="auto")``, ``par_then(limit="auto")``: what the stage chose and
    #: why, in a sentence: the size now, where it started, the budget, and its last
    #: changes with the items/s they gave (``limit=auto: 64 (at most 1024), started at
    #: 16; at 0.31 s 16→32: +48 % items/s, kept; ...``). None for other stages.
    tuning: str | None = None


@attrs.frozen
class PipelineStatistics:
    """A frozen snapshot (an ``attrs`` class) of every stage of a run, returned by
    :meth:`Items.statistics` and :meth:`SyncItems.statistics`.
    """

    #: One :class:`StageStatistics` per stage, in the order of the chain, the source
    #: first, inline stages included.
    stages: tuple[StageStatistics, ...]
    #: Seconds since the pipeline was opened, until the consumer received the end (or
    #: left the block).
    elapsed_s: float = 0.0
    #: Seconds the consumer waited for items: in ``async for``/``receive()``, or in
    #: ``next()`` for ``open_sync()``.
    consumer_wait_s: float = 0.0
    #: Items the consumer has received (for ``open_sync()``, the items handed to your
    #: thread's buffer).
    items_received: int = 0
    #: What snake decided about running this pipeline when it was opened, one sentence
    #: each: a stage done by another (``shard()`` by the Parquet source), a fast path
    #: taken or not taken and why (process ``par_map`` workers writing into
    #: ``batch()``'s buffers).
    plan: tuple[str, ...] = ()

    def stage(self, position: int) -> StageStatistics:
        """``stages[position]``: position 0 is the source, as in the ``#i`` of error notes."""
        return self.stages[position]


def _int(source: object, field: str) -> int:
    return int(getattr(source, field, 0))


def snapshot(
    name: str, source: object, host: StageCounters, host_index: int | None, now: float
) -> StageStatistics:
    """One stage's record. ``host`` holds the timing of the task the stage runs in, at
    position ``host_index`` (None: the stage is that task)."""
    common: dict[str, Any] = {
        "name": name,
        "items_in": _int(source, "items_in"),
        "items_out": _int(source, "items_out"),
        "errors_skipped": _int(source, "errors_skipped"),
        "retries": _int(source, "retries"),
        "timeouts": _int(source, "timeouts"),
        "workers_lost": _int(source, "workers_lost"),
        "stalls": _int(source, "stalls"),
        "replayed": _int(source, "replayed"),
    }
    if isinstance(source, StageCounters):
        c = source
        elapsed = c.elapsed(now)
        busy = c.busy(now)
        return StageStatistics(
            **common,
            in_flight=c.in_flight,
            oldest_item_s=c.watch.longest() if c.watch is not None and c.in_flight else 0.0,
            elapsed_s=elapsed,
            busy_s=busy,
            wait_upstream_s=c.wait_up_s,
            wait_downstream_s=c.wait_down(now),
            buffered=c.buffered(),
            utilization=(min(1.0, busy / elapsed) if elapsed > 0 else 0.0) if c.slots else None,
            slots=max(1, c.slots),
            tuning=c.tuner.describe() if c.tuner is not None else None,
        )
    return StageStatistics(
        **common,
        elapsed_s=host.elapsed(now),
        busy_s=float(getattr(source, "busy_s", 0.0)),
        fused_into=host_index,
        padding=getattr(source, "padding", None),
    )
