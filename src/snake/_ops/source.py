"""Sources: the first stage of every stream."""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import aclosing
from itertools import islice
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._engine.chan import Outbox
from .._engine.resume import Numbered
from .._engine.sink import Sink
from .._engine.spec import Fused, SourceSpec
from .._engine.util import CHUNK_CAP, add_note, describe_callable, describe_iterable, spawn

if TYPE_CHECKING:
    from .._engine.context import Context

#: A sync source grows its chunks while producing one takes less than this...
_FAST_CHUNK_S = 0.0005
#: ... and shrinks them when producing one takes more than this.
_SLOW_CHUNK_S = 0.005


@attrs.frozen
class FromIterable(SourceSpec):
    """Iterates a sync iterable (or the one a function returns, called per run) on the
    event loop, in chunks.

    Chunks start at one item and double while producing one (the iterable plus
    the fused stages after it) takes under 0.5 ms, so a cheap source moves
    chunks of up to ``CHUNK_CAP`` items and an expensive one moves single items.

    Resumed from a checkpoint, a ``Sequence`` (a list, a ``range``, ...) starts at the
    checkpoint's index; any other iterable is iterated again from its start, without
    passing on the items before the checkpoint (``StageStatistics.replayed`` counts
    them). A one-shot iterator (a generator) cannot be resumed.
    """

    iterable: Iterable[Any] | Callable[[], Iterable[Any]]

    def describe(self) -> str:
        src = self.iterable
        if callable(src) and not isinstance(src, Iterable):
            return f"from_iterable({describe_callable(src)})"
        return f"from_iterable({describe_iterable(src)})"

    def length(self) -> int | None:
        try:
            return len(self.iterable)  # type: ignore[arg-type]
        except Exception:
            return None

    def _open(self) -> Iterable[Any]:
        src = self.iterable
        if callable(src) and not isinstance(src, Iterable):
            got = src()
            if not isinstance(got, Iterable):
                raise TypeError(
                    f"from_iterable: {describe_callable(src)}() returned {type(got).__name__!r}, not an iterable"
                )
            return got
        return src

    def check_resumable(self) -> None:
        """Raise ``ValueError`` if this source cannot start again from a checkpoint."""
        src = self.iterable
        if isinstance(src, Iterator):
            raise ValueError(  # noqa: TRY004 -- the value (an iterator) is fine; resuming it is not
                f"from_iterable: {self.describe()} is a one-shot iterator, which cannot be resumed "
                "from a checkpoint; pass a list, or a function that returns the iterable"
            )

    def _resumed(self, ctx: Context, label: str, entry: dict[str, Any]) -> tuple[Iterator[Any], list[Any]]:
        """(the items from the checkpoint on, the items that come again first)."""
        self.check_resumable()
        u = int(entry["resume"])
        wanted = entry.get("refill", ())  # ascending item numbers, from the checkpoint
        src = self._open()
        if isinstance(src, range) and src == range(len(src)) and (not wanted or 0 <= wanted[0] <= wanted[-1] < len(src)):
            return iter(src[u:]), list(wanted)  # range(n): the items are their numbers
        if isinstance(src, Sequence):
            return map(src.__getitem__, range(u, len(src))), list(map(src.__getitem__, wanted))
        it = iter(src)
        again = []
        todo = iter(wanted)
        nxt = next(todo, -1)
        for i, x in enumerate(islice(it, u)):
            if i == nxt:
                again.append(x)
                nxt = next(todo, -1)
        ctx.counters(label).replayed += u
        return it, again

    async def run(self, ctx: Context, fused: Fused, send: trio.MemorySendChannel[Any]) -> None:
        label = ctx.label(0)
        entry = ctx.resumable(label, Numbered())
        with send:
            sink = Sink(ctx, fused, send)
            again: list[Any] = []
            try:
                if entry is not None:
                    it, again = self._resumed(ctx, label, entry)
                else:
                    it = iter(self._open())
            except Exception as exc:
                add_note(exc, label, None)
                raise
            if again:
                await sink.put(again)
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

    def check_resumable(self) -> None:
        """Raise ``ValueError`` if this source cannot start again from a checkpoint."""
        if hasattr(self.source, "__anext__"):
            raise ValueError(
                f"from_async_iterable: {self.describe()} is a one-shot async iterator, which "
                "cannot be resumed from a checkpoint; pass a function that returns one (an "
                "async generator function, say)"
            )

    async def run(self, ctx: Context, fused: Fused, send: trio.MemorySendChannel[Any]) -> None:
        label = ctx.label(0)
        entry = ctx.resumable(label, Numbered())
        outbox = Outbox(send, cap=fused.outbox_cap())
        ctx.counters(label).outbox = outbox
        async with trio.open_nursery() as nursery:
            spawn(nursery, outbox.run, nursery.cancel_scope)
            try:
                if entry is not None:
                    self.check_resumable()
                ait = self._open()
                if inspect.isasyncgen(ait):
                    async with aclosing(ait):
                        await self._pump(ctx, ait, fused, outbox, entry)
                else:
                    await self._pump(ctx, ait, fused, outbox, entry)
            except Exception as exc:
                add_note(exc, label, None)
                raise
            outbox.close()

    @staticmethod
    async def _pump(
        ctx: Context, ait: AsyncIterator[Any], fused: Fused, outbox: Outbox, entry: dict[str, Any] | None
    ) -> None:
        if entry is not None:
            # Resumed: the items before the checkpoint come again from the start and are
            # not passed on, but those a buffering stage held (they come first).
            u = int(entry["resume"])
            wanted = iter(int(p) for p in entry.get("refill", ()))
            nxt = next(wanted, -1)
            again: list[Any] = []
            for i in range(u):
                try:
                    x = await ait.__anext__()
                except StopAsyncIteration:
                    break
                if i == nxt:
                    again.append(x)
                    nxt = next(wanted, -1)
            ctx.counters(ctx.label(0)).replayed += u
            if again:
                ctx.count_source(len(again))
                outbox.put(fused(again))
        if fused.done:
            return
        async for x in ait:
            ctx.count_source(1)
            outbox.put(fused([x]))
            if fused.done:
                break
            await outbox.wait_room()
        outbox.put(fused.flush())
