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
import contextlib
import contextvars
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, TypeVar, final

import attrs
import outcome
import trio

from .._engine import checkpoint, tasks
from .._engine.handle import ChunkReader
from .._engine.run import Items, open_pipeline, stage_labels
from .._engine.stats import PipelineStatistics
from .sync import HANDOFF_CHUNKS, HANDOFF_LOW_WATER

__all__ = ["AsyncioItems", "EndOfStream", "RuntimeStatistics", "open_specs", "statistics"]

T = TypeVar("T")

#: Seconds a later ``snake.aio.open()`` waits for the pipelines of a loop that was closed
#: with them open to stop (see ``_Runtime.finish_stranded``).
_STRANDED_WAIT_S = 10.0


class EndOfStream(trio.EndOfChannel):
    """Raised by :meth:`AsyncioItems.receive` after the last item.

    asyncio code catches ``snake.aio.EndOfStream`` (as anyio's streams raise
    ``anyio.EndOfStream``) and needs no trio import. A subclass of
    ``trio.EndOfChannel``, so ``except trio.EndOfChannel`` catches it too; not
    ``StopAsyncIteration``, which an async generator awaiting ``receive()`` would turn
    into a ``RuntimeError``. ``async for`` just ends.
    """


@attrs.frozen
class RuntimeStatistics:
    """A frozen snapshot (an ``attrs`` class) of the snake runtime of the running asyncio
    loop, returned by :func:`snake.aio.statistics`.
    """

    #: Whether a trio guest run hosts pipelines on this loop now.
    running: bool
    #: Pipelines opened with ``snake.aio.open()`` on this loop and not closed yet.
    pipelines: int
    #: trio tasks running those pipelines (their stages included); 0 when none is open.
    tasks: int


class _Pipe:
    """One pipeline's state, shared by its trio task and its asyncio consumer (one thread)."""

    def __init__(
        self, runtime: _Runtime, specs: list[Any], notes: tuple[str, ...], state: dict[str, Any] | None
    ) -> None:
        self.runtime = runtime
        self.specs = specs
        self.notes = notes
        self.state = state
        #: Items moved into the consumers' buffer in the epoch (for checkpoints).
        self.taken = int(state["received"]) if state is not None else 0
        #: The consumers' handle, weakly: it refers to this pipe.
        self.reader: weakref.ref[AsyncioItems[Any]] | None = None
        self.chunks: deque[list[Any]] = deque()
        self.items: Items[Any] | None = None
        self.scope: trio.CancelScope | None = None
        self.cancel_requested = False
        #: The asyncio consumers' waits for a chunk (several tasks may read one pipeline),
        #: and the trio producer's wait for room.
        self.waiters: list[asyncio.Future[None]] = []
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
                async with open_pipeline(self.specs, self.notes, self.state) as items:
                    self.items = items
                    items._ctx.delivered = self.delivered
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
            # Only the runtime's own end cancels from outside the scope above (a failure such
            # as a KeyboardInterrupt, or a loop closed with the pipeline open): the runtime's
            # done callback, which knows the cause, finishes the pipeline.
            raise
        except BaseException as exc:
            # Carried to the consumer; raising it here would cancel every pipeline of the loop.
            self.error = exc
            self.finish()
        else:
            self.finish()

    def delivered(self) -> int:
        """Items the asyncio consumers have received."""
        reader = self.reader() if self.reader is not None else None
        return self.taken - (len(reader._buf) - reader._pos if reader is not None else 0)

    def cancel(self) -> None:
        # Scheduled by the consumer through the runtime's token (trio's run_sync_soon).
        self.cancel_requested = True
        if self.scope is not None:
            self.scope.cancel()

    def finish(self) -> None:
        self.finished = True
        self._wake_consumer()
        _resolve(self.done)

    def _wake_consumer(self) -> None:
        waiters = self.waiters
        if waiters:
            self.waiters = []
            for waiter in waiters:
                _resolve(waiter)

    # -- asyncio side ----------------------------------------------------------------------
    def wake_producer(self) -> None:
        room, self.room = self.room, None
        if room is not None and not self.finished:
            self.runtime.run_sync_soon(room.set)


