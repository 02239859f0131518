"""Order and selection: ``shuffle(buffer, seed=...)`` and ``shard(rank, world_size)``.

Both are inline operators, fused into the task of the stage before them.
"""

from __future__ import annotations

import os

import attrs
import numpy as np

from .._engine.epoch import EPOCH, epoch_generator
from .._engine.spec import Chunk, InlineSpec, Op


class _ShuffleOp(Op):
    """A buffered shuffle: each new item takes the place of a random buffered one,
    which is emitted. The draws are doubles (one 64-bit draw each), so the order
    does not depend on how the input happens to be chunked."""

    __slots__ = ("buf", "rng", "size")

    def __init__(self, label: str, size: int, rng: np.random.Generator) -> None:
        super().__init__(label)
        self.size = size
        self.rng = rng
        self.buf: Chunk = []

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
        out: Chunk = []
        append = out.append
        for x, j in zip(chunk, js):
            append(buf[j])
            buf[j] = x
        return out

    def flush(self) -> Chunk:
        buf, self.buf = self.buf, []
        return [buf[i] for i in self.rng.permutation(len(buf)).tolist()]

    def demand(self, downstream: int | None) -> int | None:
        if downstream is None:
            return None
        return downstream + self.size - len(self.buf)


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
