"""Sources made of other streams: ``repeat()``, ``chain()``, ``zip()`` and ``mix()``.

Each runs its input streams as *child pipelines*, opened with ``open_pipeline``
inside the source's own task: the child stages are tasks of nurseries nested in
that task, so they live inside the outer pipeline's nursery (docs/concurrency.md, rule 1). A
child's exception comes out of its ``open_pipeline`` unchanged, fails the source
and so the outer pipeline; cancelling the outer pipeline cancels the source's
task and every child with it. Children keep their own statistics, which the
outer pipeline's ``statistics()`` does not show (one row for the whole source).

``mix(on_exhausted="restart")`` runs each input as a child whose source (``_Runs``)
opens the input's stages again each time they end, as ``repeat()`` does, so its
checkpoint names the run each input is in.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
import trio

from .._engine import checkpoint
from .._engine.epoch import EPOCH, epoch_generator
from .._engine.resume import Cut, Resumable
from .._engine.sink import Sink
from .._engine.spec import Chunk, Fused, SourceSpec, Spec, chain_repr, known_length
from .._engine.util import describe_callable

if TYPE_CHECKING:
    from .._engine.context import Context
    from .._engine.run import Items

Specs = tuple[Spec, ...]


@asynccontextmanager
async def _open_child(
    specs: Specs, note: str, state: dict[str, Any] | None = None, *, own_only: bool = False
) -> AsyncIterator[Items[Any]]:
    """Run ``specs`` as a child pipeline; its exceptions get ``note``. With ``own_only``
    (children that run side by side: ``zip``, ``mix``), an exception that only passes
    through it on its way out (another child's, the parent's) does not."""
    from .._engine.run import open_pipeline

    passing: BaseException | None = None
    try:
        async with open_pipeline(list(specs), (), state) as items:
            # Its reader (this stage) runs ahead of the parent's consumer: the parent's
            # checkpoints prune it, at that consumer's position.
            items._ctx.prunes = False
            try:
                yield items
            except BaseException as exc:
                passing = exc  # raised by the parent (or another child), not by this child
                raise
    except Exception as exc:
        if note and not (own_only and exc is passing):
            exc.add_note(note)
        raise


class _InTurn(Resumable):
    """Checkpoints of ``chain`` and ``repeat``: their children run one after another;
    for each child since the consumer's position it keeps where its outputs start and
    its pipeline, whose own checkpoint says where in it to resume."""

    __slots__ = ("children", "key", "out", "resumed", "skip")

    passes_refill = False

    def __init__(self, key: str) -> None:
        #: "input" (chain) or "epoch" (repeat): what a checkpoint calls a child.
        self.key = key
        #: (child number, its first output's number, its pipeline's context).
        self.children: list[tuple[int, int, Context]] = []
        self.out = 0
        #: Resumed: the outputs the checkpoint's child had made (its numbers go on).
        self.skip = 0
        #: Resumed: the checkpoint's child and its state, until that child starts.
        self.resumed: dict[str, Any] = {key: 0}

    def started(self, index: int, ctx: Context) -> None:
        self.children.append((index, self.out, ctx))
        self.out += self.skip
        self.skip = 0

    def _at(self, r: int) -> tuple[int, int, Context] | None:
        for child in reversed(self.children):
            if child[1] <= r:
                return child
        return None

    def cut(self, r: int) -> Cut:
        child = self._at(r)
        if child is None:
            return Cut(r, dict(self.resumed))
        index, first, ctx = child
        return Cut(r, {self.key: index, "child": checkpoint.state_dict(ctx, r - first)})

    def prune(self, r: int) -> None:
        child = self._at(r)
        if child is not None:
            checkpoint.prune(child[2], r - child[1])
            self.children = [c for c in self.children if c[0] >= child[0]]


def _forwarding(res: _InTurn, sink: Sink) -> Callable[[Items[Any]], Awaitable[int]]:
    async def forward(items: Items[Any]) -> int:
        n = 0
        while not sink.stopped:
            chunk = await items.receive_chunk()
            if chunk is None:
                break
            n += len(chunk)
            res.out += len(chunk)
            await sink.put(chunk)
        return n

    return forward


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
        await _run_again(
            ctx,
            fused,
            send,
            self.inner,
            key="epoch",
            stop=self.epochs,
            epoch_of=lambda epoch: epoch,
            note_of=lambda epoch: f"snake: in epoch {epoch} of repeat()",
            empty=lambda epoch: (
                f"repeat(): epoch {epoch} of {chain_repr(self.inner)} produced no items, so "
                "an endless repeat would never produce one (a stream built on a generator "
                "can be opened only once: pass a list, or from_async_iterable(function))"
            ),
        )


async def _run_again(
    ctx: Context,
    fused: Fused,
    send: trio.MemorySendChannel[Chunk],
    inner: Specs,
    *,
    key: str,
    stop: int | None,
    epoch_of: Callable[[int], int],
    note_of: Callable[[int], str],
    empty: Callable[[int], str],
) -> None:
    """Run ``inner`` as child pipelines one after another, numbered from the checkpoint's
    (``key``: ``"epoch"`` for ``repeat``, ``"run"`` for a restarted ``mix`` input) up to
    ``stop`` (None: endlessly), child ``k`` in epoch ``epoch_of(k)``. An endless run whose
    child gives no items raises ``ValueError(empty(k))``: it would never give one."""
    res = _InTurn(key)
    entry = ctx.resumable(ctx.label(0), res)
    first, state = _resume_point(entry, key, res)
    with send:
        sink = Sink(ctx, fused, send)
        forward = _forwarding(res, sink)
        for k in itertools.count(first) if stop is None else range(first, stop):
            if sink.stopped:
                break
            token = EPOCH.set(epoch_of(k))
            try:
                async with _open_child(inner, note_of(k), state if k == first else None) as items:
                    res.started(k, items._ctx)
                    n = await forward(items)
            finally:
                EPOCH.reset(token)
            if n == 0 and stop is None and not (k == first and state is not None):
                raise ValueError(empty(k))
        await sink.finish()


def _resume_point(entry: dict[str, Any] | None, key: str, res: _InTurn) -> tuple[int, dict[str, Any] | None]:
    """(the child to start at, its checkpoint) of a resumed chain or repeat."""
    if entry is None:
        return 0, None
    child = entry.get("child")
    res.skip = int(child["received"]) if child is not None else 0
    res.out = int(entry["at"]) - res.skip
    res.resumed = {k: entry[k] for k in (key, "child") if k in entry}
    return int(entry.get(key, 0)), child


class _Together(Resumable):
    """Checkpoints of ``zip``: output ``r`` is each input's output ``r``."""

    __slots__ = ("ctxs",)

    passes_refill = False

    def __init__(self) -> None:
        self.ctxs: list[Context] = []

    def cut(self, r: int) -> Cut:
        return Cut(r, {"children": [checkpoint.state_dict(ctx, r) for ctx in self.ctxs]} if self.ctxs else {})

    def prune(self, r: int) -> None:
        for ctx in self.ctxs:
            checkpoint.prune(ctx, r)


