"""Order and selection: ``shuffle(buffer, seed=...)`` and ``shard(rank, world_size)``.

Both are inline operators, fused into the task of the stage before them.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
import numpy as np

from .._engine.epoch import EPOCH, epoch_generator
from .._engine.resume import Cut
from .._engine.spec import Chunk, HoldingOp, InlineSpec, Op


class _ShuffleOp(HoldingOp):
    """A buffered shuffle: each new item takes the place of a random buffered one,
    which is emitted. The draws are doubles (one 64-bit draw each), so the order
    does not depend on how the input happens to be chunked.

    For checkpoints it keeps the slot of every draw since the consumer's position, and
    the input numbers in the slots at that position: enough to tell, for any output
    number since, which inputs the buffer held then (see ``resume.py``). Output ``k``
    is draw ``k``, which puts input ``size + k`` in its slot.
    """

    __slots__ = ("as_held", "buf", "draws", "final", "init", "js", "order", "rng", "size", "snap", "snap_at")

    def __init__(self, label: str, size: int, rng: np.random.Generator) -> None:
        super().__init__(label)
        self.size = size
        self.rng = rng
        #: The generator's state before any draw (a checkpoint names it, and the draws).
        self.init: dict[str, Any] = dict(rng.bit_generator.state)
        self.buf: Chunk = []
        #: Draws so far (outputs before the end of the input).
        self.draws = 0
        #: Input numbers in the slots at output ``snap_at`` (None: ``0 .. size-1``, as
        #: after filling), and the slot of each draw since.
        self.snap: list[int] | None = None
        self.snap_at = 0
        self.js: list[int] = []
        #: At the end of the input: the draws before it, and the input numbers of the
        #: buffer in the random order it emitted them.
        self.final: tuple[int, list[int]] | None = None
        #: Resumed within that end: the buffer holds the rest of it, in its order.
        self.as_held = False
        #: Slots by ascending input number, of the items a resumed shuffle takes back.
        self.order: list[int] = []

    def __call__(self, chunk: Chunk) -> Chunk:
        self.seen += len(chunk)
        buf = self.buf
        room = self.size - len(buf)
        if room >= len(chunk):
            buf.extend(chunk)
            return []
        if room > 0:
            buf.extend(chunk[:room])
            chunk = chunk[room:]
        js = (self.rng.random(len(chunk)) * self.size).astype(np.intp).tolist()
        self.js.extend(js)
        self.draws += len(js)
        out: Chunk = []
        append = out.append
        for x, j in zip(chunk, js):
            append(buf[j])
            buf[j] = x
        return out

    def flush(self) -> Chunk:
        buf, self.buf = self.buf, []
        if self.as_held:
            return buf
        slots = self._slots_at(self.draws)
        perm = self.rng.permutation(len(buf)).tolist()
        self.final = (self.draws, [slots[i] for i in perm])
        return [buf[i] for i in perm]

    def demand(self, downstream: int | None) -> int | None:
        if downstream is None:
            return None
        return downstream + self.size - len(self.buf)

    # -- checkpoints ---------------------------------------------------------------------
    def _slots_at(self, r: int) -> list[int]:
        """The input numbers in the slots when ``r`` draws were done (``r >= snap_at``)."""
        pos = list(self.snap) if self.snap is not None else list(range(self.size))
        base, size = self.snap_at, self.size
        for k, j in enumerate(self.js[: r - base], base):
            pos[j] = size + k
        return pos

    def cut(self, r: int) -> Cut:
        if r == 0:
            return Cut(0)
        if r <= self.draws:
            return Cut(r + self.size, {"rng": self.init, "draws": r}, tuple(self._slots_at(r)))
        if self.final is None:  # resumed within the end: it goes out as held
            assert self.as_held
            rest = (self.snap or [])[r - self.snap_at :]  # snap_at: the output number of its first
            return Cut(self.seen, {"rng": self.init, "draws": self.draws, "end": True}, tuple(rest))
        draws, order = self.final
        # The rest of the end, in its order: a resumed shuffle emits it as it holds it.
        return Cut(draws + len(order), {"rng": self.init, "draws": draws, "end": True}, tuple(order[r - draws :]))

    def prune(self, r: int) -> None:
        r = min(r, self.draws)
        if r > self.snap_at:
            self.snap = self._slots_at(r)
            del self.js[: r - self.snap_at]
            self.snap_at = r

    def restore(self, entry: dict[str, Any]) -> None:
        if "rng" in entry:
            self.init = entry["rng"]
            rng = np.random.Generator(np.random.PCG64())
            rng.bit_generator.state = self.init
            draws = int(entry["draws"])
            rng.bit_generator.advance(draws)  # type: ignore[attr-defined]
            self.rng = rng
            self.draws = self.snap_at = draws
            self.as_held = bool(entry.get("end"))
            if self.as_held:
                self.snap_at = int(entry["at"])
        super().restore(entry)

    def take_back(self, held: list[int]) -> None:
        numbers = np.asarray(held)
        if numbers.dtype.kind not in "iu" or numbers.ndim != 1:
            raise ValueError(f"state_dict: the entry of {self.label} has held={held[:5]!r}..., not item numbers")
        self.snap = held
        self.buf = [None] * len(held)
        self.order = np.argsort(numbers).tolist()  # the numbers are distinct

    def put_back(self, rank: int, item: Any) -> None:
        self.buf[self.order[rank]] = item

    def put_back_many(self, rank: int, items: Chunk) -> None:
        buf = self.buf
        for j, x in zip(self.order[rank : rank + len(items)], items):
            buf[j] = x


@attrs.frozen
class Shuffle(InlineSpec):
    buffer: int
    seed: int | None = None

    def describe(self) -> str:
        extra = f", seed={self.seed}" if self.seed is not None else ""
        return f"shuffle({self.buffer}{extra})"

    def out_length(self, n: int) -> int | None:
        return n

    def make(self, label: str) -> Op:
        # make() runs when the pipeline opens: inside repeat(), in the epoch's context.
        return _ShuffleOp(label, self.buffer, epoch_generator(self.seed, EPOCH.get()))


class _ShardOp(Op):
    """Keeps the items whose index ``i`` has ``i % world_size == rank`` (and ``i < stop``)."""

    __slots__ = ("rank", "stop", "world_size")

    def __init__(self, label: str, rank: int, world_size: int, stop: int | None) -> None:
        super().__init__(label)
        self.rank = rank
        self.world_size = world_size
        self.stop = stop
        self.done = stop == 0

    def __call__(self, chunk: Chunk) -> Chunk:
        start = self.seen
        self.seen = start + len(chunk)
        if self.stop is not None and self.seen >= self.stop:
            chunk = chunk[: max(0, self.stop - start)]
            self.done = True
        return chunk[(self.rank - start) % self.world_size :: self.world_size]

    def demand(self, downstream: int | None) -> int | None:
        want = None if downstream is None else downstream * self.world_size
        if self.stop is not None:
            left = self.stop - self.seen
            want = left if want is None else min(want, left)
        return want

    def cut(self, r: int) -> Cut:
        # Right after the input of output r - 1: the stage before may not have made the
        # other ranks' items that follow it yet.
        return Cut(0 if r == 0 else self.rank + (r - 1) * self.world_size + 1)

    def locate(self, positions: list[int]) -> list[int]:
        return [self.rank + p * self.world_size for p in positions]

    def restore(self, entry: dict[str, Any]) -> None:
        super().restore(entry)
        self.done = self.stop is not None and self.seen >= self.stop


@attrs.frozen
class Shard(InlineSpec):
    rank: int
    world_size: int
    #: With ``equal=True``: the number of items before the shard (known at build time,
    #: unless the source does the sharding: see ``_plan``).
    total: int | None = None
    equal: bool = False

    def describe(self) -> str:
        extra = ", equal=True" if self.equal else ""
        return f"shard(rank={self.rank}, world_size={self.world_size}{extra})"

    def out_length(self, n: int) -> int | None:
        stop = n if self.total is None else n // self.world_size * self.world_size
        return len(range(self.rank, stop, self.world_size))

    def make(self, label: str) -> Op:
        stop = None
        if self.total is not None:
            stop = self.total // self.world_size * self.world_size
        return _ShardOp(label, self.rank, self.world_size, stop)


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"shard: the environment variable {name}={raw!r} is not an int") from None


def resolve_shard(rank: object, world_size: object) -> tuple[int, int]:
    """``shard()``'s rank and world size: the arguments, else RANK/WORLD_SIZE, else (0, 1)."""
    for name, value in (("rank", rank), ("world_size", world_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"shard: {name}={value!r} must be an int or None")
    r = rank if rank is not None else _env_int("RANK")
    w = world_size if world_size is not None else _env_int("WORLD_SIZE")
    if r is None and w is None:
        return 0, 1
    if w is None:
        raise ValueError(f"shard: rank={r!r} but no world_size (pass it, or set WORLD_SIZE)")
    if r is None:
        raise ValueError(f"shard: world_size={w!r} but no rank (pass it, or set RANK)")
    assert isinstance(r, int) and isinstance(w, int)
    if w < 1:
        raise ValueError(f"shard: world_size={w!r} must be >= 1")
    if not 0 <= r < w:
        raise ValueError(f"shard: rank={r!r} must be in range(world_size={w})")
    return r, w
