"""A source's output: the inline stages fused after it, timed sends, and the end.

Sources produce items in their own task (``from_iterable``, Parquet files, and the
sources made of other streams: ``chain``, ``zip``, ``mix``, ``repeat``). Each hands
what it produces to a :class:`Sink`, which runs it through the fused inline stages,
counts it, sends it on, notices when to stop (the downstream is gone, or a ``take()``
needs no more), and at the end flushes the fused stages and sends ``END``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import trio

from .chan import END, Chunk

if TYPE_CHECKING:
    from .context import Context
    from .run import Items
    from .spec import Fused


class Sink:
    """One run of a source: see the module's docstring."""

    __slots__ = ("counters", "ctx", "fused", "send", "stopped")

    def __init__(self, ctx: Context, fused: Fused, send: trio.MemorySendChannel[Chunk]) -> None:
        self.ctx = ctx
        self.fused = fused
        self.send = send
        self.counters = ctx.counters(ctx.label(0))
        self.counters.send_chan = send
        #: True once the downstream is gone or needs no more items (a ``take()``).
        self.stopped = fused.done

    def fuse(self, raw: Chunk) -> Chunk:
        """Count ``raw`` as produced by the source and run it through the fused stages."""
        self.ctx.count_source(len(raw))
        return self.fused(raw) if raw else raw

    async def emit(self, chunk: Chunk) -> None:
        """Send ``chunk`` (already fused) on; a checkpoint when there is nothing to send."""
        if chunk and not self.stopped:
            try:
                await self._send(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.stopped = True
        else:
            await trio.lowlevel.checkpoint()
        if self.fused.done:
            self.stopped = True

    async def put(self, raw: Chunk) -> None:
        """:meth:`fuse` then :meth:`emit` what the source produced (unless stopped)."""
        if raw and not self.stopped:
            await self.emit(self.fuse(raw))

    async def forward(self, items: Items[Any]) -> int:
        """Move every item of a child pipeline on; how many (stops early if stopped)."""
        n = 0
        while not self.stopped:
            chunk = await items.receive_chunk()
            if chunk is None:
                break
            n += len(chunk)
            await self.put(chunk)
        return n

    async def finish(self) -> None:
        """The source is done: flush the fused stages and send ``END`` (unless the
        downstream is gone)."""
        if self.stopped and not self.fused.done:
            return
        try:
            tail = self.fused.flush()
            if tail:
                await self._timed(tail)
            await self._timed(END)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _send(self, out: Chunk) -> None:
        # Only a send that blocks is a wait on downstream. The yield after one that
        # did not is busy time: the loop runs the source's own inputs there, and
        # timing it as a wait would hide a slow input behind a fast consumer.
        try:
            self.send.send_nowait(out)
        except trio.WouldBlock:
            await self._timed(out)
        else:
            self.counters.last_sent = len(out)
            await trio.lowlevel.checkpoint()

    async def _timed(self, chunk: Chunk) -> None:
        # The time blocked adds to wait_down_s; sending/last_sent keep `buffered` right.
        counters = self.counters
        n = len(chunk) if chunk is not END else 0
        counters.sending = n
        t = time.perf_counter()
        try:
            await self.send.send(chunk)
        finally:
            counters.wait_down_s += time.perf_counter() - t
            if n:
                counters.last_sent = n
            counters.sending = 0
