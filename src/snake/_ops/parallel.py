"""Parallel stages: ``par_then`` (concurrent trio tasks) and ``par_map`` (workers).

Both run on one core: ``slots`` runner tasks take *units* of work from the
stage's input (one item for ``par_then``, an adaptively sized chunk of items for
``par_map``), run them, and hand the results to the stage's :class:`Outbox`.

Ordered stages emit units in input order. A runner may only start unit ``u``
while ``u - first_unemitted_unit < window``, so a slow item stalls admission of
new work and never grows memory: the reorder window is bounded by the stage's
concurrency.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

import attrs
import trio

from .._engine import tasks
from .._engine.chan import Chunk, Inbox, Outbox
from .._engine.errors import ErrorBudget, ErrorPolicy, WorkerCrashedError
from .._engine.resume import Cut, Drops, Ranges, Resumable, refill_count, refill_map, refill_pairs
from .._engine.spec import Fused, TaskSpec
from .._engine.stats import StageCounters
from .._engine.util import CHUNK_CAP, add_note, describe_callable, spawn
from .._workers.backend import Backend as WorkerBackend
from .._workers.backend import Failure, Lost, Running
from .._workers.pool import WorkerPool, WorkerType, resolve_worker_type
from .tune import AUTO, MAX_LIMIT, START_LIMIT, Budget, Tuner, TuneSettings

if TYPE_CHECKING:
    from .._engine.context import Context

Backend = Literal["process", "thread", "ray"]

#: Work per call a process worker is given, once per-item time is known. A call
#: leaves its worker idle for a round trip (0.1-0.5 ms with every core busy), so
#: calls carry ~20 ms; the end of a stream is still split evenly over the workers.
_PROCESS_CALL_S = 0.020
#: Work per call a worker thread is given (a thread dispatch costs ~73 us here).
_THREAD_CALL_S = 0.002


class _Waiters:
    """A parking lot that knows whether anyone waits: waking an empty lot costs ~2 us."""

    __slots__ = ("count", "lot")

    def __init__(self) -> None:
        self.lot = trio.lowlevel.ParkingLot()
        self.count = 0

    async def park(self, counters: StageCounters) -> None:
        """Wait for :meth:`wake`; the time counts as the stage's runners parked."""
        self.count += 1
        t0 = counters.park()
        try:
            await self.lot.park()
        finally:
            self.count -= 1
            counters.unpark(t0)

    def wake(self) -> None:
        if self.count:
            self.lot.unpark_all()


class _ParResume(Resumable):
    """The checkpoint side of a ``then``/``par_then``/``par_map`` stage run.

    An ordered stage gives output ``r`` for its input ``r``, less the items it dropped
    under ``on_error("skip")``, which it keeps. An unordered one keeps, for each unit
    whose results went out since the consumer's position, where its outputs start and
    which inputs it held: at a checkpoint, the inputs whose outputs the consumer has are
    *done*, and a resumed stage starts at the first one that is not, skipping the done
    ones after it.
    """

    __slots__ = ("done", "drops", "events", "outs", "skip", "unordered")

    def __init__(self, ordered: bool, skip: bool) -> None:
        self.unordered = not ordered
        self.skip = skip
        #: Inputs dropped under on_error("skip").
        self.drops = Drops()
        #: Unordered: (first output number, first input number, inputs) of each unit since
        #: the consumer's position, in the order their results went out.
        self.events: list[tuple[int, int, int]] = []
        self.outs = 0
        #: Unordered: inputs whose outputs went out before the events kept.
        self.done = Ranges()

    def completed(self, start: int, n: int, outputs: int) -> None:
        if self.unordered:
            self.events.append((self.outs, start, n))
            self.outs += outputs

    def _kept(self, start: int, n: int) -> list[int]:
        drops = set(self.drops.dropped)
        return [i for i in range(start, start + n) if i not in drops]

    def _done_at(self, r: int) -> Ranges:
        done = Ranges(self.done.spans)
        for out, start, n in self.events:
            if out >= r:
                break
            kept = self._kept(start, n)
            if out + len(kept) <= r:
                done.add(start, start + n)
            else:
                last = kept[r - out - 1] if r > out else start - 1
                for i in range(start, last + 1):
                    done.add(i, i + 1)
        return done

    def cut(self, r: int) -> Cut:
        if not self.unordered:
            u = self.drops.input_of(r)
            return Cut(u, {"skipped": self.drops.dropped_before(u)} if self.skip else {})
        done = self._done_at(r)
        u = done.first_gap(0)
        state: dict[str, Any] = {"done": done.above(u)}
        if self.skip:
            state["skipped"] = self.drops.forgotten + sum(1 for d in self.drops.dropped if d in done)
        return Cut(u, state)

    def locate(self, positions: list[int]) -> list[int]:
        if not self.unordered:
            return [self.drops.input_of(p) for p in positions]
        out: list[int] = []
        events = self.events
        for p in positions:
            k = bisect.bisect_right(events, p, key=_first) - 1
            first, start, n = events[k]
            out.append(self._kept(start, n)[p - first])
        return out

    def refill_state(self, outs: list[int], ins: list[int]) -> Any:
        return len(outs) if outs == ins else refill_pairs(outs, ins)

    def prune(self, r: int) -> None:
        if not self.unordered:
            self.drops.prune(self.drops.input_of(r))
            return
        events = self.events
        k = 0
        while k < len(events):
            out, start, n = events[k]
            if out + len(self._kept(start, n)) > r:
                break
            self.done.add(start, start + n)
            k += 1
        del events[:k]

    def restore(self, entry: dict[str, Any]) -> None:
        u = int(entry["resume"])
        self.done = Ranges([[0, u], *entry.get("done", ())])
        self.outs = int(entry["at"])  # outputs are numbered in the epoch
        self.drops.forgotten = int(entry.get("skipped", 0))
        if not self.unordered:
            self.drops.forgotten = u - int(entry["at"])