class _Mixing(Resumable):
    """Checkpoints of ``mix``: for each output since the consumer's position, which input
    it came from and the number of the draw that picked it; and the draws at which
    inputs ran out. A checkpoint names the generator, the draws, the inputs still in the
    draw, and each input's own checkpoint at its count of outputs."""

    __slots__ = (
        "active",
        "base_counts",
        "base_draws",
        "ctxs",
        "draw_of",
        "draws",
        "first",
        "from_",
        "gone",
        "init",
        "rng",
    )

    passes_refill = False

    def __init__(self, rng: Any, n: int) -> None:
        self.rng = rng
        self.init: dict[str, Any] = dict(rng.bit_generator.state)
        self.draws = 0
        self.active = list(range(n))
        self.ctxs: list[Context] = []
        #: Per output from number ``first`` on: its input, and the number of its draw.
        self.from_: list[int] = []
        self.draw_of: list[int] = []
        self.first = 0
        #: Outputs of each input before ``first``, and the draws then.
        self.base_counts = [0] * n
        self.base_draws = 0
        #: (draw number, input) of each input that ran out.
        self.gone: list[tuple[int, int]] = []

    def picked(self, k: int) -> None:
        self.from_.append(k)
        self.draw_of.append(self.draws - 1)

    def _at(self, r: int) -> tuple[int, list[int], list[int]]:
        """(draws, outputs of each input, inputs still drawn) when output ``r`` - 1 was picked."""
        k = r - self.first
        counts = list(self.base_counts)
        for i in self.from_[:k]:
            counts[i] += 1
        draws = self.draw_of[k - 1] + 1 if k > 0 else self.base_draws
        active = [i for i in range(len(counts)) if not any(d < draws and g == i for d, g in self.gone)]
        return draws, counts, active

    def cut(self, r: int) -> Cut:
        draws, counts, active = self._at(r)
        state: dict[str, Any] = {"rng": self.init, "draws": draws, "active": active}
        if self.ctxs:
            state["children"] = [checkpoint.state_dict(ctx, n) for ctx, n in zip(self.ctxs, counts, strict=True)]
        return Cut(r, state)

    def prune(self, r: int) -> None:
        k = r - self.first
        if k <= 0:
            return
        for i in self.from_[:k]:
            self.base_counts[i] += 1
        self.base_draws = self.draw_of[k - 1] + 1
        for ctx, n in zip(self.ctxs, self.base_counts, strict=False):
            checkpoint.prune(ctx, n)
        del self.from_[:k], self.draw_of[:k]
        self.first = r

    def restore(self, entry: dict[str, Any]) -> None:
        self.init = entry["rng"]
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = self.init
        self.draws = self.base_draws = int(entry["draws"])
        rng.bit_generator.advance(self.draws)  # type: ignore[attr-defined]
        self.rng = rng
        self.active = [int(i) for i in entry["active"]]
        self.first = int(entry["at"])
        self.base_counts = [int(child["received"]) for child in entry["children"]]
        self.gone = [(-1, i) for i in range(len(self.base_counts)) if i not in self.active]


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
        res = _InTurn("input")
        entry = ctx.resumable(ctx.label(0), res)
        first, state = _resume_point(entry, "input", res)
        with send:
            sink = Sink(ctx, fused, send)
            forward = _forwarding(res, sink)
            for i, specs in enumerate(self.inputs):
                if i < first:
                    continue
                if sink.stopped:
                    break
                note = f"snake: in input {i} of chain()"
                async with _open_child(specs, note, state if i == first else None) as items:
                    res.started(i, items._ctx)
                    await forward(items)
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
        res = _Together()
        entry = ctx.resumable(ctx.label(0), res)
        states = entry.get("children", [None] * len(self.inputs)) if entry is not None else [None] * len(self.inputs)
        with send:
            sink = Sink(ctx, fused, send)
            async with AsyncExitStack() as stack:
                children = [
                    await stack.enter_async_context(
                        _open_child(specs, f"snake: in input {i} of zip()", state, own_only=True)
                    )
                    for i, (specs, state) in enumerate(zip(self.inputs, states, strict=True))
                ]
                res.ctxs = [child._ctx for child in children]
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


