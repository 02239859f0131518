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

import math
import operator
import pickle
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

import attrs
import trio

from .. import _shm
from .._chan import Chunk, Inbox, Outbox
from .._collate import Collator
from .._direct import Dests, SlotBatcher, write_slots
from .._errors import ErrorBudget, ErrorPolicy, RemoteError, WorkerCrashedError
from .._pool import WorkerPool, WorkerType, resolve_worker_type, shutdown_context
from .._stats import StageCounters
from .._util import CHUNK_CAP, add_note, describe_callable, spawn
from .base import Fused, TaskSpec
from .inline import _BatchOp

if TYPE_CHECKING:
    from .._run import Context

Backend = Literal["process", "thread"]

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


class _Core:
    """Runner tasks, input slicing, the reorder window and the emission of results."""

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
    ) -> None:
        self.counters = counters
        counters.slots = slots
        counters.outbox = outbox
        self.inbox = inbox
        self.fused = fused
        self.outbox = outbox
        self.ordered = ordered
        self.slots = slots
        self.window = window
        self.call = call
        self.unit_size = unit_size
        self.chunk: Chunk = []
        self.pos = 0
        self.base = 0
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

    async def _take(self) -> tuple[int, int, Chunk] | None:
        while True:
            if self.ordered and self.next_unit - self.emit_unit >= self.window:
                await self.window_wait.park(self.counters)
                continue
            left = len(self.chunk) - self.pos
            if left:
                k = self.unit_size()
                if k > 1:
                    # Spread what is there over the runners rather than give it all to one.
                    k = min(k, max(1, math.ceil(left / self.slots)))
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

    def _complete(self, unit: int, results: Chunk) -> None:
        self.counters.items_out += len(results)
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

    async def runner(self) -> None:
        outbox = self.outbox
        counters = self.counters
        while True:
            if len(outbox) >= outbox.cap:
                t0 = counters.park()
                try:
                    await outbox.wait_room()
                finally:
                    counters.unpark(t0)
            work = await self._take()
            if work is None:
                # Done: the slot counts as idle until the stage stops.
                counters.park()
                return
            unit, start, items = work
            counters.in_flight += len(items)
            try:
                results = await self.call(items, start)
            finally:
                counters.in_flight -= len(items)
            self._complete(unit, results)

    async def run(self, extra_tasks: tuple[Callable[[], Awaitable[Any]], ...] = ()) -> None:
        async with trio.open_nursery() as nursery:
            spawn(nursery, self.outbox.run, nursery.cancel_scope)
            with self.stop:
                async with trio.open_nursery() as runners:
                    for task in extra_tasks:
                        spawn(runners, task)
                    for _ in range(self.slots):
                        spawn(runners, self.runner)
            self.outbox.put(self.fused.flush())
            self.outbox.close()


_RAISE = ErrorPolicy()


