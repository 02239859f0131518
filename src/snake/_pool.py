"""``WorkerPool``: worker processes kept warm across pipeline runs, within a ``with`` block."""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, final

import attrs
import trio

from ._util import check_int

if TYPE_CHECKING:
    from typing import Self

WorkerType = Literal["auto", "fork", "forkserver", "spawn"]
_WORKER_TYPES = ("auto", "fork", "forkserver", "spawn")
#: Seconds closing a pool waits for idle workers to exit before killing them.
_GRACE_S = 5.0
#: Pools inside their ``with`` block: ``snake.testing.assert_no_leaks`` excuses their idle workers.
open_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


def default_workers() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_worker_type(worker_type: str) -> str:
    # fork starts a worker in ~4 ms here against 100-300 ms for spawn/forkserver (which
    # re-import __main__); it is the default where it is reliable (Linux), spawn elsewhere.
    if worker_type != "auto":
        return worker_type
    return "fork" if sys.platform.startswith("linux") else "spawn"


def check_worker_type(method: str, worker_type: object) -> None:
    if worker_type not in _WORKER_TYPES:
        raise ValueError(f"{method}: worker_type={worker_type!r} must be one of {_WORKER_TYPES}")
    import multiprocessing

    resolved = resolve_worker_type(str(worker_type))
    if resolved not in multiprocessing.get_all_start_methods():
        raise ValueError(
            f"{method}: worker_type={worker_type!r} is not available on {sys.platform} "
            f"(available: {multiprocessing.get_all_start_methods()})"
        )


def new_context(worker_type: str) -> Any:
    """A trio-parallel worker context usable from any trio run (workers never idle out)."""
    import trio_parallel

    # WorkerContext has no public constructor besides the async open_worker_context(),
    # whose workers die with the trio run that opened it; a pool must outlive runs
    # (open_sync() starts one per iteration), like trio-parallel's own default context.
    return trio_parallel.WorkerContext._create(
        idle_timeout=math.inf,
        grace_period=_GRACE_S,
        worker_type=trio_parallel.WorkerType(resolve_worker_type(worker_type)),
    )


def shutdown_context(context: Any) -> None:
    """Stop every idle worker of ``context`` (blocking; kills those past the grace period)."""
    import trio_parallel

    try:
        context._worker_cache.shutdown(_GRACE_S)
    except trio_parallel.BrokenWorkerError as exc:
        # Some worker had to be killed or had died: it is gone either way.
        logging.getLogger("snake").warning("snake: WorkerPool shut down a worker by force: %s", exc)


@attrs.frozen
class WorkerPoolStatistics:
    """A snapshot of a :class:`WorkerPool`."""

    #: Worker processes alive and waiting for work.
    idle_workers: int
    #: Worker processes running a call now.
    running_workers: int


@final
class WorkerPool:
    """Worker processes that stay warm across runs of the pipelines that use them.

    ``par_map(fn, pool=pool)`` runs on the pool's workers instead of starting its
    own. Workers start on first use and live until the pool's block ends::

        with snake.WorkerPool(2) as pool:
            stream = source.par_map(decode, pool=pool)
            for epoch in range(10):
                for batch in stream:      # no worker start-up after the first epoch
                    ...

    ``async with`` works too. Any number of stages of one trio run may use a pool
    at the same time (the pipelines of a web service's requests, say): together
    they run at most ``workers`` calls at once, in turn as workers come free, and
    a stage cancelled mid-call gets its worker killed and replaced without
    disturbing the others. Stages in two trio runs at once (two ``open_sync()``
    loops in two threads) cannot share one pool: the second raises ``RuntimeError``.
    """

    def __init__(self, workers: int | None = None, *, worker_type: WorkerType = "auto") -> None:
        if workers is None:
            workers = default_workers()
        check_int("WorkerPool", "workers", workers, minimum=1)
        check_worker_type("WorkerPool", worker_type)
        self._workers = workers
        self._worker_type: WorkerType = worker_type
        self._context: Any = None
        self._closed = False
        self._lock = threading.Lock()
        #: The trio run whose stages use the pool now, how many stages, their limiter.
        self._run: trio.lowlevel.TrioToken | None = None
        self._users = 0
        self._limiter: trio.CapacityLimiter | None = None
        #: The context that close() found in use, for the last stage to stop.
        self._closing: Any = None

    @property
    def workers(self) -> int:
        """How many worker processes the pool runs at most."""
        return self._workers

    @property
    def worker_type(self) -> WorkerType:
        """How its workers start (``"auto"``: fork on Linux, spawn elsewhere)."""
        return self._worker_type

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._context is not None else "not entered"
        return f"WorkerPool(workers={self._workers}, worker_type={self._worker_type!r}) <{state}>"

    def __enter__(self) -> Self:
        if self._closed or self._context is not None:
            raise RuntimeError(f"{self!r} can be entered once")
        self._context = new_context(self._worker_type)
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
        # close() blocks until the workers exit: run it in a thread, and wait for it even if
        # cancelled meanwhile. From asyncio code (snake.aio) in asyncio's thread pool: trio's
        # to_thread needs a trio task.
        import sniffio

        if sniffio.current_async_library() == "asyncio":
            import asyncio

            from .aio import _wait_uncancelled

            closing = asyncio.ensure_future(asyncio.to_thread(self.close))
            try:
                await _wait_uncancelled(closing)
            finally:
                if closing.done():
                    closing.result()
            return
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.close)

    def close(self) -> None:
        """Stop every worker: they get 5 s in all to exit, then the rest are killed.

        Stages still running on the pool (closed from another task, say a web
        service's shutdown while a request runs) make no new call: their next one
        raises ``RuntimeError``; the workers of the calls in flight are stopped when
        the last such stage ends.
        """
        with self._lock:
            context, self._context = self._context, None
            self._closed = True
            if self._users and context is not None:
                self._closing = context  # the last stage to leave stops it again
        open_pools.discard(self)
        if context is not None:
            shutdown_context(context)

    def statistics(self) -> WorkerPoolStatistics:
        """How many workers are idle and running now."""
        if self._context is None:
            return WorkerPoolStatistics(0, 0)
        stats = self._context.statistics()
        return WorkerPoolStatistics(stats.idle_workers, stats.running_workers)

    # -- for par_map stages ------------------------------------------------------------
    @property
    def _in_use(self) -> bool:
        """Whether some running stage uses the pool now."""
        return self._users > 0

    def _acquire(self, label: str) -> tuple[Any, trio.CapacityLimiter]:
        """The worker context and the limiter every call on it holds (by this trio run)."""
        run = trio.lowlevel.current_trio_token()
        with self._lock:
            if self._context is None:
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
            return self._context, self._limiter

    def _release(self) -> Any:
        """A context the caller must shut down (the pool closed while stages ran), or None."""
        with self._lock:
            self._users -= 1
            if self._users:
                return None
            self._run = None
            self._limiter = None
            context, self._closing = self._closing, None
            return context
