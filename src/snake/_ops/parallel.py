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
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

import attrs
import trio

from .._chan import Chunk, Inbox, Outbox
from .._errors import RemoteError, WorkerCrashedError
from .._util import CHUNK_CAP, add_note, describe_callable
from .base import Fused, TaskSpec

if TYPE_CHECKING:
    from .._run import Context

Backend = Literal["process", "thread"]
WorkerType = Literal["auto", "fork", "forkserver", "spawn"]

#: Work per call a process worker is given, once per-item time is known. A call
#: leaves its worker idle for a round trip (0.1-0.5 ms with every core busy), so
#: calls carry ~20 ms; the end of a stream is still split evenly over the workers.
_PROCESS_CALL_S = 0.020
#: Work per call a worker thread is given (a thread dispatch costs ~73 us here).
_THREAD_CALL_S = 0.002


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
    ) -> None:
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
        self.in_flight = 0
        # Waking a parking lot costs ~2 us even when nobody waits: count who does.
        self.input_lot = trio.lowlevel.ParkingLot()
        self.input_waiters = 0
        self.window_lot = trio.lowlevel.ParkingLot()
        self.window_waiters = 0
        self.stop = trio.CancelScope()

    async def _take(self) -> tuple[int, int, Chunk] | None:
        while True:
            if self.ordered and self.next_unit - self.emit_unit >= self.window:
                self.window_waiters += 1
                try:
                    await self.window_lot.park()
                finally:
                    self.window_waiters -= 1
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
                return unit, self.base + start, self.chunk[start:end]
            if self.eof:
                return None
            if self.fetching:
                self.input_waiters += 1
                try:
                    await self.input_lot.park()
                finally:
                    self.input_waiters -= 1
                continue
            self.fetching = True
            try:
                chunk = await self.inbox.receive()
            finally:
                self.fetching = False
                if self.input_waiters:
                    self.input_lot.unpark_all()
            if chunk is None:
                self.eof = True
            else:
                self.base += len(self.chunk)
                self.chunk = chunk
                self.pos = 0

    def _complete(self, unit: int, results: Chunk) -> None:
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
            if self.window_waiters:
                self.window_lot.unpark_all()
        self.outbox.put(self.fused(results))
        if self.fused.done:
            self.stop.cancel()

    async def runner(self) -> None:
        outbox = self.outbox
        while True:
            if len(outbox) >= outbox.cap:
                await outbox.wait_room()
            work = await self._take()
            if work is None:
                return
            unit, start, items = work
            self.in_flight += len(items)
            try:
                results = await self.call(items, start)
            finally:
                self.in_flight -= len(items)
            self._complete(unit, results)

    async def run(self, extra_tasks: list[Callable[[], Awaitable[Any]]] = []) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.outbox.run, nursery.cancel_scope)
            with self.stop:
                async with trio.open_nursery() as runners:
                    for task in extra_tasks:
                        runners.start_soon(task)
                    for _ in range(self.slots):
                        runners.start_soon(self.runner)
            self.outbox.put(self.fused.flush())
            self.outbox.close()


@attrs.frozen
class ParThen(TaskSpec):
    """``then(afn)`` (limit=1) and ``par_then(afn, limit=N, ordered=...)``."""

    afn: Callable[[Any], Awaitable[Any]]
    limit: int = 1
    ordered: bool = True
    name: str = "par_then"

    def describe(self) -> str:
        args = [describe_callable(self.afn)]
        if self.name == "par_then":
            args.append(f"limit={self.limit}")
            if not self.ordered:
                args.append("ordered=False")
        return f"{self.name}({', '.join(args)})"

    async def run(
        self, ctx: Context, label: str, inbox: Inbox, fused: Fused, send: trio.MemorySendChannel[Chunk]
    ) -> None:
        afn = self.afn

        async def call(items: Chunk, start: int) -> Chunk:
            try:
                return [await afn(items[0])]
            except Exception as exc:
                add_note(exc, label, start)
                raise

        core = _Core(
            inbox=inbox,
            fused=fused,
            outbox=Outbox(send),
            ordered=self.ordered,
            slots=self.limit,
            window=self.limit,
            call=call,
            unit_size=lambda: 1,
        )
        await core.run()


def _apply(fn: Callable[[Any], Any], items: Chunk, start: int, label: str) -> Chunk:
    """Run ``fn`` over ``items``; a failure gets the stage note with its index."""
    it = iter(items)
    try:
        return list(map(fn, it))
    except Exception as exc:
        add_note(exc, label, start + len(items) - operator.length_hint(it) - 1)
        raise


def _apply_in_worker(
    fn: Callable[[Any], Any], items: Chunk, start: int, label: str
) -> tuple[bool, Any]:
    """The function a worker process runs: results, or a picklable failure."""
    try:
        return True, _apply(fn, items, start, label)
    except Exception as exc:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        exc.add_note("snake: traceback in the worker process:\n" + tb.rstrip())
        try:
            pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            return False, RemoteError(f"{type(exc).__qualname__}: {exc}\n{tb}")
        return False, exc


