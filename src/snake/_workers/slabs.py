"""``par_map(...).batch(n)``: workers write array results straight into the batch.

When a process ``par_map`` stage is followed by ``batch(n)`` with the default
collate, and its results are plain numpy arrays, the stage's workers write each
result into its row of the batch, a shared-memory *slab*: the main process
copies nothing (otherwise it would copy every byte once more to stack the batch,
and on a 2-core machine that copy is the bottleneck).

The layout (shape, dtype) is learnt from the first result, which comes back the
ordinary way like every result dispatched before it; those are copied into
their rows by the main process. A later result that is not an array of that
layout raises ``ValueError`` as the default collate would. If the first result
is not a plain array, the stage falls back to the ordinary ``batch()``.

Slabs are reused like the collate's pool: a slab is free again when no batch,
view or buffer export of it is alive (``_buffers.reuse``).
"""

from __future__ import annotations

import errno
import mmap
import os
from typing import Any

import numpy as np

from .._buffers.reuse import is_free
from .._engine.resume import Cut
from .._engine.spec import Chunk, Op
from .._engine.util import add_note
from . import shm
from .shm import IN_SLOT, Dests


class SlotBatcher(Op):
    """Stands in for a ``batch(n)`` operator fused after a process ``par_map``."""

    __slots__ = ("active", "fallback", "index", "layout", "made", "op", "owners", "prefix", "size")

    def __init__(self, op: Any, prefix: str) -> None:
        super().__init__(op.label)
        #: The ``batch()`` operator this replaces (its counters are kept up to date,
        #: and it takes over if the results are not arrays).
        self.op = op
        self.prefix = prefix
        self.size: int = op.size
        self.weight = self.size
        self.layout: tuple[tuple[int, ...], np.dtype[Any], int] | None = None
        #: Slab name -> its owner (a uint8 array over the mapping); every batch is a view.
        self.owners: dict[str, np.ndarray[Any, np.dtype[np.uint8]]] = {}
        #: Batch number -> the name of the slab it is written into.
        self.active: dict[int, str] = {}
        #: The number of the next item (a resumed ``batch()`` goes on from its checkpoint).
        self.index = self.seen = int(op.seen)
        self.fallback = False
        self.made = 0

    def close(self) -> None:
        """Hand the slabs to the process's cache for the next run (see ``shm.ShmCache``)."""
        shm.cache.keep(self.owners)
        self.active = {}

    # -- dispatch side -----------------------------------------------------------------
    def dests(self, start: int, n: int) -> Dests | None:
        """Where the workers should write items ``start .. start+n-1`` (None: not yet known)."""
        if self.layout is None or self.fallback:
            return None
        shape, dtype, nbytes = self.layout
        out = []
        for i in range(start, start + n):
            b, k = divmod(i, self.size)
            slab = self._slab(b)
            out.append((slab, self.owners[slab].size, k * nbytes))
        return shape, dtype.str, out

    def _slab(self, b: int) -> str:
        """The name of the slab batch ``b`` is written into: a free one, or a new one."""
        slab = self.active.get(b)
        if slab is not None:
            return slab
        assert self.layout is not None
        busy = set(self.active.values())
        size = self.size * self.layout[2]
        for name in self.owners:
            if name not in busy and is_free(self.owners, name):
                slab = name
                break
        else:
            for slab, owner in shm.cache.take(lambda n: n == size):  # an earlier run's
                self.owners[slab] = owner
                self.active[b] = slab
                return slab
            # Pages of a mapped file that tmpfs cannot back kill the writer with SIGBUS:
            # make sure they fit before a worker writes into them.
            st = os.statvfs(shm.SHM_DIR)
            if st.f_bavail * st.f_frsize < size:
                shm.cache.clear()  # the kept files of earlier runs first
                st = os.statvfs(shm.SHM_DIR)
            if st.f_bavail * st.f_frsize < size:
                raise OSError(
                    errno.ENOSPC,
                    f"batch: {shm.SHM_DIR} has {st.f_bavail * st.f_frsize} bytes free, "
                    f"a batch needs {size}; free some, or pass collate=None or map() between "
                    "par_map and batch() to collate in the main process",
                )
            name = f"{self.prefix}batch-{self.made}"
            self.made += 1
            fd = os.open(os.path.join(shm.SHM_DIR, name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            try:
                os.ftruncate(fd, size)
                mm = mmap.mmap(fd, size)
            finally:
                os.close(fd)
            self.owners[name] = np.frombuffer(mm, dtype=np.uint8)
            slab = name
        self.active[b] = slab
        return slab

    # -- emission side (items arrive in order) -----------------------------------------------
    def __call__(self, chunk: Chunk) -> Chunk:
        if self.fallback:
            return self._delegate(chunk)
        if self.layout is None:
            first = chunk[0]
            if type(first) is not np.ndarray or first.dtype.hasobject or first.nbytes < shm.MIN_SHM_BYTES:
                self.fallback = True
                return self._delegate(chunk)
            self.layout = (first.shape, first.dtype, first.nbytes)
        shape, dtype, nbytes = self.layout
        out: Chunk = []
        for r in chunk:
            i = self.index
            b, k = divmod(i, self.size)
            if r is not IN_SLOT:
                if type(r) is not np.ndarray or r.shape != shape or r.dtype != dtype:
                    what = f"shape {r.shape} dtype {r.dtype}" if isinstance(r, np.ndarray) else type(r).__name__
                    err = ValueError(
                        f"batch: item {k} of batch {b} (index {i}) is {what}; expected an array "
                        f"of shape {shape} dtype {dtype} like the first item"
                    )
                    add_note(err, self.label, i)
                    raise err
                row: np.ndarray[Any, Any] = np.ndarray(shape, dtype=dtype, buffer=self.owners[self._slab(b)], offset=k * nbytes)
                np.copyto(row, r)
                del row
            self.index = i + 1
            if k == self.size - 1:
                out.append(self._emit(b, self.size))
        self.op.seen += len(chunk)
        self.op.emitted += len(out)
        return out

    def _emit(self, b: int, rows: int) -> Any:
        assert self.layout is not None
        shape, dtype, nbytes = self.layout
        slab = self.active.pop(b)
        return self.owners[slab][: rows * nbytes].view(dtype).reshape((rows, *shape))

    def _delegate(self, chunk: Chunk) -> Chunk:
        out: Chunk = self.op(chunk)
        self.op.emitted += len(out)
        return out

    def flush(self) -> Chunk:
        if self.fallback or self.layout is None:
            out: Chunk = self.op.flush()
            self.op.emitted += len(out)
            return out
        rows = self.index % self.size
        if not rows:
            return []
        b = self.index // self.size
        if self.op.drop_last:
            self.active.pop(b, None)
            return []
        self.op.emitted += 1
        return [self._emit(b, rows)]

    def demand(self, downstream: int | None) -> int | None:
        if downstream is None:
            return None
        return max(0, downstream * self.size - self.index % self.size)

    # -- checkpoints: as the batch() it stands for ---------------------------------------
    passes_refill = False

    def cut(self, r: int) -> Cut:
        return Cut(r * self.size)

    def restore(self, entry: dict[str, Any]) -> None:
        self.op.restore(entry)
        super().restore(entry)
        self.index = self.seen