class _Runtime:
    """The trio guest run of one asyncio loop, and the pipelines it hosts."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.thread = threading.current_thread()
        self.users = 0
        self.stopping = False
        self.pipes: set[_Pipe] = set()
        self.token: trio.lowlevel.TrioToken | None = None
        self.nursery: trio.Nursery | None = None
        self.ready: asyncio.Future[None] = loop.create_future()
        self.stopped: asyncio.Future[None] = loop.create_future()
        self.over = False  # the trio run is over
        self.failure: BaseException | None = None
        # The guest run's next tick, handed to the loop and not run yet (trio has one at a
        # time); kept so that the run can still be finished if the loop is closed under it.
        self._tick_lock = threading.Lock()
        self._next_tick: Callable[[], object] | None = None
        self._tick_ready = threading.Event()
        self._stranded = False  # the loop closed: ticks run in finish_stranded()

    def start(self) -> None:
        # In an empty context: the runtime's tasks must not inherit the context variables
        # of whichever asyncio task happened to open the first pipeline.
        contextvars.Context().run(
            trio.lowlevel.start_guest_run,
            self._main,
            run_sync_soon_threadsafe=self._soon_threadsafe,
            run_sync_soon_not_threadsafe=self._soon,
            done_callback=self._done,
            # asyncio owns signal.set_wakeup_fd; trio must leave it alone.
            host_uses_signal_set_wakeup_fd=True,
        )

    # -- the host of the guest run: the loop, or finish_stranded() once the loop is closed --
    def _soon(self, tick: Callable[[], object]) -> None:
        self._schedule(tick, self.loop.call_soon)

    def _soon_threadsafe(self, tick: Callable[[], object]) -> None:
        # From trio's IO thread when its wait for IO is over.
        self._schedule(tick, self.loop.call_soon_threadsafe)

    def _schedule(self, tick: Callable[[], object], call_soon: Callable[..., object]) -> None:
        with self._tick_lock:
            self._next_tick = tick
            if not self._stranded:
                try:
                    call_soon(self._run_tick, tick)
                    return
                except RuntimeError:  # the loop is closed
                    pass
            self._tick_ready.set()

    def _run_tick(self, tick: Callable[[], object]) -> None:
        with self._tick_lock:
            self._next_tick = None
        tick()

    def finish_stranded(self, timeout: float) -> bool:
        """Finish the trio run of a loop that was closed with pipelines open, here and now.

        Called in the runtime's own thread (trio's run state is per thread): cancels every
        pipeline (their worker processes stop) and runs the guest's remaining ticks in
        this thread. True if the run is over within ``timeout`` seconds.
        """
        with self._tick_lock:
            self._stranded = True
        self.stopping = True
        token, nursery = self.token, self.nursery
        if token is not None and nursery is not None:
            # Wakes trio's IO wait; if _main has not run yet, it sees `stopping` itself.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(nursery.cancel_scope.cancel)
        deadline = time.monotonic() + timeout
        while not self.over:
            with self._tick_lock:
                tick, self._next_tick = self._next_tick, None
                if tick is None:
                    self._tick_ready.clear()
            if tick is not None:
                tick()
            elif not self._tick_ready.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    # -- the trio side ---------------------------------------------------------------------
    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                if self.stopping:  # stop() came before this task first ran
                    nursery.cancel_scope.cancel()
                _resolve(self.ready)
                await trio.sleep_forever()
        finally:
            self.nursery = None

    def _done(self, result: outcome.Outcome[None]) -> None:
        # Called from the last guest tick, on the loop's thread, when the trio run is over.
        self.over = True
        if isinstance(result, outcome.Error):
            self.failure = result.error
        self.token = None
        self.nursery = None
        for pipe in list(self.pipes):
            if not pipe.finished:
                pipe.error = pipe.error or _stopped_error(self.failure, "stopped while the pipeline was open")
                pipe.finish()
        if not self.ready.done():
            _resolve(self.ready, _stopped_error(self.failure, "failed to start"))
        _resolve(self.stopped)
        with _registry_lock:
            if _registry.get(self.loop) is self:
                del _registry[self.loop]

    def run_sync_soon(self, fn: Any, *args: Any) -> None:
        token = self.token
        if token is None:
            raise RuntimeError("snake.aio: the trio runtime is not running")
        with contextlib.suppress(trio.RunFinishedError):  # ending: _done() finishes every pipeline
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
        # Else _main has not run yet, or is over: it cancels its nursery when it sees `stopping`.
        await tasks.wait_uncancelled(self.stopped)

    def task_count(self) -> int:
        nursery = self.nursery
        if nursery is None:
            return 0
        return sum(1 for _ in tasks.walk(nursery.child_tasks))


def _resolve(fut: asyncio.Future[None], error: BaseException | None = None) -> None:
    """Complete ``fut`` unless it is done; on a closed loop its callbacks cannot run (its
    tasks are gone), but it is done all the same."""
    if fut.done():
        return
    try:
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)
    except RuntimeError:  # the loop is closed; the state is set before the callbacks fail
        pass


def _stopped_error(failure: BaseException | None, what: str) -> BaseException:
    """What a consumer gets when the runtime ended under it: a KeyboardInterrupt (or another
    BaseException) that ended the trio run as itself, else a RuntimeError naming the cause."""
    cause = failure
    while isinstance(cause, BaseExceptionGroup) and len(cause.exceptions) == 1:
        cause = cause.exceptions[0]
    if cause is not None and not isinstance(cause, Exception):
        return cause
    error = RuntimeError(f"snake.aio: the trio runtime {what}" + (f": {cause!r}" if cause else ""))
    error.__cause__ = cause
    return error


_registry: dict[asyncio.AbstractEventLoop, _Runtime] = {}
_registry_lock = threading.Lock()
#: Runtimes of loops closed with pipelines open, by thread: the next ``snake.aio.open()`` in
#: that thread finishes them (only there: trio's run state is per thread).
_stranded: weakref.WeakKeyDictionary[threading.Thread, _Runtime] = weakref.WeakKeyDictionary()


def _finish_stranded() -> None:
    """Move the runtimes of closed loops out of the registry, and finish this thread's."""
    here = threading.current_thread()
    with _registry_lock:
        for loop, runtime in list(_registry.items()):
            if loop.is_closed():
                del _registry[loop]
                _stranded[runtime.thread] = runtime
        mine = _stranded.pop(here) if here in _stranded else None
    if mine is not None and not mine.finish_stranded(_STRANDED_WAIT_S):
        with _registry_lock:
            _stranded[here] = mine
        raise RuntimeError(
            f"snake.aio: the asyncio loop {mine.loop!r} of this thread was closed while "
            f"pipelines were open, and their trio run did not stop within {_STRANDED_WAIT_S:g} s; "
            "close every snake.aio.open() block before closing its loop (asyncio.run() does: "
            "it cancels the remaining tasks first)"
        )