#: What ``mix()`` does when an input ends (see ``snake.mix``).
ON_EXHAUSTED = ("drop", "stop", "restart")

Weights = tuple[float, ...] | Callable[[int], Sequence[float]]


def check_weights(name: str, weights: object, n: int) -> tuple[float, ...]:
    """Validate ``mix``'s weights for ``n`` inputs (``name`` quotes where they came from:
    ``weights``, or ``weights(3)`` for what a function of the epoch returned)."""
    if not isinstance(weights, (list, tuple)):
        raise TypeError(f"mix: {name}={weights!r} must be a list of numbers")
    if len(weights) != n:
        raise ValueError(f"mix: {name}={list(weights)!r} has {len(weights)} weights for {n} streams")
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            raise TypeError(f"mix: {name}={list(weights)!r} must be numbers")
        if not (w > 0 and math.isfinite(w)):
            raise ValueError(f"mix: {name}={list(weights)!r} must all be > 0 and finite")
    return tuple(float(w) for w in weights)


@attrs.frozen
class _Runs(SourceSpec):
    """An input of ``mix(on_exhausted="restart")``: its stages, opened again each time
    they end (at most ``restarts`` times), as one stream. Run ``j`` sees the epoch
    around the mix plus ``j``; its checkpoint names the run, like ``repeat()``'s."""

    inner: Specs
    index: int
    restarts: int | None

    def describe(self) -> str:
        return f"restarted({chain_repr(self.inner)}, max_restarts={self.restarts})"

    async def run(self, ctx: Context, fused: Fused, send: trio.MemorySendChannel[Chunk]) -> None:
        base = EPOCH.get()
        await _run_again(
            ctx,
            fused,
            send,
            self.inner,
            key="run",
            stop=None if self.restarts is None else self.restarts + 1,
            epoch_of=lambda run: base + run,
            # the first run is just the input
            note_of=lambda run: (
                f"snake: in restart {run} (epoch {base + run}) of input {self.index} of mix()" if run else ""
            ),
            empty=lambda run: (
                f"mix(): input {self.index}, {chain_repr(self.inner)}, gave no items in its "
                f"run {run} (epoch {base + run}), so restarting it would never give one (a "
                "stream built on a generator can be opened only once: pass a list, or "
                "from_async_iterable(function))"
            ),
        )


