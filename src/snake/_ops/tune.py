"""Concurrency that tunes itself: ``par_map(workers="auto")`` and ``par_then(limit="auto")``.

A tuned stage starts runner tasks up to a ceiling but lets only ``active`` of them
take work (``_Core.set_active``). A :class:`Tuner` task beside the runners reads the
stage's counters every period and moves ``active``:

- it grows while the stage is the limit: its active slots were busy running calls
  for most of the period (not waiting on the stage before it, for room after it or
  for the reorder window) and its output buffer is less than half full (else the
  stage after it is slower);
- every change is a trial: the next full period's items/s is compared with the
  period's before it, and a growth that did not raise items/s by ``GAIN`` (or a
  shrink that lowered it by ``LOSS``) is undone; that size is not tried again for a
  while (a hold that doubles at each failed trial);
- ``workers``: a stage whose workers sit idle (the consumer, or the main process, is
  the limit) gives one back, as a trial, so that its core goes to the rest of the
  pipeline; the workers of every tuned stage of a pipeline share a CPU budget (the
  cores it may use), less the workers of its fixed ``par_map`` stages;
- ``memory_budget``: each tuned stage gets an equal share, and keeps the bytes of the
  results it holds (in calls and in its output buffer, measured on a sample of
  results) under it, shrinking when over.

Every decision is kept as a sentence; :attr:`StageStatistics.tuning` and the report
give the choice and the last decisions.
"""

from __future__ import annotations

import collections
import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import attrs
import trio

from .._engine.chan import CHANNEL_CHUNKS
from .._engine.spec import Spec

if TYPE_CHECKING:
    from .._engine.chan import Outbox
    from .._engine.stats import StageCounters

AUTO = "auto"
#: A growth is kept if it raises items/s by at least this share...
GAIN = 0.05
#: ... and a shrink if it lowers items/s by at most this share.
LOSS = 0.03
#: Slots busy for at least this share of a period: the stage is the limit.
BUSY = 0.85
#: Workers busy for less than this share: one can go.
IDLE = 0.5
#: The ceiling of ``limit="auto"`` (tasks are cheap; memory_budget bounds them further).
MAX_LIMIT = 1024
#: Where ``limit="auto"`` starts.
START_LIMIT = 16

_log = logging.getLogger("snake")


class Budget:
    """The resources the tuned stages of one run share: ``cpus`` worker slots (less
    the workers of fixed stages) and ``memory`` bytes of held results (None: no bound)."""

    __slots__ = ("cpus", "fixed", "maps", "memory", "stages", "taken")

    def __init__(self, cpus: int, memory: int | None) -> None:
        self.cpus = cpus
        self.memory = memory
        #: Workers of fixed par_map stages, and of tuned ones (taken), counted as they start.
        self.fixed = 0
        self.taken = 0
        #: Tuned stages of the run (for the memory shares), and tuned par_map stages among
        #: them (for the CPU shares): the plan's counts.
        self.stages = 0
        self.maps = 0

    def free(self) -> int:
        return self.cpus - self.fixed - self.taken

    def take(self, n: int) -> int:
        """Up to ``n`` worker slots, fewer if the budget is short, but at least one (a
        tuned stage always runs)."""
        got = max(1, min(n, self.free()))
        self.taken += got
        return got

    def give(self, n: int) -> None:
        self.taken -= n

    def memory_share(self) -> int | None:
        if self.memory is None:
            return None
        return self.memory // max(1, self.stages)


def nbytes_of(x: Any) -> int:
    """About how many bytes a result holds: an array's data, a bytes-like's length, a
    container's items one level down; ``sys.getsizeof`` for anything else."""
    if isinstance(x, (tuple, list)):
        return sum(_shallow(v) for v in x)
    if isinstance(x, dict):
        return sum(_shallow(v) for v in x.values())
    return _shallow(x)


def _shallow(x: Any) -> int:
    n = getattr(x, "nbytes", None)
    if isinstance(n, int):
        return n
    if isinstance(x, (bytes, bytearray, str)):
        return len(x)
    return sys.getsizeof(x)