async def _acquire(loop: asyncio.AbstractEventLoop) -> _Runtime:
    """The running runtime of ``loop``, started if needed, with one more user counted."""
    if _registry or _stranded:
        _finish_stranded()
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


@final
class AsyncioItems(ChunkReader[T], AsyncIterator[T]):
    """The consumer's end of :func:`snake.aio.open`: an async iterator, the twin of
    :class:`snake.Items` for asyncio.

    - ``async for x in items``: the items, then the loop ends.
    - ``await items.receive()``: the next item; raises :class:`EndOfStream` after
      the last.
    - ``await items.receive_chunk()``: the rest of the current chunk, or the next
      chunk that crossed from trio.
    - ``items.statistics()`` and ``items.report()``: as for :class:`snake.Items`.

    Items of a chunk are handed out without suspending; the task suspends only to
    wait for the next chunk. Several asyncio tasks may read one ``AsyncioItems`` at
    once: each item goes to one of them.
    """

    __slots__ = ("__weakref__", "_pipe", "_wait_s")

    def __init__(self, pipe: _Pipe) -> None:
        super().__init__()
        self._pipe = pipe
        self._wait_s = 0.0

    async def _refill(self) -> bool:
        """Until the buffer has items (True) or the pipeline is over (False).

        A chunk is taken only into an empty buffer, and only without suspending in
        between: another task reading this handle may have refilled it meanwhile.
        """
        pipe = self._pipe
        while True:
            if self._pos < len(self._buf):
                return True
            if pipe.chunks:
                self._buf, self._pos = pipe.chunks.popleft(), 0
                pipe.taken += len(self._buf)
                if pipe.room is not None and len(pipe.chunks) <= HANDOFF_LOW_WATER:
                    pipe.wake_producer()
                return True
            if pipe.finished:
                self._raise_end()
                return False
            waiter = pipe.runtime.loop.create_future()
            pipe.waiters.append(waiter)
            t0 = time.perf_counter()
            try:
                await waiter
            finally:
                if waiter in pipe.waiters:  # cancelled while waiting
                    pipe.waiters.remove(waiter)
                self._wait_s += time.perf_counter() - t0

    def _raise_end(self) -> None:
        # At the end of a finished pipeline: its error, if any; else the end is the end.
        pipe = self._pipe
        if pipe.error is not None:
            pipe.error_delivered = True
            raise pipe.error
        if not pipe.ended:
            raise RuntimeError("snake.aio: the pipeline was closed; it has no more items")

    _END = EndOfStream

    async def receive_chunk(self) -> list[T] | None:
        """The items of the next chunk that crossed from trio (the rest of the current one
        first), or ``None`` at the end. For consumers that handle items in bulk.
        """
        if self._pos >= len(self._buf) and not await self._refill():
            return None
        return self._take_buffered()

    def state_dict(self) -> dict[str, Any]:
        """The pipeline's position right after the last item received, to resume from
        with ``snake.aio.open(stream, state_dict=...)`` (see ``snake.Items.state_dict``)."""
        pipe = self._pipe
        items = pipe.items
        if items is None:  # not started yet: where it starts
            return pipe.state if pipe.state is not None else checkpoint.start_state(stage_labels(pipe.specs))
        # trio runs its guest ticks on this thread: the stages do not change meanwhile.
        return checkpoint.state_dict(items._ctx, self._pipe.delivered())

    def statistics(self) -> PipelineStatistics:
        """The per-stage counters of this run so far (see :meth:`snake.Items.statistics`);
        the consumer's wait is the time this asyncio task waited for chunks.
        """
        items = self._pipe.items
        if items is None:
            return PipelineStatistics(())
        # The consumer is this asyncio task, not the trio task feeding the hand-off.
        return attrs.evolve(items.statistics(), consumer_wait_s=self._wait_s)

    def report(self) -> str:
        """The bottleneck report of this run so far (see :meth:`snake.Items.report`), with
        the time this asyncio task waited for items.
        """
        from .._engine.report import report

        return report(self.statistics())


