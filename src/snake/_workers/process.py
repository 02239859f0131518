"""The process backend: ``par_map(fn)`` on worker processes (``procs.py``).

Per stage run it owns: a shared-memory name prefix, the progress slots (each call's
worker writes the index of the item it starts, so that a crash or a timeout names
the culprit), the segments that bring large arrays back (``shm.py``), and, when a
``batch()`` follows, the batch slabs the workers write into (``slabs``). All of
it is released in :meth:`ProcessBackend.aclose`, however the run ends, without
waiting for the garbage collector; the workers that served the run unmap its
segments there too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .._engine.util import spawn
from . import procs, shm
from .backend import Backend, Chunk, Failure, Lost, Running
from .remote import apply_in_worker
from .slabs import SlotBatcher

if TYPE_CHECKING:
    from .._engine.spec import Fused


class WorkerSource(Protocol):
    """Where a stage's calls get their workers: the process-wide cache, or a WorkerPool."""

    mode: str

    async def get(self) -> procs.ProcWorker:
        """An idle worker, or a new one."""
        ...

    def give(self, worker: procs.ProcWorker) -> None: ...

    def claim(self, prefix: str) -> list[procs.ProcWorker]:
        """Take out the idle workers that served run ``prefix``."""
        ...


class CacheSource:
    """The process-wide cache, for workers started ``mode``."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    async def get(self) -> procs.ProcWorker:
        worker = procs.cache.take(self.mode)
        if worker is None:
            worker = await procs.start_worker(self.mode)
        return worker

    def give(self, worker: procs.ProcWorker) -> None:
        procs.cache.give(worker)

    def claim(self, prefix: str) -> list[procs.ProcWorker]:
        return procs.cache.claim(self.mode, prefix)


class ProcessBackend(Backend):
    """Calls on worker processes from ``source``, at most ``workers`` at a time.

    ``shared``: a WorkerPool's limiter, held by every call of every stage of this
    trio run on that pool, so that together they keep to its number of workers.
    """

    kind = "process"

    def __init__(
        self,
        fn: Callable[[Any], Any],
        workers: int,
        label: str,
        skip: bool,
        source: WorkerSource,
        *,
        slabs: bool,
        shared: trio.CapacityLimiter | None = None,
        closed: Callable[[], bool] = lambda: False,
    ) -> None:
        self.fn = fn
        self.label = label
        self.skip = skip
        self.source = source
        self.shared = shared
        self.closed = closed
        self.limiter = trio.CapacityLimiter(workers)
        self.prefix = shm.new_prefix() if shm.available() else None
        self.slots: shm.Progress | None = None
        self.segments: shm.Segments | None = None
        self.batcher: SlotBatcher | None = None
        self.slabs = slabs
        if self.prefix is not None:
            shm.cleanup_stale()
            self.slots = shm.Progress(self.prefix, workers)
            self.segments = shm.Segments(self.prefix)

    def fuse(self, fused: Fused) -> Fused:
        if self.slabs and self.prefix is not None:
            # The plan put a batch() with the default collate right after: the workers
            # write the batch rows.
            self.batcher = SlotBatcher(fused.ops[0], self.prefix)
            return type(fused)([self.batcher, *fused.ops[1:]])
        return fused

    # -- workers -----------------------------------------------------------------------
    async def warm_up(self) -> None:
        # Let the stages before this one start their work first (their waits then
        # overlap the workers' start).
        for _ in range(3):
            await trio.lowlevel.checkpoint()
        async with self.shared if self.shared is not None else _NoLimit(), self.limiter:
            worker = await self.source.get()
            self.source.give(worker)

    # -- calls -------------------------------------------------------------------------
    async def run(self, items: Chunk, start: int, running: Running) -> tuple[Chunk, list[Failure]]:
        if self.shared is None:
            async with self.limiter:
                return await self._call(items, start, running)
        # Waiting for a turn on a shared pool counts neither against the timeout nor
        # in the measured time per item: the caller's clock starts in _call.
        async with self.shared, self.limiter:
            if self.closed():
                raise RuntimeError(f"stage {self.label}: the WorkerPool was closed while the stage ran")
            return await self._call(items, start, running)

    async def _call(self, items: Chunk, start: int, running: Running) -> tuple[Chunk, list[Failure]]:
        running.begin()
        while True:
            worker = await self.source.get()
            try:
                return await self._call_on(worker, items, start, running)
            except procs.WorkerRetired:
                continue  # it had retired as the call came: the call did not run
            except procs.WorkerDied as exc:
                raise Lost(exc).blame(running) from exc
            finally:
                self.source.give(worker)  # a dead one is only let go

    async def _call_on(
        self, worker: procs.ProcWorker, items: Chunk, start: int, running: Running
    ) -> tuple[Chunk, list[Failure]]:
        slots, segments, batcher = self.slots, self.segments, self.batcher
        slot = slots.take() if slots is not None else -1
        running.slot = slot
        running.worker = worker
        where = (slots.path, slot) if slots is not None else None
        lent = segments.lend(len(items)) if segments is not None else []
        dests = batcher.dests(start, len(items)) if batcher is not None else None
        if self.prefix is not None:
            worker.runs.add(self.prefix)
        try:
            ok, payload, failures = await worker.call(
                apply_in_worker, self.fn, items, start, self.label, self.skip, self.prefix, where, lent, dests
            )
        except (procs.WorkerDied, procs.WorkerRetired, trio.Cancelled, KeyboardInterrupt):
            raise
        except Exception as exc:
            # Not the user's function (its errors come back as payload): the items or the
            # results could not cross to or from the worker.
            exc.add_note(
                f"snake: stage {self.label} could not exchange item indices "
                f"{start}..{start + len(items) - 1} with a worker process"
            )
            raise
        finally:
            if slots is not None:
                index = slots.read(slot)
                running.index = index if start <= index < start + len(items) else -1
                slots.give_back(slot)
            if segments is not None:
                segments.returned(lent)
        if not ok:
            raise payload
        if segments is not None:
            payload = segments.import_(payload)
        return payload, failures

    def progress(self, running: Running) -> None:
        if self.slots is not None and running.slot >= 0:
            index = self.slots.read(running.slot)
            if running.start <= index < running.start + running.count:
                running.index = index

    async def stack(self, running: Running) -> str:
        worker = running.worker
        if not isinstance(worker, procs.ProcWorker):
            return "(not started)"
        text = await trio.to_thread.run_sync(worker.stack)
        return f"worker process {worker.pid}:\n{text}"

    # -- the end -----------------------------------------------------------------------
    async def aclose(self) -> None:
        prefix = self.prefix
        if prefix is None:
            return
        self.prefix = None
        # Slabs and segments go to the process's cache (renamed), then the run's other
        # files are removed.
        if self.segments is not None:
            self.segments.close()
        if self.batcher is not None:
            self.batcher.close()
        shm.cleanup(prefix)
        if self.slots is not None:
            self.slots.close()
        with trio.CancelScope(shield=True):
            # The idle workers that served this run unmap its segments now, not at their
            # next call (which may never come). On a shared pool this takes a turn like a
            # call, so that no other stage finds the pool short of workers meanwhile.
            async with self.shared if self.shared is not None else _NoLimit(), trio.open_nursery() as nursery:
                for worker in self.source.claim(prefix):
                    spawn(nursery, self._end_run, worker, prefix)

    async def _end_run(self, worker: procs.ProcWorker, prefix: str) -> None:
        try:
            with trio.move_on_after(5):
                await worker.call(shm.worker_end_run, prefix)
                worker.runs.discard(prefix)
        except (procs.WorkerDied, procs.WorkerRetired):
            pass
        finally:
            self.source.give(worker)


class _NoLimit:
    """An ``async with`` that holds nothing (a stage with its own workers)."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None
