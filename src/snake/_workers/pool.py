"""``WorkerPool``: worker processes of one's own, kept warm within a ``with`` block;
and how worker processes start (``worker_type``)."""

from __future__ import annotations

import collections
import math
import os
import sys
import threading
import weakref
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, final

import attrs
import trio

from .._engine import tasks
from .._engine.util import check_int
from . import procs

if TYPE_CHECKING:
    from typing import Self

WorkerType = Literal["auto", "forkserver", "spawn", "fork"]
_WORKER_TYPES = ("auto", "forkserver", "spawn", "fork")
PoolBackend = Literal["process", "ray"]
_POOL_BACKENDS = ("process", "ray")
#: Pools inside their ``with`` block: ``snake.testing.assert_no_leaks`` excuses their idle workers.
open_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


def default_workers() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_worker_type(worker_type: str) -> str:
    """``"auto"`` is ``"forkserver"``: workers forked from snake's single-threaded launcher."""
    return "forkserver" if worker_type == "auto" else worker_type


def check_worker_type(method: str, worker_type: object, *, processes: bool = True) -> None:
    """Refuse an unknown ``worker_type``; and, where worker processes will run
    (``processes``), a platform without ``os.fork``."""
    if worker_type not in _WORKER_TYPES:
        raise ValueError(f"{method}: worker_type={worker_type!r} must be one of {_WORKER_TYPES}")
    if processes and not hasattr(os, "fork"):
        raise ValueError(f"{method}: worker processes need os.fork, which {sys.platform} does not have")


@attrs.frozen
class WorkerPoolStatistics:
    """A frozen snapshot (an ``attrs`` class, compared by value) of a :class:`WorkerPool`,
    returned by :meth:`WorkerPool.statistics`.
    """

    #: Worker processes alive and waiting for work.
    idle_workers: int
    #: Worker processes running a call now.
    running_workers: int
    #: Process ids of the pool's live workers, idle and running; not shown in the ``repr``.
    pids: frozenset[int] = attrs.field(default=frozenset(), repr=False)