def _first(event: tuple[int, int, int]) -> int:
    return event[0]


def _first_of(pair: tuple[int, Any]) -> int:
    return pair[0]


def _arrival_ranks(entry: dict[str, Any], n: int) -> list[int]:
    """For the k-th item to come again (they come by ascending input number): the rank of
    the output number it had, among theirs."""
    mapping = refill_map(entry)  # output number -> input number
    if not mapping:
        return list(range(n))  # the same numbers: the same order
    by_input = sorted(mapping.items(), key=lambda oi: oi[1])
    out_rank = {o: k for k, o in enumerate(sorted(mapping))}
    return [out_rank[o] for o, _ in by_input]


class _Core:
    """Runner tasks, input slicing, the reorder window and the emission of results."""

    __slots__ = (
        "active",
        "base",
        "call",
        "chunk",
        "counters",
        "emit_unit",
        "eof",
        "fetching",
        "fused",
        "gate",
        "held_back",
        "inbox",
        "input_wait",
        "next_unit",
        "ordered",
        "outbox",
        "pending",
        "pos",
        "refill_inputs",
        "refill_left",
        "refill_rank",
        "refill_results",
        "refill_total",
        "res",
        "res_first",
        "resuming",
        "runners",
        "skip_done",
        "slots",
        "spawned",
        "stop",
        "tuner",
        "unit_size",
        "window",
        "window_per_slot",
        "window_wait",
    )

    def __init__(
        self,
        *,
        inbox: Inbox,
        fused: Fused,
        outbox: Outbox,
        ordered: bool,
        slots: int,
        window: int,
        call: Callable[[Chunk, int], Awaitable[Chunk]],
        unit_size: Callable[[], int],
        counters: StageCounters,
        res: _ParResume,
        entry: dict[str, Any] | None = None,
    ) -> None:
        self.counters = counters
        #: Checkpoints: the ledgers, and where a resumed run starts.
        self.res = res
        counters.slots = slots
        counters.outbox = outbox
        self.inbox = inbox
        self.fused = fused
        self.outbox = outbox
        self.ordered = ordered
        #: Runner tasks, and how many of them may take work (fewer under a Tuner).
        self.slots = slots
        self.active = slots
        self.gate = trio.lowlevel.ParkingLot()
        self.tuner: Tuner | None = None
        #: The runners' nursery while the stage runs, and how many runners it has: a
        #: tuned stage starts them as it grows (tasks are cheap, not free).
        self.runners: trio.Nursery | None = None
        self.spawned = 0
        self.window = window
        self.window_per_slot = max(1, window // max(1, slots))
        self.call = call
        self.unit_size = unit_size
        self.chunk: Chunk = []
        self.pos = 0
        self.base = 0
        #: Resumed: inputs that come again for a buffering stage after this one (before
        #: the others, numbered just below the checkpoint's input), and the inputs whose
        #: outputs the consumer had (unordered: skipped).
        self.refill_left = 0
        self.skip_done: Ranges | None = None
        self.res_first = int(entry["resume"]) if entry is not None else 0
        #: Unordered, resumed: the results of the items that come again for a buffering
        #: stage after this one (ranked by the output numbers they had), the others that
        #: finished meanwhile, and how the k-th of them to come ranks.
        self.refill_results: list[tuple[int, Any]] | None = None
        self.held_back: Chunk = []
        self.refill_total = 0
        self.refill_inputs = 0
        self.refill_rank: list[int] = []
        if entry is not None:
            res.restore(entry)
            self.refill_left = self.refill_total = refill_count(entry)
            if self.refill_left and not ordered:
                self.refill_results = []
                self.refill_rank = _arrival_ranks(entry, self.refill_left)
            self.base = int(entry["resume"]) - self.refill_left
            if entry.get("done"):
                self.skip_done = Ranges(entry["done"])
        #: Whether a resumed run still has inputs to refill or to pass over (the fast
        #: path of _take skips both checks otherwise).
        self.resuming = bool(self.refill_left) or self.skip_done is not None
        self.eof = False
        self.fetching = False
        self.next_unit = 0
        self.emit_unit = 0
        self.pending: dict[int, Chunk] = {}
        #: Runners waiting for the input chunk another runner is fetching.
        self.input_wait = _Waiters()
        #: Runners waiting for the ordered window to move.
        self.window_wait = _Waiters()
        self.stop = trio.CancelScope()

    async def _take(self, index: int = 0) -> tuple[int, int, Chunk] | None | Literal[False]:
        """The next unit for runner ``index``: None at the end of the input, False if the
        tuner has held the runner back meanwhile (it goes back to the gate)."""
        while True:
            if index >= self.active and not self.eof:
                return False
            if self.ordered and self.next_unit - self.emit_unit >= self.window:
                await self.window_wait.park(self.counters)
                continue
            left = len(self.chunk) - self.pos
            if left:
                k = self.unit_size()
                if k > 1:
                    # Spread what is there over the runners rather than give it all to one.
                    k = min(k, max(1, math.ceil(left / self.active)))
                if self.resuming:
                    if self.skip_done is not None and self._skip_done():
                        continue
                    k = self._resumed_unit(k)
                start = self.pos
                end = min(start + k, len(self.chunk))
                self.pos = end
                unit = self.next_unit
                self.next_unit = unit + 1
                self.counters.items_in += end - start
                return unit, self.base + start, self.chunk[start:end]
            if self.eof:
                return None
            if self.fetching:
                await self.input_wait.park(self.counters)
                continue
            self.fetching = True
            t0 = self.counters.park()
            try:
                chunk = await self.inbox.receive()
            finally:
                self.fetching = False
                self.counters.unpark(t0)
                self.counters.wait_up_s += time.perf_counter() - t0
                self.input_wait.wake()
            if chunk is None:
                self.eof = True
            else:
                self.base += len(self.chunk)
                self.chunk = chunk
                self.pos = 0

    def _resumed_unit(self, k: int) -> int:
        """The size of the next unit of a resumed run, at most ``k``."""
        if self.refill_left:  # a unit holds refill items only, or none
            k = min(k, self.refill_left)
            self.refill_left -= k
        elif self.skip_done is not None:
            nxt = self.skip_done.next_start(self.base + self.pos)
            if nxt is not None:
                k = min(k, nxt - self.base - self.pos)
        self.resuming = bool(self.refill_left) or self.skip_done is not None
        return k

    def _skip_done(self) -> bool:
        """Resumed, unordered: pass over inputs the consumer had the outputs of. True if
        it did (the caller looks again)."""
        done = self.skip_done
        assert done is not None
        at = self.base + self.pos
        if at not in done:
            return False
        end = done.first_gap(at)
        n = min(end - at, len(self.chunk) - self.pos)
        self.pos += n
        self.counters.items_in += n
        return True

    def _complete(self, unit: int, results: Chunk, start: int, n: int) -> None:
        self.counters.items_out += len(results)
        if self.refill_results is not None and not self.ordered:
            if start < self.res_first:
                # Resumed: the items a buffering stage after this one holds come again
                # first, and in the order of the numbers they had as outputs (by which
                # it takes them back): wait for all of them.
                first = self.res_first - self.refill_total
                self.refill_results += [(self.refill_rank[start - first + i], x) for i, x in enumerate(results)]
                self.refill_inputs += n  # counted by inputs: a refill may fail this time
                if self.refill_inputs < self.refill_total:
                    return
                self.refill_results.sort(key=_first_of)
                results = [x for _, x in self.refill_results] + self.held_back
                self.refill_results, self.held_back = None, []
            else:
                self.held_back += results
                return
            self.outbox.put(self.fused(results))
            if self.fused.done:
                self.stop.cancel()
            return
        if self.ordered:
            if unit != self.emit_unit:
                self.pending[unit] = results
                return
            unit += 1
            pending = self.pending
            while unit in pending:
                more = pending.pop(unit)
                results = results + more if results else more
                unit += 1
            self.emit_unit = unit
            self.window_wait.wake()
        self.outbox.put(self.fused(results))
        if self.fused.done:
            self.stop.cancel()

    def set_active(self, n: int) -> None:
        """Let ``n`` runners take work (a Tuner's choice): the reorder window and the
        counters follow; runners above ``n`` stop after their current unit."""
        self.active = n
        self.counters.slots = n
        self.window = self.window_per_slot * n
        self.gate.unpark_all()
        self.window_wait.wake()
        if self.runners is not None:
            self._spawn_runners()

    def tune(
        self,
        kind: Literal["workers", "limit"],
        *,
        label: str,
        start: int,
        budget: Budget,
        resize: Callable[[int], None],
        cap_outbox: Callable[[int], None],
        weight: int,
        least_period: float,
        unit_items: Callable[[], int] = lambda: 1,
    ) -> None:
        """Run under a Tuner (``workers="auto"``, ``limit="auto"``): ``start`` runners
        take work at first, at most ``slots``. ``resize`` applies a size (it calls
        :meth:`set_active`), ``cap_outbox`` bounds the output buffer for a memory share."""
        self.set_active(start)
        counters = self.counters
        self.tuner = counters.tuner = Tuner(
            kind=kind,
            label=label,
            counters=counters,
            outbox=self.outbox,
            set_active=resize,
            start=start,
            high=self.slots,
            budget=budget,
            period_s=lambda: _period(counters, least_period),
            cap_outbox=cap_outbox,
            window_per_slot=self.window_per_slot,
            weight=weight,
            unit_items=unit_items,
        )

    def _spawn_runners(self) -> None:
        # Past the end of the input (or once the runners' nursery has closed, which the
        # stage notices only after it), a new runner would have nothing to do.
        while self.runners is not None and not self.eof and self.spawned < min(self.active, self.slots):
            try:
                spawn(self.runners, self.runner, self.spawned)
            except RuntimeError:  # the nursery is closed to new arrivals
                self.runners = None
                return
            self.spawned += 1

    async def runner(self, index: int = 0) -> None:
        outbox = self.outbox
        counters = self.counters
        res_first = self.res_first
        completed = self.res.completed if self.res.unordered else None  # a no-op if ordered
        while True:
            while index >= self.active and not self.eof:  # held back by the tuner (not parked)
                await self.gate.park()
            if len(outbox) >= outbox.cap:
                t0 = counters.park()
                try:
                    await outbox.wait_room()
                finally:
                    counters.unpark(t0)
            work = await self._take(index)
            if work is False:
                continue  # held back by the tuner while it waited
            if work is None:
                # Done: the slot counts as idle until the stage stops. Runners held back
                # by a tuner see the end too.
                self.gate.unpark_all()
                if index < self.active:
                    counters.park()
                return
            unit, start, items = work
            n = len(items)
            counters.in_flight += n
            try:
                results = await self.call(items, start)
            finally:
                counters.in_flight -= n
            if completed is not None and start >= res_first:  # not a refill unit (numbered below)
                completed(start, n, len(results))
            if self.tuner is not None:
                self.tuner.sample(results)
            self._complete(unit, results, start, n)

    async def run(
        self,
        extra_tasks: tuple[Callable[[], Awaitable[Any]], ...] = (),
        watch: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        """Run the stage: the runners and ``extra_tasks`` until the input ends, with
        ``watch`` (a loop) beside them, stopped before the end of the output is sent."""
        try:
            async with trio.open_nursery() as nursery:
                spawn(nursery, self.outbox.run, nursery.cancel_scope)
                with self.stop:
                    async with trio.open_nursery() as side:
                        if watch is not None:
                            spawn(side, watch)
                        if self.tuner is not None:
                            spawn(side, self.tuner.run)
                        try:
                            async with trio.open_nursery() as runners:
                                for task in extra_tasks:
                                    spawn(runners, task)
                                self.runners = runners
                                self._spawn_runners()
                        finally:
                            self.runners = None  # closed: a tuner's growth starts no runner now
                        side.cancel_scope.cancel()
                self.outbox.put(self.fused.flush())
                self.outbox.close()
        finally:
            if self.tuner is not None:  # its callbacks refer to this object: no cycle
                self.tuner.detach()
                self.tuner = None
            # Items no one will take (a cancelled or failed run) go now: what refers to
            # this object may be a cycle that only the garbage collector would free.
            self.pending.clear()
            self.chunk = []
            self.outbox.discard()


_RAISE = ErrorPolicy()


@attrs.frozen
class ParThen(TaskSpec):
    """``then(afn)`` (limit=1) and ``par_then(afn, limit=N, ordered=..., timeout=...)``."""

    afn: Callable[[Any], Awaitable[Any]]
    limit: int | Literal["auto"] = 1
    ordered: bool = True
    name: str = "par_then"
    timeout: float | None = None
    errors: ErrorPolicy = _RAISE
    stall_timeout: float | None = 60.0
    #: ``limit="auto"``: the pipeline's budget, set by the plan.
    tune: TuneSettings | None = None

    def describe(self) -> str:
        args = [describe_callable(self.afn)]
        if self.name == "par_then":
            args.append(f"limit={self.limit!r}")
            if not self.ordered:
                args.append("ordered=False")
        if self.timeout is not None:
            args.append(f"timeout={self.timeout!r}")
        if self.stall_timeout != 60.0:
            args.append(f"stall_timeout={self.stall_timeout!r}")
        return f"{self.name}({', '.join(args)}){self.errors.describe()}"

    def out_length(self, n: int) -> int | None:
        return n if self.errors.mode == "raise" else None

    async def run(
        self, ctx: Context, label: str, inbox: Inbox, fused: Fused, send: trio.MemorySendChannel[Chunk]
    ) -> None:
        counters = ctx.counters(label)
        budget = counters.budget = ErrorBudget(self.errors, label)
        watch = _TaskWatch(label, counters, self.stall_timeout) if self.stall_timeout is not None else None
        counters.watch = watch
        res = _ParResume(self.ordered, self.errors.mode == "skip")
        entry = ctx.resumable(label, res)
        if entry is not None:
            budget.skipped = int(entry.get("skipped", 0))
        call = self._caller(label, counters, budget, res, watch.running if watch is not None else None)
        auto = self.limit == AUTO
        slots = MAX_LIMIT if auto else int(self.limit)
        start = START_LIMIT if auto else slots

        most = [fused.outbox_cap()]  # lowered by a tuner under a memory budget

        def outbox_cap(limit: int) -> int:
            # IO results (downloads, decoded files) can be large: at most 256 (or 4 per
            # task) wait here; fewer costs channel hops (64: half the items/s of trivial tasks).
            return min(most[0], max(1, max(256, 4 * limit) // fused.weight()))

        outbox = Outbox(send, cap=outbox_cap(start))
        core = _Core(
            inbox=inbox,
            fused=fused,
            outbox=outbox,
            ordered=self.ordered,
            slots=slots,
            window=slots,
            call=call,
            unit_size=lambda: 1,
            counters=counters,
            res=res,
            entry=entry,
        )
        if auto:

            def resize(n: int) -> None:
                core.set_active(n)
                outbox.cap = outbox_cap(n)

            def cap_outbox(cap: int) -> None:
                most[0] = max(1, min(fused.outbox_cap(), cap // fused.weight()))
                outbox.cap = outbox_cap(core.active)

            core.tune(
                "limit",
                label=label,
                start=start,
                budget=ctx.budget(self.tune or TuneSettings()),
                resize=resize,
                cap_outbox=cap_outbox,
                weight=fused.weight(),
                least_period=0.05,
            )
        await core.run(watch=watch.run if watch is not None else None)


    def _caller(
        self,
        label: str,
        counters: StageCounters,
        budget: ErrorBudget,
        res: _ParResume,
        running: dict[int, trio.lowlevel.Task] | None,
    ) -> Callable[[Chunk, int], Awaitable[Chunk]]:
        """A runner's call of ``afn`` on a unit of one item: its deadline, its note on
        failure, the error policy, and the stall watch's record of what runs."""
        afn = self.afn
        timeout = self.timeout
        current_task = trio.lowlevel.current_task

        async def call(items: Chunk, start: int) -> Chunk:
            if running is not None:
                running[start] = current_task()
            try:
                if timeout is None:
                    return [await afn(items[0])]
                with trio.move_on_after(timeout) as scope:
                    result = await afn(items[0])
                if scope.cancelled_caught:
                    counters.timeouts += 1
                    raise TimeoutError(f"stage {label}: item index {start} took longer than timeout={timeout}s")
                return [result]
            except Exception as exc:
                add_note(exc, label, start)
                if budget.absorb(exc, start, counters.items_in):
                    res.drops.add(start)
                    return []
                raise
            finally:
                if running is not None:
                    del running[start]

        return call


def _period(counters: StageCounters, least: float) -> float:
    """How often a Tuner looks: ``least`` seconds, or longer while calls are slow (four
    mean calls per period, from the busy slot-seconds per item so far), at most 1 s."""
    done = counters.items_out
    if not done:
        return least
    now = time.perf_counter()
    busy = counters.busy(now) * max(1, counters.slots)
    return min(1.0, max(least, 4 * busy / done))


class _Pacer:
    """Sizes units of work so that each call carries about ``target_s`` of work, and
    bounds how far the stage runs ahead of its consumer: two units per worker."""

    __slots__ = ("max_cap", "outbox", "per_item", "target_s", "weight", "workers")

    def __init__(self, target_s: float) -> None:
        self.target_s = target_s
        self.per_item: float | None = None
        self.outbox: Outbox | None = None
        self.max_cap = CHUNK_CAP
        self.workers = 1
        self.weight = 1

    def attach(self, outbox: Outbox, fused: Fused, workers: int) -> None:
        self.outbox = outbox
        self.max_cap = fused.outbox_cap()
        self.weight = fused.weight()
        self.workers = workers
        self._bound()

    def _bound(self) -> None:
        # Results are costly (CPU time, and often large arrays): keep only what the
        # workers need to stay busy, not CHUNK_CAP of them.
        if self.outbox is not None:
            ahead = 2 * self.workers * self.size() // self.weight
            self.outbox.cap = max(1, min(self.max_cap, ahead))

    def size(self) -> int:
        if self.per_item is None:
            return 1
        return max(1, min(CHUNK_CAP, round(self.target_s / max(self.per_item, 1e-9))))

    def record(self, n: int, elapsed: float) -> None:
        sample = elapsed / n
        self.per_item = sample if self.per_item is None else 0.5 * (self.per_item + sample)
        self._bound()


_stall_log = logging.getLogger("snake")


class _Watch:
    """The units in flight of one ``par_map`` run, watched for deadlines and stalls.

    Every ``period`` seconds it asks the backend which item each unit is on. An item
    that has run ``timeout`` seconds gets its unit cancelled (its worker is killed);
    one that has run ``stall_timeout`` seconds gets a warning on the ``snake`` logger
    with the stacks of every busy worker, repeated every ``stall_timeout`` seconds
    while the stage stays stuck.
    """

    def __init__(
        self,
        backend: WorkerBackend,
        label: str,
        counters: StageCounters,
        timeout: float | None,
        stall_timeout: float | None,
    ) -> None:
        self.backend = backend
        self.label = label
        self.counters = counters
        self.timeout = timeout
        self.stall_timeout = stall_timeout
        self.units: set[Running] = set()
        self.warned_at = -math.inf
        #: trio's clock minus time.monotonic() (for readers outside the run).
        self.clock_offset = trio.current_time() - time.monotonic()
        limits = [t for t in (timeout, stall_timeout) if t is not None]
        self.period = max(0.002, min(min(limits) / 4, 0.05 if timeout is not None else 1.0)) if limits else 0.0

    @property
    def needed(self) -> bool:
        return self.period > 0

    def _observe(self, running: Running, now: float) -> None:
        last = running.index
        self.backend.progress(running)
        if running.index != last:
            running.item_started(now)

    async def run(self) -> None:
        while True:
            await trio.sleep(self.period)
            now = trio.current_time()
            for running in list(self.units):
                self._observe(running, now)
            if self.stall_timeout is not None and self.units:
                oldest = min(self.units, key=lambda r: r.since)
                if now - oldest.since >= self.stall_timeout and now - self.warned_at >= self.stall_timeout:
                    self.warned_at = now
                    await self._warn(oldest, now)

    async def _warn(self, oldest: Running, now: float) -> None:
        self.counters.stalls += 1
        busy = sorted(self.units, key=lambda r: r.since)
        stacks = [f"item index {r.index} (running {now - r.since:.1f} s), {await self.backend.stack(r)}" for r in busy]
        _warn_stall(self.label, oldest.index, now - oldest.since, self.stall_timeout, f"{self.backend.kind} workers", stacks)

    def longest(self) -> float:
        """Seconds the longest-running item in flight has run (from any thread)."""
        try:
            now = trio.current_time()
        except RuntimeError:  # statistics() from outside the run (open_sync's consumer)
            now = time.monotonic() + self.clock_offset
        return max((now - r.since for r in list(self.units)), default=0.0)


def _warn_stall(
    label: str, index: int, age: float, stall_timeout: float | None, busy: str, stacks: list[str]
) -> None:
    _stall_log.warning(
        "snake: stage %s has made no progress for %.1f s: item index %d has been running for "
        "%.1f s (stall_timeout=%gs). Busy %s:\n%s",
        label,
        age,
        index,
        age,
        stall_timeout,
        busy,
        "\n".join(stacks),
    )


class _TaskWatch:
    """The items in flight of one ``par_then`` run, watched for stalls.

    Each call records its item index and trio task in :attr:`running` (a dict store
    and a delete: no clock read per item). Every ``period`` the watch notes when it
    first saw each index; an item seen for ``stall_timeout`` seconds gets a warning
    on the ``snake`` logger with the stack of every busy task, repeated every
    ``stall_timeout`` seconds while the stage stays stuck. Ages are measured from the
    first sighting, so they are low by at most one period.
    """

    def __init__(self, label: str, counters: StageCounters, stall_timeout: float) -> None:
        self.label = label
        self.counters = counters
        self.stall_timeout = stall_timeout
        self.period = max(0.002, min(stall_timeout / 4, 1.0))
        #: Item index -> the task awaiting it.
        self.running: dict[int, trio.lowlevel.Task] = {}
        #: Item index -> trio time it was first seen running.
        self.seen: dict[int, float] = {}
        self.warned_at = -math.inf
        self.clock_offset = trio.current_time() - time.monotonic()

    async def run(self) -> None:
        while True:
            await trio.sleep(self.period)
            now = trio.current_time()
            running, seen = self.running, self.seen
            for index in [i for i in seen if i not in running]:
                del seen[index]
            for index in list(running):
                seen.setdefault(index, now)
            if not seen:
                continue
            oldest = min(seen, key=seen.__getitem__)
            age = now - seen[oldest]
            if age >= self.stall_timeout and now - self.warned_at >= self.stall_timeout:
                self.warned_at = now
                self.counters.stalls += 1
                busy = sorted((since, index) for index, since in seen.items() if index in running)
                stacks = [
                    f"item index {index} (running {now - since:.1f} s), {tasks.stack(running[index])}"
                    for since, index in busy
                ]
                _warn_stall(self.label, oldest, age, self.stall_timeout, "trio tasks", stacks)

    def longest(self) -> float:
        """Seconds the longest-running item in flight has run (from any thread)."""
        try:
            now = trio.current_time()
        except RuntimeError:  # statistics() from outside the run (open_sync's consumer)
            now = time.monotonic() + self.clock_offset
        return max((now - since for since in list(self.seen.values())), default=0.0)


@attrs.frozen
class ParMap(TaskSpec):
    """``par_map(fn, workers=N, backend=..., ordered=..., retries=..., timeout=..., pool=...)``."""

    fn: Callable[[Any], Any]
    workers: int | Literal["auto"]
    backend: Backend = "process"
    ordered: bool = True
    worker_type: WorkerType = "auto"
    retries: int = 0
    timeout: float | None = None
    pool: WorkerPool | None = None
    errors: ErrorPolicy = _RAISE
    stall_timeout: float | None = 60.0
    #: Set by the plan: the workers write results into the slabs of the ``batch()``
    #: right after this stage (process backend).
    slabs: bool = False
    #: Options for each Ray actor (``backend="ray"``), checked by ``par_map``.
    ray_options: dict[str, Any] | None = attrs.field(default=None, eq=False)
    #: ``workers="auto"``: the pipeline's budget, set by the plan.
    tune: TuneSettings | None = None

    def describe(self) -> str:
        args = [describe_callable(self.fn), f"workers={self.workers!r}"]
        if self.backend != "process":
            args.append(f"backend={self.backend!r}")
        if not self.ordered:
            args.append("ordered=False")
        if self.worker_type != "auto":
            args.append(f"worker_type={self.worker_type!r}")
        if self.retries:
            args.append(f"retries={self.retries}")
        if self.timeout is not None:
            args.append(f"timeout={self.timeout!r}")
        if self.stall_timeout != 60.0:
            args.append(f"stall_timeout={self.stall_timeout!r}")
        if self.pool is not None:
            args.append("pool=<WorkerPool>")
        if self.ray_options:
            args.append(f"ray_options={self.ray_options!r}")
        return f"par_map({', '.join(args)}){self.errors.describe()}"

    def out_length(self, n: int) -> int | None:
        return n if self.errors.mode == "raise" else None

    async def run(
        self, ctx: Context, label: str, inbox: Inbox, fused: Fused, send: trio.MemorySendChannel[Chunk]
    ) -> None:
        counters = ctx.counters(label)
        counters.budget = ErrorBudget(self.errors, label)
        res = _ParResume(self.ordered, self.errors.mode == "skip")
        entry = ctx.resumable(label, res)
        pool = self.pool
        budget = ctx.budget(self.tune or TuneSettings()) if self.workers == AUTO else None
        if budget is not None:
            share = max(1, budget.cpus - budget.fixed)
            high = pool.workers if pool is not None else share
            start = min(high, max(1, share // max(1, budget.maps)))
        else:
            high = start = int(self.workers)
        run: _MapRun | None = None
        shared = pool._acquire(label) if pool is not None else None
        try:
            if budget is not None:
                start = budget.take(start)
            backend = self._backend(label, shared, high)
            async with backend:
                run = _MapRun(self, backend, label, counters, entry, res, high, start, budget)
                await run.run(inbox, backend.fuse(fused), send)
        finally:
            if budget is not None:  # the stage has ended: its workers are free
                budget.give(run.active() if run is not None else start)
            if pool is not None:
                pool._release()

    def _backend(self, label: str, shared: trio.CapacityLimiter | None, workers: int) -> WorkerBackend:
        skip = self.errors.mode == "skip"
        if self.backend == "thread":
            from .._workers.thread import ThreadBackend

            return ThreadBackend(self.fn, workers, label, skip)
        if self.backend == "ray":
            from .._workers.ray import RayBackend

            ray_pool = self.pool
            return RayBackend(
                self.fn,
                workers,
                label,
                skip,
                options=self.ray_options or {},
                actors=ray_pool._ray_actors() if ray_pool is not None else None,
                shared=shared,
                closed=(lambda: ray_pool._closed) if ray_pool is not None else (lambda: False),
            )
        from .._workers.process import CacheSource, ProcessBackend

        pool = self.pool
        source: Any = pool if pool is not None else CacheSource(resolve_worker_type(self.worker_type))
        return ProcessBackend(
            self.fn,
            workers,
            label,
            skip,
            source,
            slabs=self.slabs,
            shared=shared,
            closed=(lambda: pool._closed) if pool is not None else (lambda: False),
        )


class _MapRun:
    """One run of a ``par_map`` stage: the scheduling around its backend's units."""

    def __init__(
        self,
        spec: ParMap,
        backend: WorkerBackend,
        label: str,
        counters: StageCounters,
        entry: dict[str, Any] | None,
        res: _ParResume,
        workers: int,
        start: int,
        tuning: Budget | None = None,
    ) -> None:
        self.spec = spec
        #: Runner slots (the ceiling of a tuned stage), and how many start active.
        self.workers = workers
        self.start = start
        #: ``workers="auto"``: the run's budget, shared by its tuned stages (None: fixed).
        self.tuning = tuning
        #: The active workers, as the tuner sets them. (Not the _Core itself: keeping it
        #: here would make a cycle through ``core.call``, and the results that its fused
        #: stages hold, a batch() half made, would wait for the garbage collector.)
        self.active_now = start
        self.backend = backend
        self.label = label
        self.counters = counters
        self.retries = spec.retries
        budget = counters.budget
        assert budget is not None
        self.budget = budget
        self.res = res
        self.entry = entry
        if entry is not None:
            budget.skipped = int(entry.get("skipped", 0))
        self.pacer = _Pacer(_THREAD_CALL_S if backend.kind == "thread" else _PROCESS_CALL_S)
        self.watch = _Watch(backend, label, counters, spec.timeout, spec.stall_timeout)
        counters.watch = self.watch

    async def run(self, inbox: Inbox, fused: Fused, send: trio.MemorySendChannel[Chunk]) -> None:
        outbox = Outbox(send)
        workers = self.workers
        self.pacer.attach(outbox, fused, self.start)
        core = _Core(
            inbox=inbox,
            fused=fused,
            outbox=outbox,
            ordered=self.spec.ordered,
            slots=workers,
            window=2 * workers,
            call=self.call,
            unit_size=self.pacer.size,
            counters=self.counters,
            res=self.res,
            entry=self.entry,
        )
        budget = self.tuning
        if budget is not None:
            pacer = self.pacer

            def resize(n: int) -> None:
                core.set_active(n)
                self.active_now = n
                pacer.workers = n
                pacer._bound()

            most = pacer.max_cap

            def cap_outbox(cap: int) -> None:
                pacer.max_cap = max(1, min(most, cap // pacer.weight))
                pacer._bound()

            core.tune(
                "workers",
                label=self.label,
                start=self.start,
                budget=budget,
                resize=resize,
                cap_outbox=cap_outbox,
                weight=pacer.weight,
                least_period=0.1,
                unit_items=pacer.size,
            )
        await core.run(self._warm_ups(), watch=self.watch.run if self.watch.needed else None)

    def active(self) -> int:
        """Workers the stage counts against its budget: those its tuner let work."""
        return self.active_now

    def _warm_ups(self) -> tuple[Callable[[], Awaitable[Any]], ...]:
        pool = self.spec.pool
        if self.backend.kind != "process":
            return ()
        if pool is not None:
            stats = pool.statistics()
            if stats.idle_workers + stats.running_workers >= self.start:
                # A warm pool: warm-up calls would only queue behind other stages' calls.
                return ()
        return (self.backend.warm_up,) * self.start

    async def attempt(self, items: Chunk, start: int) -> Chunk:
        """One unit on the backend; raises Lost if its worker dies or runs past the deadline."""
        t0 = time.perf_counter()
        counters = self.counters
        watch = self.watch
        with trio.CancelScope() as scope:
            # No deadline until the backend begins the unit (after any wait for a turn).
            running = Running(start, len(items), scope, self.spec.timeout)
            watch.units.add(running)
            try:
                results, failures = await self.backend.run(items, start, running)
            except Lost as lost:
                counters.workers_lost += 1
                raise lost.blame(running) from lost.cause
            finally:
                watch.units.discard(running)
        if scope.cancelled_caught:
            counters.timeouts += 1
            counters.workers_lost += 1
            raise Lost(None, timed_out=True).blame(running)
        self.pacer.record(len(items), time.perf_counter() - t0)
        if failures:
            self._absorb(failures)
        return results

    def _absorb(self, failures: list[Failure]) -> None:
        for index, exc in failures:
            if not self.budget.absorb(exc, index, self.counters.items_in):
                raise exc
            self.res.drops.add(index)

    def lost_error(self, lost: Lost, index: int, attempts: int) -> BaseException:
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        ray = self.backend.kind == "ray"
        if lost.timed_out:
            err: BaseException = TimeoutError(
                f"stage {self.label}: item index {index} took longer than timeout={self.spec.timeout}s{tries}; "
                + ("its Ray actor was killed" if ray else f"its worker {self.backend.kind} was killed")
            )
        else:
            how = getattr(lost.cause, "how", "")
            err = WorkerCrashedError(
                f"{'a Ray actor' if ray else 'a worker process'} of stage {self.label} died while running "
                f"item index {index}{tries}"
                + (f" ({how})" if how else "")
            )
            err.__cause__ = lost.cause
        add_note(err, self.label, index)
        return err

    async def one_item(self, x: Any, index: int, lost: Lost, attempts: int) -> Chunk:
        """After ``attempts`` lost attempts at an item: retry it alone, or give up."""
        while attempts <= self.retries:
            self.counters.retries += 1
            try:
                return await self.attempt([x], index)
            except Lost as again:
                lost = again
                attempts += 1
        err = self.lost_error(lost, index, attempts)
        if self.budget.absorb(err, index, self.counters.items_in):
            self.res.drops.add(index)
            return []
        raise err

    async def call(self, items: Chunk, start: int) -> Chunk:
        try:
            return await self.attempt(items, start)
        except Lost as lost:
            if lost.culprit is None:
                # Which item was running is unknown: run each alone to find it.
                self.counters.retries += len(items)
                out: Chunk = []
                for i, x in enumerate(items):
                    out.extend(await self.call([x], start + i))
                return out
            # Items before the culprit finished but their results died with the
            # worker: they run again. Items after it had not started.
            k = lost.culprit - start
            out = []
            if k:
                self.counters.retries += k
                out.extend(await self.call(items[:k], start))
            out.extend(await self.one_item(items[k], start + k, lost, 1))
            if k + 1 < len(items):
                out.extend(await self.call(items[k + 1 :], start + k + 1))
            return out