@final
class _Open(AbstractAsyncContextManager[AsyncioItems[T]]):
    __slots__ = ("_entered", "_notes", "_pipe", "_specs", "_state")

    def __init__(self, specs: list[Any], notes: tuple[str, ...], state: dict[str, Any] | None) -> None:
        self._specs = specs
        self._notes = notes
        self._state = state
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
        pipe = _Pipe(runtime, self._specs, self._notes, self._state)
        try:
            runtime.spawn(pipe)
        except BaseException:
            runtime.pipes.discard(pipe)
            await _release(runtime)
            raise
        self._pipe = pipe
        reader: AsyncioItems[Any] = AsyncioItems(pipe)
        pipe.reader = weakref.ref(reader)
        return reader

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        pipe = self._pipe
        assert pipe is not None
        if pipe.runtime.loop.is_closed():
            # The loop was closed with this block open, and the garbage collector closes
            # this coroutine now: nothing can run or wait here (see _finish_stranded).
            return
        try:
            if not pipe.finished:
                pipe.runtime.run_sync_soon(pipe.cancel)
            await tasks.wait_uncancelled(pipe.done)
        finally:
            pipe.runtime.pipes.discard(pipe)
            await _release(pipe.runtime)
        if exc is None and pipe.error is not None and not pipe.error_delivered:
            # The pipeline failed, and the block ended before reading that far.
            pipe.error_delivered = True
            raise pipe.error


def open_specs(
    specs: list[Any], notes: tuple[str, ...] = (), state: dict[str, Any] | None = None
) -> AbstractAsyncContextManager[AsyncioItems[Any]]:
    """The pipeline of ``specs`` (planned), to open from asyncio (see ``snake.aio.open``),
    from checkpoint ``state`` if given."""
    return _Open(specs, notes, state)


def statistics() -> RuntimeStatistics:
    """The snake runtime of the running asyncio loop: running or not, open pipelines,
    tasks.

    Raises ``RuntimeError: snake.aio.statistics() needs a running asyncio event
    loop`` outside one.
    """
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
