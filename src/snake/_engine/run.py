"""Opening a pipeline: one nursery owns every stage task (docs/concurrency.md, rule 1)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, final

import trio

from . import checkpoint
from .chan import Chunk, Inbox, open_chunk_channel
from .context import Context, nothing
from .handle import ChunkReader
from .resume import check_state
from .spec import Fused, InlineSpec, SourceSpec, Spec, TaskSpec
from .stats import PipelineStatistics, StageCounters
from .util import CHUNK_CAP, exception_tree, spawn

T = TypeVar("T")

#: Every this many chunks received, the stages forget what they kept for checkpoints
#: before the consumer's position (see ``checkpoint.prune``).
PRUNE_EVERY = 16

_log = logging.getLogger("snake.pipeline")


def stage_labels(specs: list[Spec]) -> list[str]:
    """``#i describe()`` for every stage, as error notes name them."""
    return [f"#{i} {spec.describe()}" for i, spec in enumerate(specs)]


@final
class Items(ChunkReader[T], trio.abc.ReceiveChannel[T]):
    """The consumer's end of an opened pipeline, yielded by :meth:`Stream.open`: an
    async iterator and a trio ``ReceiveChannel``. You do not create it yourself.

    - ``async for x in items``: the items, then the loop ends.
    - ``await items.receive()``: the next item; raises ``trio.EndOfChannel`` after
      the last one.
    - ``await items.receive_chunk()``: all items that are ready, in bulk.
    - ``await items.aclose()``, or leaving ``async with items:``: stop receiving.
    - ``items.statistics()`` and ``items.report()``: what the run has done so far,
      and which stage limits it.

    Items arrive in chunks. ``receive()`` and ``async for`` return items of the
    current chunk without a trio checkpoint, and checkpoint (so can be cancelled)
    when they fetch the next chunk.
    """

    __slots__ = ("_ctx", "_fetches", "_inbox")

    def __init__(self, inbox: Inbox, ctx: Context) -> None:
        super().__init__()
        self._inbox = inbox
        self._ctx = ctx
        self._fetches = 0
        ctx.delivered = self._delivered

    def state_dict(self) -> dict[str, Any]:
        """The pipeline's position right after the last item received, to resume from
        with ``stream.open(state_dict=...)`` (also ``open_sync``, ``snake.aio.open``).

        A plain ``dict`` of ints, strings and lists (``json`` and ``torch.save`` keep
        it as it is) with a ``"format"`` version. Its size does not grow with the
        position in the epoch; it grows with what the stages hold: a ``shuffle(n)``
        names its ``n`` buffered items by position (about 16 bytes of JSON each, so
        160 kB for ``shuffle(10_000)``). It can be taken between any two items, also
        before the first and after the last.

        Resuming gives exactly the items an uninterrupted run would have given after
        that point: in the same order for an ordered pipeline; for one with
        ``ordered=False`` stages, the items that complete its multiset. Items that
        were in flight in ``par_map``/``par_then`` at the checkpoint run again, and a
        ``shuffle``'s buffered items are made again through the stages before it
        (:doc:`/tutorial`, Checkpoints, says what that costs).

        Raises ``ValueError`` for a pipeline whose ``ordered=False`` stage comes before
        a stage that must pick held items out of its input again (a ``shuffle`` after a
        ``flat_map``): their order is not reproducible. Put the unordered stage after
        it, or make it ordered. The same for an ``ordered=False`` stage before a
        :meth:`~Stream.pipe`, which runs again over its input on resume.
        """
        return checkpoint.state_dict(self._ctx, self._delivered())

    def _delivered(self) -> int:
        """Items the consumer has received in the epoch (before a checkpoint resumed from too)."""
        ctx = self._ctx
        return ctx.base + ctx.received - (len(self._buf) - self._pos)

    async def _refill(self) -> bool:
        chunk = await self._fetch()
        if chunk is None:
            return False
        self._buf, self._pos = chunk, 0
        return True

    async def receive_chunk(self) -> list[T] | None:
        """All items that are ready, at least one; ``None`` after the last item.

        It gathers ready chunks until it holds at least 1024 items or none is ready, so
        a result can hold more than 1024 items. Meant for code that moves items on in
        bulk.
        """
        if self._pos < len(self._buf):
            out = self._take_buffered()
        else:
            chunk = await self._fetch()
            if chunk is None:
                return None
            out = chunk
        while len(out) < CHUNK_CAP:
            try:
                more = self._inbox.receive_nowait()
            except trio.WouldBlock:
                break
            if more is None:
                self._ctx.closed = self._ctx.closed or time.perf_counter()
                break
            self._ctx.received += len(more)
            out = out + more
        return out

    async def _fetch(self) -> Chunk | None:
        # Per chunk, never per item: the consumer's wait is the time spent here.
        ctx = self._ctx
        self._fetches += 1
        if ctx.prunes and not self._fetches % PRUNE_EVERY:
            checkpoint.prune(ctx, ctx.delivered())
        t0 = time.perf_counter()
        chunk = await self._inbox.receive()
        t1 = time.perf_counter()
        ctx.consumer_wait_s += t1 - t0
        if chunk is None:
            ctx.closed = ctx.closed or t1
        else:
            ctx.received += len(chunk)
        return chunk

    def statistics(self) -> PipelineStatistics:
        """The per-stage counters of this run so far, as a :class:`PipelineStatistics`.

        Items in and out, busy and waiting time and buffered items of every stage, and
        how long the consumer waited. The counters live as long as this object: read
        them in the loop, at its end, or after the block, even after a failure.
        """
        return self._ctx.statistics()

    def report(self) -> str:
        """The bottleneck report of this run so far, as text.

        The items received and how long the consumer waited for them, the stage that
        limits throughput with the reason and what to change, a ``stalled:`` line for
        each stage that logged stall warnings, and one line per stage. How to read it:
        :doc:`/performance` (Finding the bottleneck: the report).
        """
        from .report import report

        return report(self._ctx.statistics())

    async def aclose(self) -> None:
        """Stop receiving: the stages upstream stop at their next send, without an error.

        ``async with items:`` calls it on exit.
        """
        self._inbox.close()
        await trio.lowlevel.checkpoint()

    def _close(self) -> None:
        # The run is over: what is buffered here goes now (an error's frames hold this).
        self._inbox.close()
        self._buf, self._pos = [], 0


