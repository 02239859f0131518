"""Sources made of other streams: ``repeat()``, ``chain()``, ``zip()`` and ``mix()``.

Each runs its input streams as *child pipelines*, opened with ``open_pipeline``
inside the source's own task: the child stages are tasks of nurseries nested in
that task, so they live inside the outer pipeline's nursery (docs/concurrency.md, rule 1). A
child's exception comes out of its ``open_pipeline`` unchanged, fails the source
and so the outer pipeline; cancelling the outer pipeline cancels the source's
task and every child with it. Children keep their own statistics, which the
outer pipeline's ``statistics()`` does not show (one row for the whole source).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._engine.epoch import EPOCH, epoch_generator
from .._engine.sink import Sink
from .._engine.spec import Chunk, Fused, SourceSpec, Spec, chain_repr, known_length

if TYPE_CHECKING:
    from .._engine.run import Context, Items

Specs = tuple[Spec, ...]


@asynccontextmanager
async def _open_child(specs: Specs, note: str) -> AsyncIterator[Items[Any]]:
    from .._engine.run import open_pipeline

    try:
        async with open_pipeline(list(specs)) as items:
            yield items
    except Exception as exc:
        exc.add_note(note)
        raise


@attrs.frozen
class Repeat(SourceSpec):
    inner: Specs
    epochs: int | None = None

    def describe(self) -> str:
        return f"{chain_repr(self.inner)}.repeat({'' if self.epochs is None else self.epochs})"

    def length(self) -> int | None:
        if self.epochs is None:
            return None
        n = known_length(self.inner)
        return None if n is None else n * self.epochs

    async def run(self, ctx: Context, fused: Fused, send: trio.MemorySendChannel[Chunk]) -> None:
        with send:
            sink = Sink(ctx, fused, send)
            epochs = itertools.count() if self.epochs is None else range(self.epochs)
            for epoch in epochs:
                if sink.stopped:
                    break
                token = EPOCH.set(epoch)
                try:
                    async with _open_child(self.inner, f"snake: in epoch {epoch} of repeat()") as items:
                        n = await sink.forward(items)
                finally:
                    EPOCH.reset(token)
                if n == 0 and self.epochs is None:
                    raise ValueError(
                        f"repeat(): epoch {epoch} of {chain_repr(self.inner)} produced no items, so "
                        "an endless repeat would never produce one (a stream built on a generator "
                        "can be opened only once: pass a list, or from_async_iterable(function))"
                    )
            await sink.finish()


def _inputs_repr(inputs: tuple[Specs, ...]) -> str:
    return ", ".join(chain_repr(specs) for specs in inputs)


@attrs.frozen
class Chain(SourceSpec):
    inputs: tuple[Specs, ...]

    def describe(self) -> str:
        return f"chain({_inputs_repr(self.inputs)})"

    def length(self) -> int | None:
        total = 0
        for specs in self.inputs:
            n = known_length(specs)
            if n is None:
                return None
            total += n
        return total

    async def run(self, ctx: Context, fused: Fused, send: trio.MemorySendChannel[Chunk]) -> None:
        with send:
            sink = Sink(ctx, fused, send)
            for i, specs in enumerate(self.inputs):
                if sink.stopped:
                    break
                async with _open_child(specs, f"snake: in input {i} of chain()") as items:
                    await sink.forward(items)
            await sink.finish()


@attrs.frozen
class Zip(SourceSpec):
    inputs: tuple[Specs, ...]

    def describe(self) -> str:
        return f"zip({_inputs_repr(self.inputs)})"

    def length(self) -> int | None:
        ns = [known_length(specs) for specs in self.inputs]
        if any(n is None for n in ns):
            return None
        return min(n for n in ns if n is not None)

    async def run(self, ctx: Context, fused: Fused, send: trio.MemorySendChannel[Chunk]) -> None:
        with send:
            sink = Sink(ctx, fused, send)
            async with AsyncExitStack() as stack:
                children = [
                    await stack.enter_async_context(_open_child(specs, f"snake: in input {i} of zip()"))
                    for i, specs in enumerate(self.inputs)
                ]
                bufs: list[Chunk] = [[] for _ in children]
                while not sink.stopped:
                    for k, child in enumerate(children):
                        if not bufs[k]:
                            chunk = await child.receive_chunk()
                            if chunk is None:
                                break  # the shortest input ended: so does zip
                            bufs[k] = chunk
                    else:
                        n = min(len(b) for b in bufs)
                        out = list(zip(*(b[:n] for b in bufs)))
                        bufs = [b[n:] for b in bufs]
                        await sink.put(out)
                        continue
                    break
            await sink.finish()


@attrs.frozen
class Mix(SourceSpec):
    inputs: tuple[Specs, ...]
    weights: tuple[float, ...]
    seed: int | None = None

    def describe(self) -> str:
        return f"mix([{_inputs_repr(self.inputs)}], weights={list(self.weights)}, seed={self.seed})"

    def length(self) -> int | None:
        return Chain(self.inputs).length()

    async def run(self, ctx: Context, fused: Fused, send: trio.MemorySendChannel[Chunk]) -> None:
        rng = epoch_generator(self.seed, EPOCH.get())
        with send:
            sink = Sink(ctx, fused, send)
            async with AsyncExitStack() as stack:
                children = [
                    await stack.enter_async_context(_open_child(specs, f"snake: in input {i} of mix()"))
                    for i, specs in enumerate(self.inputs)
                ]
                await self._mix(children, rng, sink)
            await sink.finish()

    async def _mix(self, children: Sequence[Items[Any]], rng: Any, sink: Sink) -> None:
        active = list(range(len(children)))
        weights = list(self.weights)
        bufs: list[Chunk] = [[] for _ in children]
        pos = [0] * len(children)
        out: Chunk = []
        draws: list[float] = []
        while active and not sink.stopped:
            if not draws:
                # Doubles, one 64-bit draw each: the sequence does not depend on chunking.
                draws = rng.random(256).tolist()
                draws.reverse()
            u = draws.pop() * sum(weights[k] for k in active)
            pick = active[-1]
            for k in active:
                u -= weights[k]
                if u < 0:
                    pick = k
                    break
            if pos[pick] == len(bufs[pick]):
                if out:
                    await sink.put(out)
                    out = []
                chunk = await children[pick].receive_chunk()
                if chunk is None:
                    active.remove(pick)  # exhausted: the others' weights renormalise
                    continue
                bufs[pick], pos[pick] = chunk, 0
            out.append(bufs[pick][pos[pick]])
            pos[pick] += 1
            if len(out) >= 1024:
                await sink.put(out)
                out = []
        if out:
            await sink.put(out)