@attrs.frozen
class ParThen(TaskSpec):
    """``then(afn)`` (limit=1) and ``par_then(afn, limit=N, ordered=..., timeout=...)``."""

    afn: Callable[[Any], Awaitable[Any]]
    limit: int = 1
    ordered: bool = True
    name: str = "par_then"
    timeout: float | None = None
    errors: ErrorPolicy = _RAISE

    def describe(self) -> str:
        args = [describe_callable(self.afn)]
        if self.name == "par_then":
            args.append(f"limit={self.limit}")
            if not self.ordered:
                args.append("ordered=False")
        if self.timeout is not None:
            args.append(f"timeout={self.timeout!r}")
        return f"{self.name}({', '.join(args)}){self.errors.describe()}"

    async def run(
        self, ctx: Context, label: str, inbox: Inbox, fused: Fused, send: trio.MemorySendChannel[Chunk]
    ) -> None:
        afn = self.afn
        timeout = self.timeout
        counters = ctx.counters(label)
        budget = counters.budget = ErrorBudget(self.errors, label)

        async def call(items: Chunk, start: int) -> Chunk:
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
                    return []
                raise

        core = _Core(
            inbox=inbox,
            fused=fused,
            # IO results (downloads, decoded files) can be large: at most 256 (or 4 per
            # task) wait here; fewer costs channel hops (64: half the items/s of trivial tasks).
            outbox=Outbox(send, cap=min(fused.outbox_cap(), max(1, max(256, 4 * self.limit) // fused.weight()))),
            ordered=self.ordered,
            slots=self.limit,
            window=self.limit,
            call=call,
            unit_size=lambda: 1,
            counters=counters,
        )
        await core.run()


Failure = tuple[int, BaseException]


def _apply(
    fn: Callable[[Any], Any], items: Chunk, start: int, label: str, skip: bool
) -> tuple[Chunk, list[Failure]]:
    """Run ``fn`` over ``items``. A failure gets the stage note with its index and is
    raised, or, when ``skip``, collected with its index while the other items go on."""
    if not skip:
        it = iter(items)
        try:
            return list(map(fn, it)), []
        except Exception as exc:
            add_note(exc, label, start + len(items) - operator.length_hint(it) - 1)
            raise
    results: Chunk = []
    failures: list[Failure] = []
    for i, x in enumerate(items):
        try:
            results.append(fn(x))
        except Exception as exc:
            add_note(exc, label, start + i)
            failures.append((start + i, exc))
    return results, failures


def _portable(exc: BaseException) -> BaseException:
    """``exc`` with the worker's traceback as a note, or a RemoteError if it cannot pickle."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, chain=False))
    exc.add_note("snake: traceback in the worker process:\n" + tb.rstrip())
    try:
        pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return RemoteError(f"{type(exc).__qualname__}: {exc}\n{tb}")
    return exc


def _apply_in_worker(
    fn: Callable[[Any], Any],
    items: Chunk,
    start: int,
    label: str,
    skip: bool,
    shm_prefix: str | None,
    progress: tuple[str, int] | None,
    lent: list[tuple[str, int]],
    dests: Dests | None,
) -> tuple[bool, Any, list[Failure]]:
    """What a worker process runs: ``(True, results, failures)`` or ``(False, error, [])``.

    Large numpy arrays in the results travel through shared memory (see ``_shm``).
    With ``progress`` (a slot file and a slot), the index of each item is written
    there before the item starts, for the main process to read if the worker dies.
    """
    try:
        if progress is None or len(items) == 1:
            if progress is not None:
                _shm.progress_view(progress[0])[progress[1]] = start
            results, failures = _apply(fn, items, start, label, skip)
        else:
            slots = _shm.progress_view(progress[0])
            slot = progress[1]
            results, failures = [], []
            for i, x in enumerate(items):
                slots[slot] = start + i
                more, failed = _apply(fn, [x], start + i, label, skip)
                results += more
                failures += failed
    except Exception as exc:
        return False, _portable(exc), []
    failures = [(i, _portable(e)) for i, e in failures]
    if shm_prefix is not None:
        _shm.worker_run(shm_prefix)
        if dests is not None:
            results = write_slots(results, dests)
        results = _shm.export(results, shm_prefix, lent)
    return True, results, failures


def _noop() -> None:
    return None


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


class _Lost(Exception):
    """A call whose worker died or was killed for running past its deadline."""

    def __init__(self, timed_out: bool, cause: BaseException | None, culprit: int | None) -> None:
        super().__init__("timed out" if timed_out else "worker died")
        self.timed_out = timed_out
        self.cause = cause
        #: Index of the item the worker was running, when known.
        self.culprit = culprit


class _NoLimit:
    """An ``async with`` that holds nothing (a stage with its own workers)."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_NO_LIMIT = _NoLimit()


@attrs.frozen
class ParMap(TaskSpec):
    """``par_map(fn, workers=N, backend=..., ordered=..., retries=..., timeout=..., pool=...)``."""

    fn: Callable[[Any], Any]
    workers: int
    backend: Backend = "process"
    ordered: bool = True
    worker_type: WorkerType = "auto"
    retries: int = 0
    timeout: float | None = None
    pool: WorkerPool | None = None
    errors: ErrorPolicy = _RAISE

    def describe(self) -> str:
        args = [describe_callable(self.fn), f"workers={self.workers}"]
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
        if self.pool is not None:
            args.append("pool=<WorkerPool>")
        return f"par_map({', '.join(args)}){self.errors.describe()}"

    async def run(
        self, ctx: Context, label: str, inbox: Inbox, fused: Fused, send: trio.MemorySendChannel[Chunk]
    ) -> None:
        counters = ctx.counters(label)
        counters.budget = ErrorBudget(self.errors, label)
        if self.backend == "thread":
            await self._run_threads(label, inbox, fused, send, counters)
        else:
            await self._run_processes(label, inbox, fused, send, counters)

    def _core(
        self,
        inbox: Inbox,
        fused: Fused,
        send: trio.MemorySendChannel[Chunk],
        pacer: _Pacer,
        call: Callable[[Chunk, int], Awaitable[Chunk]],
        counters: StageCounters,
    ) -> _Core:
        outbox = Outbox(send)
        pacer.attach(outbox, fused, self.workers)
        return _Core(
            inbox=inbox,
            fused=fused,
            outbox=outbox,
            ordered=self.ordered,
            slots=self.workers,
            window=2 * self.workers,
            call=call,
            unit_size=pacer.size,
            counters=counters,
        )

    @staticmethod
    def _absorb_failures(failures: list[Failure], counters: StageCounters) -> None:
        budget = counters.budget
        assert budget is not None
        for index, exc in failures:
            if not budget.absorb(exc, index, counters.items_in):
                raise exc

    async def _run_threads(
        self,
        label: str,
        inbox: Inbox,
        fused: Fused,
        send: trio.MemorySendChannel[Chunk],
        counters: StageCounters,
    ) -> None:
        fn = self.fn
        skip = self.errors.mode == "skip"
        limiter = trio.CapacityLimiter(self.workers)
        pacer = _Pacer(_THREAD_CALL_S)

        async def call(items: Chunk, start: int) -> Chunk:
            t0 = time.perf_counter()
            # Not abandoned on cancel: a thread cannot be killed, so cancellation
            # waits for the (short, ~2 ms) unit in flight and no thread outlives the stage.
            results, failures = await trio.to_thread.run_sync(
                _apply, fn, items, start, label, skip, limiter=limiter
            )
            pacer.record(len(items), time.perf_counter() - t0)
            if failures:
                self._absorb_failures(failures, counters)
            return results

        await self._core(inbox, fused, send, pacer, call, counters).run()

    async def _run_processes(
        self,
        label: str,
        inbox: Inbox,
        fused: Fused,
        send: trio.MemorySendChannel[Chunk],
        counters: StageCounters,
    ) -> None:
        if self.pool is not None:
            context, shared = self.pool._acquire(label)
            try:
                await self._run_on(context, label, inbox, fused, send, counters, shared)
            finally:
                leftover = self.pool._release()
                if leftover is not None:  # the pool was closed while this stage ran
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(shutdown_context, leftover)
            return
        import trio_parallel

        async with trio_parallel.open_worker_context(
            worker_type=trio_parallel.WorkerType(resolve_worker_type(self.worker_type)),
            idle_timeout=math.inf,
            grace_period=5.0,
        ) as context:
            await self._run_on(context, label, inbox, fused, send, counters, None)

    async def _run_on(
        self,
        workers: Any,
        label: str,
        inbox: Inbox,
        fused: Fused,
        send: trio.MemorySendChannel[Chunk],
        counters: StageCounters,
        shared: trio.CapacityLimiter | None,
    ) -> None:
        """``shared``: a WorkerPool's limiter, held by every call of every stage of this
        trio run on that pool, so that together they keep to its number of workers."""
        pool = self.pool
        import trio_parallel

        fn = self.fn
        skip = self.errors.mode == "skip"
        timeout = self.timeout
        retries = self.retries
        budget = counters.budget
        assert budget is not None
        limiter = trio.CapacityLimiter(self.workers)
        pacer = _Pacer(_PROCESS_CALL_S)
        shm_prefix = _shm.new_prefix() if _shm.available() else None

        # Per-item timeouts: the watchdog moves each call's deadline to `timeout` after
        # the moment its worker starts a new item (read from the progress slots).
        watched: dict[int, tuple[trio.CancelScope, int]] = {}

        async def watchdog() -> None:
            assert timeout is not None and progress is not None
            period = max(0.002, min(timeout / 4, 0.05))
            while True:
                await trio.sleep(period)
                now = trio.current_time()
                for slot, (scope, last) in list(watched.items()):
                    index = progress.read(slot)
                    if index != last:
                        watched[slot] = (scope, index)
                        scope.deadline = now + timeout

        async def attempt(items: Chunk, start: int) -> Chunk:
            """One call on a worker; raises _Lost if the worker dies or runs past the deadline."""
            if shared is None:
                return await attempt_now(items, start)
            # Waiting for a turn on a shared pool counts neither against the timeout
            # nor in the measured time per item.
            async with shared:
                if pool is not None and pool._closed:
                    raise RuntimeError(f"stage {label}: {pool!r} was closed while the stage ran")
                return await attempt_now(items, start)

        async def attempt_now(items: Chunk, start: int) -> Chunk:
            t0 = time.perf_counter()
            slot = progress.take() if progress is not None else -1
            where = (progress.path, slot) if progress is not None else None
            lent = segments.lend(len(items)) if segments is not None else []
            dests = batcher.dests(start, len(items)) if batcher is not None else None
            if timeout is None:
                deadline = math.inf
            elif progress is not None:
                deadline = trio.current_time() + timeout
            else:  # no progress slots: the whole call gets `timeout` per item
                deadline = trio.current_time() + timeout * len(items)
            try:
                with trio.CancelScope(deadline=deadline) as scope:
                    if timeout is not None and progress is not None:
                        watched[slot] = (scope, -1)
                    ok, payload, failures = await workers.run_sync(
                        _apply_in_worker,
                        fn,
                        items,
                        start,
                        label,
                        skip,
                        shm_prefix,
                        where,
                        lent,
                        dests,
                        kill_on_cancel=True,
                        limiter=limiter,
                    )
            except trio_parallel.BrokenWorkerError as exc:
                counters.workers_lost += 1
                raise _Lost(False, exc, culprit(slot, items, start)) from exc
            except Exception as exc:
                # Not the user's function (its errors come back as payload): the
                # items or the results could not cross to or from the worker.
                exc.add_note(
                    f"snake: stage {label} could not exchange item indices "
                    f"{start}..{start + len(items) - 1} with a worker process"
                )
                raise
            finally:
                watched.pop(slot, None)
                if progress is not None:
                    progress.give_back(slot)
                if segments is not None:
                    segments.returned(lent)
            if scope.cancelled_caught:
                counters.timeouts += 1
                counters.workers_lost += 1
                raise _Lost(True, None, culprit(slot, items, start))
            pacer.record(len(items), time.perf_counter() - t0)
            if not ok:
                raise payload
            if segments is not None:
                payload = segments.import_(payload)
            if failures:
                self._absorb_failures(failures, counters)
            return payload  # type: ignore[no-any-return]

        def culprit(slot: int, items: Chunk, start: int) -> int | None:
            if len(items) == 1:
                return start
            if progress is None:
                return None
            index = progress.read(slot)
            return index if start <= index < start + len(items) else None

        def lost_error(lost: _Lost, index: int, attempts: int) -> BaseException:
            tries = f" ({attempts} attempts)" if attempts > 1 else ""
            if lost.timed_out:
                err: BaseException = TimeoutError(
                    f"stage {label}: item index {index} took longer than timeout={timeout}s{tries}; "
                    "its worker process was killed"
                )
            else:
                err = WorkerCrashedError(
                    f"a worker process of stage {label} died while running item index {index}{tries}"
                )
                err.__cause__ = lost.cause
            add_note(err, label, index)
            return err

        async def one_item(x: Any, index: int, lost: _Lost, attempts: int) -> Chunk:
            """After ``attempts`` lost attempts at an item: retry it alone, or give up."""
            while attempts <= retries:
                counters.retries += 1
                try:
                    return await attempt([x], index)
                except _Lost as again:
                    lost = again
                    attempts += 1
            err = lost_error(lost, index, attempts)
            if budget.absorb(err, index, counters.items_in):
                return []
            raise err

        async def call(items: Chunk, start: int) -> Chunk:
            try:
                return await attempt(items, start)
            except _Lost as lost:
                k = None if lost.culprit is None else lost.culprit - start
                if k is None:
                    # Which item was running is unknown: run each alone to find it.
                    counters.retries += len(items)
                    out: Chunk = []
                    for i, x in enumerate(items):
                        out.extend(await call([x], start + i))
                    return out
                # Items before the culprit finished but their results died with the
                # worker: they run again. Items after it had not started.
                out = []
                if k:
                    counters.retries += k
                    out.extend(await call(items[:k], start))
                out.extend(await one_item(items[k], start + k, lost, 1))
                if k + 1 < len(items):
                    out.extend(await call(items[k + 1 :], start + k + 1))
                return out

        async def warm_up() -> None:
            # Start the worker processes while the source produces its first items. A
            # fork blocks the event loop for some ms: let the stages before this one
            # start their work (their IO waits then overlap the forks) first.
            for _ in range(3):
                await trio.lowlevel.checkpoint()
            try:
                async with shared if shared is not None else _NO_LIMIT:
                    await workers.run_sync(_noop, kill_on_cancel=True, limiter=limiter)
            except trio_parallel.BrokenWorkerError:
                pass  # the calls that follow start a new worker, or report the crash

        progress = _shm.Progress(shm_prefix, self.workers) if shm_prefix is not None else None
        segments = _shm.Segments(shm_prefix) if shm_prefix is not None else None
        batcher = None
        if (
            shm_prefix is not None
            and self.ordered
            and not skip
            and fused.ops
            and type(fused.ops[0]) is _BatchOp
            and type(fused.ops[0].collate) is Collator
        ):
            # batch() with the default collate right after: workers write the batch rows.
            batcher = SlotBatcher(fused.ops[0], shm_prefix)
            fused = Fused([batcher, *fused.ops[1:]])
        if shm_prefix is not None:
            _shm.cleanup_stale()
        try:
            async with trio.open_nursery() as nursery:
                if timeout is not None and progress is not None:
                    spawn(nursery, watchdog)
                warm = (warm_up,) * self.workers
                if shared is not None:
                    started = workers.statistics()
                    if started.idle_workers + started.running_workers >= self.workers:
                        # A warm pool: no-op calls would only queue behind other stages'
                        # calls (and a cancelled one would kill a worker for nothing).
                        warm = ()
                await self._core(inbox, fused, send, pacer, call, counters).run(warm)
                nursery.cancel_scope.cancel()
        finally:
            if shm_prefix is not None:
                _shm.cleanup(shm_prefix)
