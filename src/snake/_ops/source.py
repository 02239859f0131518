"""Sources: the first stage of every stream."""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from contextlib import aclosing
from itertools import islice
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._engine.chan import Outbox
from .._engine.sink import Sink
from .._engine.spec import Fused, SourceSpec
from .._engine.util import CHUNK_CAP, add_note, describe_callable, describe_iterable, spawn

if TYPE_CHECKING:
    from .._engine.run import Context

#: A sync source grows its chunks while producing one takes less than this...
_FAST_CHUNK_S = 0.0005
#: ... and shrinks them when producing one takes more than this.
_SLOW_CHUNK_S = 0.005


@attrs.frozen
class FromIterable(SourceSpec):
    """Iterates a sync iterable on the event loop, in chunks.

    Chunks start at one item and double while producing one (the iterable plus
    the fused stages after it) takes under 0.5 ms, so a cheap source moves
    chunks of up to ``CHUNK_CAP`` items and an expensive one moves single items.
    """

    iterable: Iterable[Any]

    def describe(self) -> str:
        return f"from_iterable({describe_iterable(self.iterable)})"

    def length(self) -> int | None:
        try:
            return len(self.iterable)  # type: ignore[arg-type]
        except Exception:
            return None

    async def run(self, ctx: Context, fused: Fused, send: trio.MemorySendChannel[Any]) -> None:
        label = ctx.label(0)
        with send:
            sink = Sink(ctx, fused, send)
            try:
                it = iter(self.iterable)
            except Exception as exc:
                add_note(exc, label, None)
                raise
            n = 1
            produced = 0
            perf = time.perf_counter
            while not sink.stopped:
                want = n
                demand = fused.demand()
                if demand is not None:
                    if demand <= 0:
                        break
                    want = min(want, demand)
                t0 = perf()
                try:
                    raw = list(islice(it, want))
                except Exception as exc:
                    add_note(exc, label, None)
                    exc.add_note(f"snake: after at least {produced} items")
                    raise
                produced += len(raw)
                chunk = sink.fuse(raw)
                elapsed = perf() - t0
                if elapsed < _FAST_CHUNK_S:
                    n = min(CHUNK_CAP, n * 2)
                elif elapsed > _SLOW_CHUNK_S and n > 1:
                    n //= 2
                await sink.emit(chunk)
                if len(raw) < want:
                    break
            await sink.finish()


@attrs.frozen
class FromAsyncIterable(SourceSpec):
    """Iterates an async iterable (or a function returning one, called per run)."""

    source: AsyncIterable[Any] | Callable[[], AsyncIterable[Any]]

    def describe(self) -> str:
        src = self.source
        if callable(src) and not hasattr(src, "__aiter__"):
            return f"from_async_iterable({describe_callable(src)})"
        return f"from_async_iterable(<{type(src).__name__}>)"

    def _open(self) -> AsyncIterator[Any]:
        src = self.source
        if not hasattr(src, "__aiter__") and callable(src):
            src = src()
            if not hasattr(src, "__aiter__"):
                raise TypeError(
                    f"from_async_iterable: {describe_callable(self.source)}() returned "
                    f"{type(src).__name__!r}, not an async iterable"
                )
        return src.__aiter__()

    async def run(self, ctx: Context, fused: Fused, send: trio.MemorySendChannel[Any]) -> None:
        label = ctx.label(0)
        outbox = Outbox(send, cap=fused.outbox_cap())
        ctx.counters(label).outbox = outbox
        async with trio.open_nursery() as nursery:
            spawn(nursery, outbox.run, nursery.cancel_scope)
            try:
                ait = self._open()
                if inspect.isasyncgen(ait):
                    async with aclosing(ait):
                        await self._pump(ctx, ait, fused, outbox)
                else:
                    await self._pump(ctx, ait, fused, outbox)
            except Exception as exc:
                add_note(exc, label, None)
                raise
            outbox.close()

    @staticmethod
    async def _pump(ctx: Context, ait: AsyncIterator[Any], fused: Fused, outbox: Outbox) -> None:
        if fused.done:
            return
        async for x in ait:
            ctx.count_source(1)
            outbox.put(fused([x]))
            if fused.done:
                break
            await outbox.wait_room()
        outbox.put(fused.flush())