@final
class WorkerPool:
    """Worker processes of your own, alive across the runs of the pipelines that use them.

    Without a pool, ``par_map`` stages take their workers from a process-wide cache,
    where an idle worker exits after ``SNAKE_WORKER_IDLE_TIMEOUT`` seconds (60 by
    default; see the worker processes of :meth:`Stream.par_map`).
    ``par_map(fn, pool=pool)`` runs on the pool's workers instead: they never idle
    out, no stage outside the pool uses them, and they stop when the pool's block
    ends::

        with snake.WorkerPool(2) as pool:
            stream = source.par_map(decode, pool=pool)
            for epoch in range(10):
                for batch in stream:      # the same worker processes every epoch
                    ...

    - ``workers``: the most worker processes the pool runs; ``None`` means the
      number of CPUs this process may run on. A ``par_map`` on the pool may ask for
      fewer (``workers=`` at most the pool's), and runs at most that many calls at
      once.
    - ``worker_type``: how the workers start, as for :meth:`Stream.par_map`:
      ``"auto"`` (forked from snake's launcher), ``"spawn"`` or ``"fork"``.

    ``with pool:`` or ``async with pool:`` opens the pool. The workers start when a
    stage first uses them (the stage's no-op start-up calls), and then never time
    out. Leaving the block, or :meth:`close`, stops them: the idle workers are
    killed and waited for; a worker busy with a call of a stage still running stops
    when that call ends. ``async with`` does this in a thread, shielded from
    cancellation, under trio and under asyncio (:mod:`snake.aio`) alike. A worker
    that died or was killed for a timeout is replaced by a new one when a call
    needs it. ``repr(pool)`` is ``WorkerPool(workers=2, worker_type='auto')
    <open>``, with ``<not entered>``, ``<open>`` or ``<closed>``.

    A pool serves the stages of one trio run at a time: several stages of one
    pipeline, or the pipelines of many requests in a web service. Together they run
    at most ``workers`` calls at once, taking turns as workers come free; waiting
    for a turn counts neither against ``timeout`` nor in the measured time per item.
    A stage cancelled mid-call has its worker killed and replaced; the others go
    on. A pool works with every way of running a stream, ``open_sync()`` and
    ``for`` included, although each of those runs its own ``trio.run`` in a new
    helper thread.

    Raises, when called: ``TypeError: WorkerPool: workers=... must be an int``,
    ``ValueError: WorkerPool: workers=... must be >= 1``, ``ValueError: WorkerPool:
    worker_type=... must be one of ('auto', 'forkserver', 'spawn', 'fork')``,
    ``ValueError: WorkerPool: worker processes need os.fork, which PLATFORM does
    not have``.

    Other errors, when the pool is entered a second time (also after it closed),
    and when a stage that uses it starts or calls it:

    - ``RuntimeError: WorkerPool(...) <...> can be entered once``;
    - ``RuntimeError: stage #i STAGE: WorkerPool(...) <not entered> is not open;
      run the pipeline inside 'with pool:'`` (``<closed>`` after the block);
    - ``RuntimeError: stage #i STAGE: WorkerPool(...) <open> is in use by a
      pipeline of another trio run (another thread or open_sync() loop); only the
      stages of one trio run can share a pool``;
    - ``RuntimeError: WorkerPool(...) <closed> was closed while a stage ran on it``.

    ``backend="ray"`` keeps Ray actors instead, started with ``ray_options``, for
    stages written ``par_map(fn, backend="ray", pool=pool)``; leaving the block
    kills them (:doc:`/scaling`). ``WorkerPool(backend="ray")`` also raises the
    ``ImportError`` and ``ray_options`` errors of :meth:`Stream.par_map`, and
    ``ValueError`` for a ``backend`` other than ``"process"`` or ``"ray"``.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        worker_type: WorkerType = "auto",
        backend: PoolBackend = "process",
        ray_options: Mapping[str, Any] | None = None,
    ) -> None:
        if workers is None:
            workers = default_workers()
        workers = check_int("WorkerPool", "workers", workers, minimum=1)
        if backend not in _POOL_BACKENDS:
            raise ValueError(f"WorkerPool: backend={backend!r} must be one of {_POOL_BACKENDS}")
        check_worker_type("WorkerPool", worker_type, processes=backend == "process")
        self._backend: PoolBackend = backend
        #: A Ray pool's actors (``ray.Actors``), made when a stage first uses it.
        self._ray: Any = None
        self._ray_options: dict[str, Any] = {}
        if backend == "ray":
            from . import ray

            if worker_type != "auto":
                raise ValueError(f'WorkerPool: worker_type={worker_type!r} only applies to backend="process"')
            ray.need_ray("WorkerPool")
            self._ray_options = ray.check_options("WorkerPool", {} if ray_options is None else ray_options)
        elif ray_options is not None:
            raise ValueError(f'WorkerPool: ray_options={ray_options!r} only applies to backend="ray"')
        self._workers = workers
        self._worker_type: WorkerType = worker_type
        #: Internal, for ``par_map`` stages (their worker source): how the workers start,
        #: ``worker_type`` with ``"auto"`` resolved (``"forkserver"``).
        self.mode = resolve_worker_type(worker_type)
        self._entered = False
        self._closed = False
        self._lock = threading.Lock()
        self._idle: collections.deque[procs.ProcWorker] = collections.deque()
        self._busy: set[procs.ProcWorker] = set()
        #: Workers being started, and an event set whenever a worker comes back.
        self._starting = 0
        self._freed = trio.Event()
        #: The trio run whose stages use the pool now, how many stages, their limiter.
        self._run: trio.lowlevel.TrioToken | None = None
        self._users = 0
        self._limiter: trio.CapacityLimiter | None = None

    @property
    def workers(self) -> int:
        """The most worker processes the pool runs (the ``workers`` argument, resolved)."""
        return self._workers

    @property
    def backend(self) -> PoolBackend:
        """Where its workers run: ``"process"`` (worker processes) or ``"ray"`` (Ray actors)."""
        return self._backend

    @property
    def worker_type(self) -> WorkerType:
        """How its workers start: the ``worker_type`` argument (``"auto"``: forked from
        snake's launcher).
        """
        return self._worker_type

    @property
    def _open(self) -> bool:
        return self._entered and not self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._entered else "not entered"
        kind = "backend='ray'" if self._backend == "ray" else f"worker_type={self._worker_type!r}"
        return f"WorkerPool(workers={self._workers}, {kind}) <{state}>"

    def __enter__(self) -> Self:
        if self._closed or self._entered:
            raise RuntimeError(f"{self!r} can be entered once")
        self._entered = True
        open_pools.add(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # close() blocks until the workers are gone: run it in a thread, and wait for it
        # even if cancelled meanwhile. From asyncio code (snake.aio) in asyncio's thread
        # pool: trio's to_thread needs a trio task.
        import sniffio

        if sniffio.current_async_library() == "asyncio":
            import asyncio


            closing = asyncio.ensure_future(asyncio.to_thread(self.close))
            try:
                await tasks.wait_uncancelled(closing)
            finally:
                if closing.done():
                    closing.result()
            return
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.close)

    def close(self) -> None:
        """Stop every idle worker now; leaving the ``with`` block calls it.

        Stages still running on the pool (closed from another task, say a web service's
        shutdown while a request runs) make no new call: their next one raises
        ``RuntimeError``; the workers of the calls in flight stop as those calls end.
        """
        with self._lock:
            self._closed = True
            idle, self._idle = list(self._idle), collections.deque()
        open_pools.discard(self)
        for worker in idle:
            worker.discard()
        if self._ray is not None:
            self._ray.close()

    def statistics(self) -> WorkerPoolStatistics:
        """How many workers are idle and running now, and their pids (for worker
        processes); none before the block and after it.
        """
        if self._backend == "ray":
            if self._ray is None:
                return WorkerPoolStatistics(0, 0)
            return WorkerPoolStatistics(*self._ray.counts())
        with self._lock:
            idle = [w.pid for w in self._idle if not w.dead]
            return WorkerPoolStatistics(len(idle), len(self._busy), frozenset([*idle, *(w.pid for w in self._busy)]))

    def _idle_pids(self) -> set[int]:
        if self._ray is not None:
            return set(self._ray.idle_pids())
        with self._lock:
            return {w.pid for w in self._idle if not w.dead}

    def _ray_actors(self) -> Any:
        """A Ray pool's actors (``ray.Actors``), kept across the runs of its stages."""
        with self._lock:
            if self._ray is None:
                from .ray import Actors

                self._ray = Actors(self._workers, self._ray_options, repr(self))
            return self._ray

    # -- a worker source for par_map stages (see process.WorkerSource) -----------------
    async def get(self) -> procs.ProcWorker:
        """Internal, for ``par_map`` stages (their worker source): an idle worker of the
        pool, or a new one while it has fewer than ``workers``; else wait for one to
        come back.
        """
        while True:
            with self._lock:
                if self._closed:
                    raise RuntimeError(f"{self!r} was closed while a stage ran on it")
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive():
                        self._busy.add(worker)
                        return worker
                if len(self._busy) + self._starting < self._workers:
                    self._starting += 1
                    break
                freed = self._freed
            await freed.wait()
        try:
            worker = await trio.to_thread.run_sync(procs.ProcWorker, self.mode, math.inf)
        finally:
            with self._lock:
                self._starting -= 1
        with self._lock:
            self._busy.add(worker)
        return worker

    def give(self, worker: procs.ProcWorker) -> None:
        """Internal, for ``par_map`` stages (their worker source): take back a worker that
        :meth:`get` handed out, keeping it unless it died or the pool closed.
        """
        with self._lock:
            self._busy.discard(worker)
            freed, self._freed = self._freed, trio.Event()
            keep = not self._closed and not worker.dead
            if keep:
                self._idle.append(worker)
        freed.set()
        if not keep:
            worker.discard()

    def claim(self, prefix: str) -> list[procs.ProcWorker]:
        """Internal, for ``par_map`` stages (their worker source): take out the idle
        workers that served the stage run ``prefix``, to unmap its shared memory."""
        with self._lock:
            mine = [w for w in self._idle if prefix in w.runs]
            for w in mine:
                self._idle.remove(w)
                self._busy.add(w)
            return mine

    # -- for par_map stages ------------------------------------------------------------
    @property
    def _in_use(self) -> bool:
        """Whether some running stage uses the pool now."""
        return self._users > 0

    def _acquire(self, label: str) -> trio.CapacityLimiter:
        """The limiter every call on the pool holds (by this trio run)."""
        run = trio.lowlevel.current_trio_token()
        with self._lock:
            if not self._open:
                raise RuntimeError(
                    f"stage {label}: {self!r} is not open; run the pipeline inside 'with pool:'"
                )
            if self._users and self._run is not run:
                raise RuntimeError(
                    f"stage {label}: {self!r} is in use by a pipeline of another trio run (another "
                    "thread or open_sync() loop); only the stages of one trio run can share a pool"
                )
            if not self._users:
                self._run = run
                self._limiter = trio.CapacityLimiter(self._workers)
            self._users += 1
            assert self._limiter is not None
            return self._limiter

    def _release(self) -> None:
        with self._lock:
            self._users -= 1
            if not self._users:
                self._run = None
                self._limiter = None
