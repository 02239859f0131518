"""Sync iteration: the pipeline runs under ``trio.run`` in a helper thread.

Chunks (never single items) cross from the trio thread to the consumer's
thread through a small bounded hand-off. Leaving the ``with`` block, breaking
out of the loop, an exception or Ctrl-C in the consumer cancels the trio run
and joins the helper thread before returning: nothing outlives the block.
"""

from __future__ import annotations

import operator
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar, final

import attrs
import trio

from .._engine import checkpoint
from .._engine.run import Items, open_pipeline
from .._engine.spec import Spec
from .._engine.stats import PipelineStatistics
from .._engine.util import release_frames

T = TypeVar("T")

#: Chunks the hand-off to the consumer thread holds at most.
HANDOFF_CHUNKS = 8
#: The consumer wakes the trio thread only once the hand-off is down to this many
#: chunks: each wake-up costs ~50-100 us of thread hand-over, so it must be rare.
HANDOFF_LOW_WATER = 2
#: How long closing waits for the helper thread after cancelling it.
_JOIN_TIMEOUT_S = 30.0


class _Bridge:
    def __init__(self, specs: list[Spec], notes: tuple[str, ...], state: dict[str, Any] | None) -> None:
        self._specs = specs
        self._notes = notes
        self._state = state
        #: Items of the chunks the consumer has gone through, and the chunk it is in
        #: (its length and iterator): what it has received, for checkpoints.
        self.taken = int(state["received"]) if state is not None else 0
        self.current: tuple[int, Iterator[Any]] | None = None
        self._cond = threading.Condition(threading.Lock())
        self._chunks: deque[list[Any]] = deque()
        self._finished = False
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._room: trio.Event | None = None
        self._producer_waiting = False
        self._started = threading.Event()
        self._items: Items[Any] | None = None
        #: Seconds the consumer thread waited for chunks; when it started and ended.
        self.wait_s = 0.0
        self.opened = 0.0
        self.closed = 0.0
        self._thread = threading.Thread(target=self._thread_main, name="snake-pipeline", daemon=True)

    # -- trio thread ------------------------------------------------------------
    def _thread_main(self) -> None:
        try:
            trio.run(self._trio_main)
        except BaseException as exc:
            self._error = exc
        finally:
            with self._cond:
                self._finished = True
                self._cond.notify_all()
            self._started.set()

    async def _trio_main(self) -> None:
        try:
            await self._pump()
        except Exception as exc:
            # Kept here, not left as the run's outcome: trio's finished run is a cycle of
            # tasks that only the garbage collector frees, and it would hold the error
            # (with the items its traceback refers to) as long.
            release_frames(exc)
            self._error = exc

    async def _pump(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._room = trio.Event()
        with trio.CancelScope() as scope:
            self._scope = scope
            async with open_pipeline(self._specs, self._notes, self._state) as items:
                self._items = items
                items._ctx.delivered = lambda: self.taken  # what the consumer surely has
                self._started.set()
                while True:
                    chunk = await items.receive_chunk()
                    if chunk is None:
                        return
                    while True:
                        with self._cond:
                            if len(self._chunks) < HANDOFF_CHUNKS:
                                self._chunks.append(chunk)
                                self._cond.notify()
                                break
                            self._room = trio.Event()
                            self._producer_waiting = True
                        await self._room.wait()

    def _wake_producer(self) -> None:
        # Runs in the trio thread (scheduled by the consumer through the token).
        if self._room is not None:
            self._room.set()

    # -- consumer thread ----------------------------------------------------------
    def start(self) -> None:
        self.opened = time.perf_counter()
        self._thread.start()
        self._started.wait()

    def chunks(self) -> Iterator[list[Any]]:
        cond = self._cond
        while True:
            with cond:
                if not self._chunks and not self._finished:
                    t0 = time.perf_counter()
                    while not self._chunks and not self._finished:
                        cond.wait()
                    self.wait_s += time.perf_counter() - t0
                if self._chunks:
                    chunk = self._chunks.popleft()
                    wake = self._producer_waiting and len(self._chunks) <= HANDOFF_LOW_WATER
                    if wake:
                        self._producer_waiting = False
                else:
                    self.closed = self.closed or time.perf_counter()
                    break
            if wake and self._token is not None:
                try:
                    self._token.run_sync_soon(self._wake_producer)
                except trio.RunFinishedError:
                    pass
            yield chunk
            del chunk  # not kept in this frame, which an error raised below would hold
        self._thread.join()
        self.raise_pending()

    def delivered(self) -> int:
        """Items the consumer has received (called from its thread)."""
        current = self.current
        if current is None:
            return self.taken
        n, it = current
        return self.taken + n - operator.length_hint(it)

    def state_dict(self) -> dict[str, Any]:
        assert self._items is not None
        ctx, n = self._items._ctx, self.delivered()
        token = self._token
        if self._thread.is_alive() and token is not None:
            try:
                # In the trio thread, where the stages change: between two of their steps.
                return trio.from_thread.run_sync(checkpoint.state_dict, ctx, n, trio_token=token)
            except trio.RunFinishedError:
                pass
        return checkpoint.state_dict(ctx, n)

    def statistics(self) -> PipelineStatistics:
        if self._items is None:
            return PipelineStatistics(())
        # The consumer is this thread's loop, not the trio task feeding the hand-off.
        return attrs.evolve(
            self._items.statistics(),
            elapsed_s=(self.closed or time.perf_counter()) - self.opened,
            consumer_wait_s=self.wait_s,
        )

    def raise_pending(self) -> None:
        """Raise the pipeline's error if it failed after the consumer stopped reading."""
        error, self._error = self._error, None
        if error is not None:
            try:
                raise error
            finally:
                error = None  # no cycle through this frame: the items it holds go with it

    def close(self) -> None:
        """Cancel the pipeline (if it still runs) and wait for the helper thread."""
        if self._thread.is_alive():
            token, scope = self._token, self._scope
            if token is not None and scope is not None:
                try:
                    token.run_sync_soon(scope.cancel)
                except trio.RunFinishedError:
                    pass
            self._thread.join(_JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                raise RuntimeError(
                    f"snake: the pipeline thread did not stop within {_JOIN_TIMEOUT_S:.0f} s "
                    "of being cancelled (a stage is blocked in code that ignores cancellation)"
                )
        # Chunks the consumer never took go now, not with the bridge (its thread refers
        # back to it: a cycle that only the garbage collector frees).
        with self._cond:
            self._chunks.clear()
        self.current = None


@final
class SyncItems(Iterator[T], Generic[T]):
    """The consumer's end of :meth:`Stream.open_sync`: a plain iterator.

    ``next(items)`` blocks until an item is ready and raises ``StopIteration``
    after the last one, or raises the pipeline's exception. ``iter(items)`` returns
    the underlying generator rather than ``items`` itself, which saves a
    Python-level call per item.
    """

    __slots__ = ("_bridge", "_gen")

    def __init__(self, bridge: _Bridge) -> None:
        self._bridge = bridge
        self._gen: Iterator[T] = _flatten(bridge)

    def statistics(self) -> PipelineStatistics:
        """The per-stage counters of this run so far, as a :class:`PipelineStatistics`
        (see :meth:`Items.statistics`).

        It reads them from your thread while the pipeline's thread updates them, so a
        snapshot taken while the pipeline runs may be a few items apart between stages.
        Right after ``open_sync()`` returns, before the helper thread has started the
        stages, it can return ``PipelineStatistics(stages=())``. Its
        ``consumer_wait_s`` is the time *your* loop waited in ``next()``, and its
        ``items_received`` counts the items handed to your thread's buffer.
        """
        return self._bridge.statistics()

    def state_dict(self) -> dict[str, Any]:
        """The pipeline's position right after the last item this loop received, to
        resume from with ``stream.open_sync(state_dict=...)`` (see ``Items.state_dict``)."""
        return self._bridge.state_dict()

    def report(self) -> str:
        """The bottleneck report of this run so far, as for :meth:`Items.report`, with the
        time this loop waited for items.
        """
        from .._engine.report import report

        return report(self._bridge.statistics())

    def __iter__(self) -> Iterator[T]:  # noqa: PYI034
        # The flattening generator itself: no Python-level __next__ per item.
        return self._gen

    def __next__(self) -> T:
        return next(self._gen)


def _flatten(bridge: _Bridge) -> Iterator[Any]:
    # ``yield from`` a list costs a few tens of ns per item: no per-item locking. The
    # chunk's iterator says how far the consumer got in it (for checkpoints).
    for chunk in bridge.chunks():
        it = iter(chunk)
        bridge.current = (len(chunk), it)
        yield from it
        bridge.taken += len(chunk)
        bridge.current = None
        del chunk, it  # not kept in this frame, which a pipeline error would hold


@contextmanager
def open_sync(
    specs: list[Spec], notes: tuple[str, ...] = (), state: dict[str, Any] | None = None
) -> Iterator[SyncItems[Any]]:
    """Run the pipeline of ``specs`` (planned) in a helper thread, from checkpoint
    ``state`` if given; yield an iterator over its items."""
    bridge = _Bridge(specs, notes, state)
    bridge.start()
    try:
        yield SyncItems(bridge)
    except BaseException:
        bridge.close()
        raise
    bridge.close()
    bridge.closed = bridge.closed or time.perf_counter()
    bridge.raise_pending()