@attrs.frozen
class Mix(SourceSpec):
    inputs: tuple[Specs, ...]
    weights: Weights
    seed: int | None = None
    on_exhausted: str = "drop"
    max_restarts: int | None = None

    def describe(self) -> str:
        weights = list(self.weights) if isinstance(self.weights, tuple) else describe_callable(self.weights)
        extra = ""
        if self.on_exhausted != "drop":
            extra += f", on_exhausted={self.on_exhausted!r}"
        if self.max_restarts is not None:
            extra += f", max_restarts={self.max_restarts}"
        return f"mix([{_inputs_repr(self.inputs)}], weights={weights}, seed={self.seed}{extra})"

    def length(self) -> int | None:
        if self.on_exhausted != "drop":
            return None  # where it stops depends on the draws
        return Chain(self.inputs).length()

    def weights_at(self, epoch: int) -> tuple[float, ...]:
        """The weights in ``epoch``: a function of the epoch is asked, and its answer checked."""
        if isinstance(self.weights, tuple):
            return self.weights
        return check_weights(f"weights({epoch})", self.weights(epoch), len(self.inputs))

    def _children(self) -> tuple[Specs, ...]:
        if self.on_exhausted != "restart":
            return self.inputs
        return tuple((_Runs(specs, i, self.max_restarts),) for i, specs in enumerate(self.inputs))

    async def run(self, ctx: Context, fused: Fused, send: trio.MemorySendChannel[Chunk]) -> None:
        epoch = EPOCH.get()
        weights = self.weights_at(epoch)
        res = _Mixing(epoch_generator(self.seed, epoch), len(self.inputs))
        entry = ctx.resumable(ctx.label(0), res)
        states = [None] * len(self.inputs)
        if entry is not None and "rng" in entry:  # (a checkpoint taken before it began has none)
            res.restore(entry)
            states = entry["children"]
        with send:
            sink = Sink(ctx, fused, send)
            async with AsyncExitStack() as stack:
                children = [
                    await stack.enter_async_context(
                        _open_child(specs, f"snake: in input {i} of mix()", state, own_only=True)
                    )
                    for i, (specs, state) in enumerate(zip(self._children(), states, strict=True))
                ]
                res.ctxs = [child._ctx for child in children]
                await self._mix(children, weights, res, sink)
            await sink.finish()

    async def _mix(
        self, children: Sequence[Items[Any]], weights: tuple[float, ...], res: _Mixing, sink: Sink
    ) -> None:
        active = list(res.active)
        drop = self.on_exhausted == "drop"
        bufs: list[Chunk] = [[] for _ in children]
        pos = [0] * len(children)
        out: Chunk = []
        draws: list[float] = []
        rng = res.rng
        while active and not sink.stopped:
            if not draws:
                # Doubles, one 64-bit draw each: the sequence does not depend on chunking.
                draws = rng.random(256).tolist()
                draws.reverse()
            res.draws += 1
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
                    if not drop:
                        break  # "stop", or "restart" once an input has used its restarts
                    active.remove(pick)  # exhausted: the others' weights renormalise
                    res.gone.append((res.draws, pick))
                    continue
                bufs[pick], pos[pick] = chunk, 0
            out.append(bufs[pick][pos[pick]])
            res.picked(pick)
            pos[pick] += 1
            if len(out) >= 1024:
                await sink.put(out)
                out = []
        if out:
            await sink.put(out)