class Tuner:
    """Moves a parallel stage's active slots while it runs (see the module's docstring).

    ``set_active(n)`` applies a size; ``outbox`` is the stage's output buffer. ``kind``
    is ``"workers"`` (par_map: grows by one, within ``budget``'s CPUs) or ``"limit"``
    (par_then: grows by doubling, up to ``high``).
    """

    def __init__(
        self,
        *,
        kind: Literal["workers", "limit"],
        label: str,
        counters: StageCounters,
        outbox: Outbox,
        set_active: Callable[[int], None],
        start: int,
        high: int,
        budget: Budget,
        period_s: Callable[[], float],
        cap_outbox: Callable[[int], None],
        window_per_slot: int,
        weight: int = 1,
        unit_items: Callable[[], int] = lambda: 1,
    ) -> None:
        self.kind = kind
        #: The stage, for the log ("stage #2 par_map(...)").
        self.label = label
        self.window_per_slot = window_per_slot
        #: Results one item of the output buffer stands for (a fused batch(n): n).
        self.weight = weight
        #: Bounds the stage's output buffer, in results (a memory share's doing).
        self._cap = cap_outbox
        self.counters = counters
        self.outbox = outbox
        self._apply = set_active
        self.high = high
        self.budget = budget
        self.period_s = period_s
        self.unit_items = unit_items
        self.active = start
        self.started_at = start
        #: A size that a trial found no better, not tried again before ``hold_until``.
        self.ceiling: int | None = None
        self.floor = 1
        self.hold_until = 0.0
        self.hold_s = 0.5
        #: (size before, items/s before, periods to wait before judging) of a trial.
        self.trial: tuple[int, float, int] | None = None
        #: The last decisions, as sentences, and how many there were in all.
        self.events: collections.deque[str] = collections.deque(maxlen=4)
        self.changes = 0
        self.sizes_tried = {start}
        #: Mean bytes of a result, from a sample (None: none seen yet).
        self.result_bytes: float | None = None
        self._samples = 0
        #: The memory share is less than the output buffer alone may hold (noted once).
        self.short = False
        self._t = 0.0
        self._out = 0
        self._idle = 0.0
        self._t0 = 0.0

    # -- what the stage calls -----------------------------------------------------------
    def sample(self, results: list[Any]) -> None:
        """Called with each finished unit's results: keeps a mean size from every 8th."""
        self._samples += 1
        if results and (self._samples & 7) == 1:
            b = float(nbytes_of(results[0]))
            first = self.result_bytes is None
            self.result_bytes = b if self.result_bytes is None else 0.8 * self.result_bytes + 0.2 * b
            if first:
                self.clamp_outbox()

    async def run(self) -> None:
        now = time.perf_counter()
        self._t0 = now
        self._mark(now)
        while True:
            await trio.sleep(self.period_s())
            self.step(time.perf_counter())

    def describe(self) -> str:
        """What the tuner chose and why, for the statistics and the report."""
        what = "workers" if self.kind == "workers" else "limit"
        head = f"{what}=auto: {self.active}"
        if self.kind == "workers":
            head += f" of a {self.budget.cpus}-CPU budget"
            if self.budget.fixed:
                head += f" ({self.budget.fixed} taken by fixed stages)"
        else:
            head += f" (at most {self.high})"
        head += f", started at {self.started_at}"
        if self.budget.memory is not None:
            share = self.budget.memory_share()
            held = self.held_bytes(self.active)
            if held is not None:
                head += f"; may hold up to {_mb(held)} of its {_mb(share or 0)} memory share"
        if self.trial is not None:
            head += f"; trying {self.active} (from {self.trial[0]})"
        if not self.events:
            return head + ("; no change was needed" if self.trial is None else "")
        more = f"{self.changes - len(self.events)} earlier changes; " if self.changes > len(self.events) else ""
        return f"{head}; {more}{'; '.join(self.events)}"

    def detach(self) -> None:
        """The stage has ended: drop the callbacks into it. The tuner stays readable
        (statistics), and holds nothing of the stage's items."""
        self._apply = self._cap = _ignore
        self.unit_items = lambda: 1

    # -- the decisions --------------------------------------------------------------------
    def _mark(self, now: float) -> None:
        c = self.counters
        self._t = now
        self._out = c.items_out
        self._idle = c.idle_slot_s + c.parked * now - c.parked_since

    def held_bytes(self, size: int) -> float | None:
        """Bytes the stage may hold at most with ``size`` slots (docs/concurrency.md, How
        many items a pipeline can hold): ``K + 2`` chunks of up to ``P − 1`` buffered
        results plus the results of the reorder window and of the runners' units."""
        if self.result_bytes is None:
            return None
        return self._chunks_of(self.outbox.cap * self.weight + self._units(size))

    def _chunks_of(self, results: float) -> float:
        """Bytes of ``K + 2`` chunks of ``results`` results each (the bound's unit)."""
        assert self.result_bytes is not None
        return self.result_bytes * (CHANNEL_CHUNKS + 2) * results

    def _units(self, size: int) -> int:
        return (self.window_per_slot + 1) * size * self.unit_items()

    def _fits_memory(self, size: int) -> bool:
        share = self.budget.memory_share()
        held = self.held_bytes(size)
        return share is None or held is None or held <= share

    def _note(self, sentence: str) -> None:
        self.events.append(sentence)
        self.changes += 1

    def _at(self, now: float) -> str:
        return f"at {now - self._t0:.2f} s"

    def step(self, now: float) -> None:
        c = self.counters
        dt = now - self._t
        if dt <= 0:
            return
        rate = (c.items_out - self._out) / dt
        idle = c.idle_slot_s + c.parked * now - c.parked_since
        util = max(0.0, min(1.0, 1.0 - (idle - self._idle) / (dt * max(1, self.active))))
        self._mark(now)
        if self.trial is not None:
            before, before_rate, wait = self.trial
            if wait > 0:  # the first period after a change is a transition: not judged
                self.trial = (before, before_rate, wait - 1)
                return
            self.trial = None
            self._judge(before, before_rate, rate, now)
            return
        share = self.budget.memory_share()
        if share is not None and not self._fits_memory(self.active) and self._over_share(share, now):
            return
        ahead = len(self.outbox) * 2 >= self.outbox.cap  # results pile up: the next stage is slower
        if util >= BUSY and rate > 0 and not ahead:
            bigger = self._bigger()
            if bigger is None:
                return
            if self.ceiling is not None and bigger >= self.ceiling and now < self.hold_until:
                return
            if not self._fits_memory(bigger):
                return
            if self.kind == "workers" and self.budget.free() < bigger - self.active:
                return
            self.trial = (self.active, rate, 1)
            self._set(bigger, now)
            self.sizes_tried.add(bigger)
        elif self.kind == "workers" and util < IDLE and self.active > self.floor and rate > 0:
            if now < self.hold_until:
                return
            smaller = self._smaller()
            self.trial = (self.active, rate, 1)
            self._set(smaller, now)

    def _over_share(self, share: int, now: float) -> bool:
        """The bound is over the memory share: shrink to the largest size that fits (the
        least, 1, if none does), unless the output buffer alone, at its least, is over
        the share. Then no size fits and a smaller one would only cost items/s: the
        stage keeps its size and says so, once. True if it shrank."""
        least = self._chunks_of(self.weight)  # a buffer of one, no calls
        if least > share:
            if not self.short:
                self.short = True
                sentence = (
                    f"its memory share ({_mb(share)}) is less than its output buffer alone may hold "
                    f"({_mb(least)}), whatever its size: kept at {self.active}"
                )
                self._note(f"{self._at(now)} {sentence}")
                _log.warning("snake: stage %s: %s; raise memory_budget", self.label, sentence)
            return False
        if self.active <= 1:
            return False
        smaller = self._smaller()
        while smaller > 1 and not self._fits_memory(smaller):
            smaller = self._smaller(smaller)
        self._note(f"{self._at(now)} {self.active}→{smaller}: over its memory share")
        self._set(smaller, now)
        return True

    def _smaller(self, size: int | None = None) -> int:
        size = self.active if size is None else size
        return max(1, size // 2 if self.kind == "limit" else size - 1)

    def _bigger(self) -> int | None:
        if self.active >= self.high:
            return None
        if self.kind == "limit":
            return min(self.high, self.active * 2)
        return self.active + 1

    def _judge(self, before: int, before_rate: float, rate: float, now: float) -> None:
        tried = self.active
        change = rate / before_rate - 1 if before_rate > 0 else 0.0
        pct = f"{100 * change:+.0f} % items/s"
        if tried > before:
            if change >= GAIN:
                self._note(f"{self._at(now)} {before}→{tried}: {pct}, kept")
                self.ceiling = None
                return
            self._undo(before, now)
            self.ceiling = tried
            self._note(f"{self._at(now)} {before}→{tried}: {pct}, back to {before}")
        else:
            if change >= -LOSS:
                self._note(f"{self._at(now)} {before}→{tried} (workers idle): {pct}, kept")
                return
            self._undo(before, now)
            self.floor = before
            self._note(f"{self._at(now)} {before}→{tried} (workers idle): {pct}, back to {before}")
        self.hold_until = now + self.hold_s
        self.hold_s = min(8.0, self.hold_s * 2)

    def _undo(self, before: int, now: float) -> None:
        self._set(before, now)

    def _set(self, size: int, now: float) -> None:
        if self.kind == "workers":  # the budget counts the workers of tuned stages
            self.budget.taken += size - self.active
        self.active = size
        self._apply(size)
        self.clamp_outbox()
        self._mark(now)

    def clamp_outbox(self) -> None:
        """Under a memory share, hold no more finished results than the share leaves
        beside the calls in flight (at least one chunk of one)."""
        share = self.budget.memory_share()
        if share is None or not self.result_bytes:
            return
        room = max(1, int(share / self._chunks_of(1)) - self._units(self.active))
        self._cap(room)


@attrs.frozen
class TuneSettings:
    """What a tuned stage knows from the plan: the pipeline's budget (``cpus`` None: the
    CPUs this process may run on), the workers of its fixed ``par_map`` stages, and how
    many stages are tuned."""

    cpus: int | None = None
    memory: int | None = None
    fixed_workers: int = 0
    stages: int = 1
    maps: int = 1

    def budget(self) -> Budget:
        from .._workers.pool import default_workers

        b = Budget(self.cpus if self.cpus is not None else default_workers(), self.memory)
        b.fixed = self.fixed_workers
        b.stages = self.stages
        b.maps = self.maps
        return b


@attrs.frozen
class Autotune(Spec):
    """``.autotune(cpus=..., memory_budget=...)`` as written: the plan hands it to the
    tuned stages of the pipeline; it never runs itself."""

    cpus: int | None = None
    memory_budget: int | None = None

    def describe(self) -> str:
        args = []
        if self.cpus is not None:
            args.append(f"cpus={self.cpus}")
        if self.memory_budget is not None:
            args.append(f"memory_budget={self.memory_budget}")
        return f"autotune({', '.join(args)})"

    def out_length(self, n: int) -> int | None:
        return n


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} kB"


def _ignore(n: int) -> None:
    pass