async def _run_stage(
    run: Callable[[], Awaitable[None]],
    send: trio.MemorySendChannel[Chunk],
    recv: trio.MemoryReceiveChannel[Chunk] | None,
    label: str,
    counters: StageCounters,
) -> None:
    # The stage owns both of its channel ends and closes them, whatever happens:
    # closing the input is how the upstream stage learns to stop.
    counters.started = time.perf_counter()
    _log.debug("stage %s: start", label)
    how = "failed"
    with send:
        try:
            await run()
            how = "done"
        except trio.Cancelled:
            how = "cancelled"
            raise
        finally:
            if recv is not None:
                recv.close()
            counters.stopped = time.perf_counter()
            _log.debug(
                "stage %s: stop (%s) after %.3f s, %d items in, %d out",
                label,
                how,
                counters.stopped - counters.started,
                counters.items_in,
                counters.items_out,
            )


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for sub in exc.exceptions:
            out.extend(_leaves(sub))
        return out
    return [exc]


def pick_exception(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception a pipeline raises for a group: the user's, never a group of one."""
    leaves = _leaves(group)
    real = [e for e in leaves if not isinstance(e, trio.Cancelled)]
    if not real:
        return leaves[0]
    first = real[0]
    others = [e for e in real[1:] if e is not first]
    if others:
        summary = "; ".join(f"{type(e).__qualname__}: {e}" for e in others[:5])
        first.add_note(f"snake: {len(others)} more exception(s) while the pipeline stopped: {summary}")
    return first


@asynccontextmanager
async def open_pipeline(
    specs: list[Spec], notes: tuple[str, ...] = (), state: dict[str, Any] | None = None
) -> AsyncIterator[Items[Any]]:
    """Start every stage of ``specs`` (planned) in one nursery; yield the consumer's
    ``Items``. ``notes``: the plan's, for ``statistics().plan``; ``state``: a checkpoint
    of the same pipeline to resume from."""
    labels = stage_labels(specs)
    ctx = Context(labels, notes, check_state(state, labels) if state is not None else None)
    if state is not None:
        ctx.base = int(state["received"])
    error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            recv: trio.MemoryReceiveChannel[Chunk] | None = None
            i = 0
            while i < len(specs):
                spec = specs[i]
                ops = []
                j = i + 1
                while j < len(specs) and isinstance(specs[j], InlineSpec):
                    inline = specs[j]
                    assert isinstance(inline, InlineSpec)
                    op = inline.make(labels[j])
                    entry = ctx.resumable(labels[j], op)
                    if entry is not None:
                        op.restore(entry)
                        op.run_base = (op.seen, op.emitted)
                    ctx.sources[j] = op
                    ctx.hosts[j] = i
                    ops.append(op)
                    j += 1
                fused = Fused(ops)
                send, next_recv = open_chunk_channel()
                if isinstance(spec, SourceSpec):
                    run = _bind_source(spec, ctx, fused, send)
                else:
                    assert isinstance(spec, TaskSpec) and recv is not None
                    run = _bind_task(spec, ctx, labels[i], Inbox(recv), fused, send)
                spawn(nursery, _run_stage, run, send, recv, labels[i], ctx.counters(labels[i]))
                recv = next_recv
                i = j
            assert recv is not None
            items: Items[Any] = Items(Inbox(recv), ctx)
            try:
                yield items
            finally:
                ctx.closed = ctx.closed or time.perf_counter()
                ctx.delivered = nothing  # it may refer to a bridge's buffers: not past the run
                items._close()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        error = pick_exception(group)
        _break_cycles(group, error)
    if error is not None:
        # Raised outside the except block, so the group does not become its __context__.
        try:
            raise error
        finally:
            if isinstance(error.__context__, trio.Cancelled):
                # The cancellation that the consumer's block got (set again by this raise):
                # noise in the traceback, and a reference cycle through trio's frames.
                _break_cycles(error.__context__, error)
                error.__context__ = None
                error.__suppress_context__ = True
            error = None


def _break_cycles(exc: BaseException, keep: BaseException) -> None:
    """Drop the tracebacks of ``exc`` and of what it holds (groups, contexts), except
    ``keep``'s own. trio's frames in those tracebacks refer back to the exceptions:
    cycles that only the garbage collector would free, and with them the items (shared
    memory included) that the pipeline's frames held when it failed. (Frames are never
    cleared: a suspended one would finalize its coroutine.)"""
    for e in exception_tree(exc, linked=True, keep=keep):
        if e is not keep:
            e.__traceback__ = None


def _bind_source(
    spec: SourceSpec, ctx: Context, fused: Fused, send: trio.MemorySendChannel[Chunk]
) -> Callable[[], Awaitable[None]]:
    return lambda: spec.run(ctx, fused, send)


def _bind_task(
    spec: TaskSpec,
    ctx: Context,
    label: str,
    inbox: Inbox,
    fused: Fused,
    send: trio.MemorySendChannel[Chunk],
) -> Callable[[], Awaitable[None]]:
    return lambda: spec.run(ctx, label, inbox, fused, send)