def _noop() -> None:
    return None


def _default_worker_type() -> str:
    # fork starts a worker in ~4 ms here against ~100-300 ms for spawn/forkserver;
    # it is the default where it is reliable (Linux), spawn elsewhere.
    return "fork" if sys.platform.startswith("linux") else "spawn"


class _Pacer:
    """Sizes units of work so that each call carries about ``target_s`` of work."""

    __slots__ = ("target_s", "per_item")

    def __init__(self, target_s: float) -> None:
        self.target_s = target_s
        self.per_item: float | None = None

    def size(self) -> int:
        if self.per_item is None:
            return 1
        return max(1, min(CHUNK_CAP, round(self.target_s / max(self.per_item, 1e-9))))

    def record(self, n: int, elapsed: float) -> None:
        sample = elapsed / n
        self.per_item = sample if self.per_item is None else 0.5 * (self.per_item + sample)


@attrs.frozen
class ParMap(TaskSpec):
    """``par_map(fn, workers=N, backend=..., ordered=...)``."""

    fn: Callable[[Any], Any]
    workers: int
    backend: Backend = "process"
    ordered: bool = True
    worker_type: WorkerType = "auto"

    def describe(self) -> str:
        args = [describe_callable(self.fn), f"workers={self.workers}"]
        if self.backend != "process":
            args.append(f"backend={self.backend!r}")
        if not self.ordered:
            args.append("ordered=False")
        if self.worker_type != "auto":
            args.append(f"worker_type={self.worker_type!r}")
        return f"par_map({', '.join(args)})"

    async def run(
        self, ctx: Context, label: str, inbox: Inbox, fused: Fused, send: trio.MemorySendChannel[Chunk]
    ) -> None:
        if self.backend == "thread":
            await self._run_threads(label, inbox, fused, send)
        else:
            await self._run_processes(label, inbox, fused, send)

    def _core(
        self,
        inbox: Inbox,
        fused: Fused,
        send: trio.MemorySendChannel[Chunk],
        pacer: _Pacer,
        call: Callable[[Chunk, int], Awaitable[Chunk]],
    ) -> _Core:
        return _Core(
            inbox=inbox,
            fused=fused,
            outbox=Outbox(send),
            ordered=self.ordered,
            slots=self.workers,
            window=2 * self.workers,
            call=call,
            unit_size=pacer.size,
        )

    async def _run_threads(
        self, label: str, inbox: Inbox, fused: Fused, send: trio.MemorySendChannel[Chunk]
    ) -> None:
        fn = self.fn
        limiter = trio.CapacityLimiter(self.workers)
        pacer = _Pacer(_THREAD_CALL_S)

        async def call(items: Chunk, start: int) -> Chunk:
            t0 = time.perf_counter()
            # Not abandoned on cancel: a thread cannot be killed, so cancellation
            # waits for the (short, ~2 ms) unit in flight and no thread outlives the stage.
            results = await trio.to_thread.run_sync(_apply, fn, items, start, label, limiter=limiter)
            pacer.record(len(items), time.perf_counter() - t0)
            return results

        await self._core(inbox, fused, send, pacer, call).run()

    async def _run_processes(
        self, label: str, inbox: Inbox, fused: Fused, send: trio.MemorySendChannel[Chunk]
    ) -> None:
        import trio_parallel

        fn = self.fn
        limiter = trio.CapacityLimiter(self.workers)
        pacer = _Pacer(_PROCESS_CALL_S)
        wtype = self.worker_type if self.worker_type != "auto" else _default_worker_type()

        async with trio_parallel.open_worker_context(
            worker_type=trio_parallel.WorkerType(wtype), idle_timeout=math.inf, grace_period=5.0
        ) as workers:

            async def call(items: Chunk, start: int) -> Chunk:
                t0 = time.perf_counter()
                try:
                    ok, payload = await workers.run_sync(
                        _apply_in_worker, fn, items, start, label, kill_on_cancel=True, limiter=limiter
                    )
                except trio_parallel.BrokenWorkerError as exc:
                    last = start + len(items) - 1
                    which = f"item index {start}" if last == start else f"item indices {start}..{last}"
                    raise WorkerCrashedError(
                        f"a worker process of stage {label} died while running {which}: {exc}"
                    ) from exc
                except Exception as exc:
                    # Not the user's function (its errors come back as payload): the
                    # items or the results could not cross to or from the worker.
                    exc.add_note(
                        f"snake: stage {label} could not exchange item indices "
                        f"{start}..{start + len(items) - 1} with a worker process"
                    )
                    raise
                pacer.record(len(items), time.perf_counter() - t0)
                if ok:
                    return payload  # type: ignore[no-any-return]
                raise payload

            async def warm_up() -> None:
                # Start the worker processes while the source produces its first items.
                await workers.run_sync(_noop, kill_on_cancel=True, limiter=limiter)

            await self._core(inbox, fused, send, pacer, call).run([warm_up] * self.workers)
