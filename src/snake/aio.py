"""snake from asyncio: ``async with snake.aio.open(stream) as items: async for x in items:``.

Pipelines run in trio *guest mode* on the running asyncio loop
(``trio.lowlevel.start_guest_run``): trio's scheduler ticks as callbacks of the
asyncio loop, in the loop's own thread, and blocks for IO in a helper thread
of trio's only while it has nothing to run. trio allows one run per thread, so
every ``snake.aio.open()`` of a loop shares one *runtime*: a guest run whose
service nursery hosts one task per open pipeline. The runtime starts with the
first pipeline opened on the loop and stops, waited for, when the last one
closes: nothing of snake outlives the last ``async with`` block.

Chunks of items, never single items, cross from the trio side to the asyncio
consumer: the trio task that feeds a pipeline's hand-off and the asyncio task
that reads it run on the same thread, so a chunk crosses without a lock or a
thread switch. See docs/asyncio.md for the measured cost and the choice of
guest mode over a helper thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Generic, TypeVar, final

import attrs
import outcome
import trio

from ._run import Items, open_pipeline
from ._stats import PipelineStatistics
from ._stream import Stream
from ._sync import HANDOFF_CHUNKS, HANDOFF_LOW_WATER

__all__ = ["AsyncioItems", "RuntimeStatistics", "open", "statistics"]

T = TypeVar("T")


@attrs.frozen
class RuntimeStatistics:
    """A snapshot of the snake runtime of the running asyncio loop."""

    #: Whether a trio guest run hosts pipelines on this loop now.
    running: bool
    #: Pipelines opened with ``snake.aio.open()`` on this loop and not closed yet.
    pipelines: int
    #: trio tasks running those pipelines (their stages included); 0 when none is open.
    tasks: int


class _Pipe:
    """One pipeline's state, shared by its trio task and its asyncio consumer (one thread)."""

    def __init__(self, runtime: _Runtime, specs: list[Any]) -> None:
        self.runtime = runtime
        self.specs = specs
        self.chunks: deque[list[Any]] = deque()
        self.items: Items[Any] | None = None
        self.scope: trio.CancelScope | None = None
        self.cancel_requested = False
        #: The asyncio consumer's wait for a chunk, and the trio producer's wait for room.
        self.waiter: asyncio.Future[None] | None = None
        self.room: trio.Event | None = None
        self.ended = False  # the pipeline reached its end (not cancelled, not failed)
        self.finished = False  # the trio task is over
        self.error: BaseException | None = None
        self.error_delivered = False
        self.done: asyncio.Future[None] = runtime.loop.create_future()

    # -- trio side (runs in guest ticks, on the loop's thread) ------------------------------
    async def run(self) -> None:
        try:
            with trio.CancelScope() as scope:
                self.scope = scope
                if self.cancel_requested:
                    scope.cancel()
                async with open_pipeline(self.specs) as items:
                    self.items = items
                    while True:
                        chunk = await items.receive_chunk()
                        if chunk is None:
                            self.ended = True
                            break
                        while len(self.chunks) >= HANDOFF_CHUNKS:
                            self.room = trio.Event()
                            await self.room.wait()
                        self.chunks.append(chunk)
                        self._wake_consumer()
        except trio.Cancelled:
            # Only the runtime's own shutdown cancels from outside the scope above.
            self.error = RuntimeError("snake.aio: the runtime stopped while the pipeline was open")
            raise
        except BaseException as exc:
            # Carried to the consumer; raising it here would cancel every pipeline of the loop.
            self.error = exc
        finally:
            self.finish()

    def cancel(self) -> None:
        # Scheduled by the consumer through the runtime's token (trio's run_sync_soon).
        self.cancel_requested = True
        if self.scope is not None:
            self.scope.cancel()

    def finish(self) -> None:
        self.finished = True
        self._wake_consumer()
        if not self.done.done():
            self.done.set_result(None)

    def _wake_consumer(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- asyncio side ----------------------------------------------------------------------
    def wake_producer(self) -> None:
        room, self.room = self.room, None
        if room is not None and not self.finished:
            self.runtime.run_sync_soon(room.set)


class _Runtime:
    """The trio guest run of one asyncio loop, and the pipelines it hosts."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.users = 0
        self.stopping = False
        self.pipes: set[_Pipe] = set()
        self.token: trio.lowlevel.TrioToken | None = None
        self.nursery: trio.Nursery | None = None
        self.ready: asyncio.Future[None] = loop.create_future()
        self.stopped: asyncio.Future[None] = loop.create_future()
        self.failure: BaseException | None = None

    def start(self) -> None:
        # In an empty context: the runtime's tasks must not inherit the context variables
        # of whichever asyncio task happened to open the first pipeline.
        contextvars.Context().run(
            trio.lowlevel.start_guest_run,
            self._main,
            run_sync_soon_threadsafe=self.loop.call_soon_threadsafe,
            run_sync_soon_not_threadsafe=self.loop.call_soon,
            done_callback=self._done,
            # asyncio owns signal.set_wakeup_fd; trio must leave it alone.
            host_uses_signal_set_wakeup_fd=True,
        )

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self.ready.set_result(None)
            await trio.sleep_forever()

    def _done(self, result: outcome.Outcome[None]) -> None:
        # Called from the last guest tick, on the loop's thread, when the trio run is over.
        if isinstance(result, outcome.Error):
            self.failure = result.error
        self.token = None
        self.nursery = None
        for pipe in list(self.pipes):
            if not pipe.finished:
                pipe.error = pipe.error or RuntimeError(f"snake.aio: the trio runtime stopped: {result!r}")
                pipe.finish()
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(f"snake.aio: the trio runtime failed to start: {result!r}"))
        if not self.stopped.done():
            self.stopped.set_result(None)
        with _registry_lock:
            if _registry.get(self.loop) is self:
                del _registry[self.loop]

    def run_sync_soon(self, fn: Any, *args: Any) -> None:
        token = self.token
        if token is None:
            raise RuntimeError("snake.aio: the trio runtime is not running")
        token.run_sync_soon(fn, *args)

    def spawn(self, pipe: _Pipe) -> None:
        self.pipes.add(pipe)
        nursery = self.nursery
        assert nursery is not None
        self.run_sync_soon(nursery.start_soon, pipe.run)

    async def stop(self) -> None:
        """Stop the guest run (no pipeline left) and wait until it is over."""
        self.stopping = True
        nursery = self.nursery
        if nursery is not None:
            self.run_sync_soon(nursery.cancel_scope.cancel)
        await _wait_uncancelled(self.stopped)

    def task_count(self) -> int:
        nursery = self.nursery
        if nursery is None:
            return 0
        seen = 0
        stack = list(nursery.child_tasks)
        while stack:
            task = stack.pop()
            seen += 1
            for child in task.child_nurseries:
                stack.extend(child.child_tasks)
        return seen


_registry: dict[asyncio.AbstractEventLoop, _Runtime] = {}
_registry_lock = threading.Lock()


async def _acquire(loop: asyncio.AbstractEventLoop) -> _Runtime:
    """The running runtime of ``loop``, started if needed, with one more user counted."""
    while True:
        with _registry_lock:
            runtime = _registry.get(loop)
            if runtime is None:
                runtime = _Runtime(loop)
                _registry[loop] = runtime
                fresh = True
            else:
                fresh = False
        if fresh:
            try:
                runtime.start()
            except RuntimeError as exc:
                with _registry_lock:
                    del _registry[loop]
                raise RuntimeError(
                    "snake.aio: a trio run is already active in this thread (trio allows one per "
                    "thread); inside trio, use 'async with stream.open() as items:'"
                ) from exc
        if runtime.stopping:
            await asyncio.shield(runtime.stopped)
            continue
        runtime.users += 1
        try:
            await asyncio.shield(runtime.ready)
        except BaseException:
            await _release(runtime)
            raise
        return runtime


async def _release(runtime: _Runtime) -> None:
    runtime.users -= 1
    if runtime.users == 0 and not runtime.stopping:
        await runtime.stop()


async def _wait_uncancelled(fut: asyncio.Future[None]) -> None:
    """Wait for ``fut`` even if this task is cancelled meanwhile; re-raise the cancellation after."""
    cancelled: asyncio.CancelledError | None = None
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError as exc:
            if not fut.done():
                cancelled = exc
            elif fut.cancelled():
                raise
    if cancelled is not None:
        raise cancelled


@final
class AsyncioItems(AsyncIterator[T], Generic[T]):
    """The consumer's end of a pipeline opened with ``snake.aio.open()``: an async iterator.

    The twin of :class:`snake.Items` for asyncio: ``async for``, ``receive()``
    (raises ``trio.EndOfChannel`` after the last item), ``receive_chunk()``,
    ``statistics()`` and ``report()``. Buffered items are handed out without
    suspending; the consumer suspends only when it needs the next chunk.
    """

    __slots__ = ("_buf", "_pipe", "_pos", "_wait_s")

    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe
        self._buf: list[Any] = []
        self._pos = 0
        self._wait_s = 0.0

    async def _next_chunk(self) -> list[Any] | None:
        pipe = self._pipe
        while not pipe.chunks:
            if pipe.finished:
                self._raise_end()
                return None
            waiter = pipe.runtime.loop.create_future()
            pipe.waiter = waiter
            t0 = time.perf_counter()
            try:
                await waiter
            finally:
                pipe.waiter = None
                self._wait_s += time.perf_counter() - t0
        chunk = pipe.chunks.popleft()
        if pipe.room is not None and len(pipe.chunks) <= HANDOFF_LOW_WATER:
            pipe.wake_producer()
        return chunk

    def _raise_end(self) -> None:
        # At the end of a finished pipeline: its error, if any; else the end is the end.
        pipe = self._pipe
        if pipe.error is not None:
            pipe.error_delivered = True
            raise pipe.error
        if not pipe.ended:
            raise RuntimeError("snake.aio: the pipeline was closed; it has no more items")

    async def receive(self) -> T:
        """The next item; raises ``trio.EndOfChannel`` after the last one."""
        pos = self._pos
        if pos < len(self._buf):
            self._pos = pos + 1
            return self._buf[pos]  # type: ignore[no-any-return]
        chunk = await self._next_chunk()
        if chunk is None:
            raise trio.EndOfChannel
        self._buf = chunk
        self._pos = 1
        return chunk[0]  # type: ignore[no-any-return]

    async def __anext__(self) -> T:
        pos = self._pos
        if pos < len(self._buf):
            self._pos = pos + 1
            return self._buf[pos]  # type: ignore[no-any-return]
        chunk = await self._next_chunk()
        if chunk is None:
            raise StopAsyncIteration
        self._buf = chunk
        self._pos = 1
        return chunk[0]  # type: ignore[no-any-return]

    async def receive_chunk(self) -> list[T] | None:
        """The items of the next chunk that crossed from trio (the rest of the current one
        first), or ``None`` at the end. For consumers that handle items in bulk."""
        if self._pos < len(self._buf):
            out = self._buf[self._pos :]
            self._buf, self._pos = [], 0
            return out
        return await self._next_chunk()

    def statistics(self) -> PipelineStatistics:
        """Per-stage counters of this run so far (see ``snake.Items.statistics()``); the
        consumer's wait is the time this asyncio task waited for chunks."""
        items = self._pipe.items
        if items is None:
            return PipelineStatistics(())
        # The consumer is this asyncio task, not the trio task feeding the hand-off.
        return attrs.evolve(items.statistics(), consumer_wait_s=self._wait_s)

    def report(self) -> str:
        """A short text naming the stage that limits throughput and why (see
        ``snake.Items.report()``), with the time this asyncio task waited for items."""
        from ._report import report

        return report(self.statistics())


@final
class _Open(AbstractAsyncContextManager[AsyncioItems[T]]):
    __slots__ = ("_entered", "_pipe", "_specs")

    def __init__(self, specs: list[Any]) -> None:
        self._specs = specs
        self._entered = False
        self._pipe: _Pipe | None = None

    async def __aenter__(self) -> AsyncioItems[T]:
        if self._entered:
            raise RuntimeError("snake.aio.open(...) can be entered once; call snake.aio.open() again")
        self._entered = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "snake.aio.open() needs a running asyncio event loop; "
                "under trio use 'async with stream.open() as items:'"
            ) from None
        runtime = await _acquire(loop)
        pipe = _Pipe(runtime, self._specs)
        try:
            runtime.spawn(pipe)
        except BaseException:
            runtime.pipes.discard(pipe)
            await _release(runtime)
            raise
        self._pipe = pipe
        return AsyncioItems(pipe)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        pipe = self._pipe
        assert pipe is not None
        try:
            if not pipe.finished:
                pipe.runtime.run_sync_soon(pipe.cancel)
            await _wait_uncancelled(pipe.done)
        finally:
            pipe.runtime.pipes.discard(pipe)
            await _release(pipe.runtime)
        if exc is None and pipe.error is not None and not pipe.error_delivered:
            # The pipeline failed, and the block ended before reading that far.
            pipe.error_delivered = True
            raise pipe.error


def open(stream: Stream[T], /) -> AbstractAsyncContextManager[AsyncioItems[T]]:
    """Open ``stream`` from asyncio: ``async with snake.aio.open(stream) as items:``.

    The pipeline runs on the running asyncio loop, in trio guest mode. Leaving the
    block, for whatever reason (the end, ``break``, an exception, the task being
    cancelled), cancels the pipeline and waits until every task and worker process of
    it has stopped. A stage's exception comes out of ``async for`` (or from the end of
    the block if the loop stopped reading first) as the original exception, with
    snake's note naming the stage and the item.
    """
    if not isinstance(stream, Stream):
        raise TypeError(f"snake.aio.open: stream={stream!r} must be a snake.Stream")
    return _Open(list(stream._specs))


def statistics() -> RuntimeStatistics:
    """The snake runtime of the running asyncio loop: running or not, open pipelines, tasks."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError("snake.aio.statistics() needs a running asyncio event loop") from None
    with _registry_lock:
        runtime = _registry.get(loop)
    if runtime is None:
        return RuntimeStatistics(running=False, pipelines=0, tasks=0)
    return RuntimeStatistics(
        running=runtime.token is not None,
        pipelines=len(runtime.pipes),
        tasks=runtime.task_count(),
    )
