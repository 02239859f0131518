"""``prefetch(n)``: a buffer of ready items between two stages."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import attrs
import trio

from .._engine.chan import Chunk, Inbox, Outbox
from .._engine.resume import Resumable
from .._engine.spec import Fused, TaskSpec
from .._engine.util import spawn

if TYPE_CHECKING:
    from .._engine.context import Context


@attrs.frozen
class Prefetch(TaskSpec):
    """Pulls ahead of the consumer until about ``n`` items are ready (``n`` input items'
    worth when a ``batch`` follows), besides the chunk in transit downstream."""

    n: int

    def describe(self) -> str:
        return f"prefetch({self.n})"

    def out_length(self, n: int) -> int | None:
        return n

    async def run(
        self, ctx: Context, label: str, inbox: Inbox, fused: Fused, send: trio.MemorySendChannel[Chunk]
    ) -> None:
        ctx.resumable(label, Resumable())  # output r is input r: nothing to keep
        outbox = Outbox(send, cap=max(1, self.n // fused.weight()))
        counters = ctx.counters(label)
        counters.outbox = outbox
        perf = time.perf_counter
        async with trio.open_nursery() as nursery:
            spawn(nursery, outbox.run, nursery.cancel_scope)
            while not fused.done:
                await outbox.wait_room()
                t0 = perf()
                chunk = await inbox.receive()
                counters.wait_up_s += perf() - t0
                if chunk is None:
                    break
                counters.items_in += len(chunk)
                counters.items_out += len(chunk)
                outbox.put(fused(chunk))
            outbox.put(fused.flush())
            outbox.close()
