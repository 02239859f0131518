"""Collating a batch: the default collate of ``batch()``, the padding collate of
``pad_batch()``/``bucket_by_length()``, and the buffer pool they write into.

The pool
--------
Writing a 40-150 MB batch into a fresh array costs a page fault (and the kernel's
zeroing) for every page, which can cost as much as the copy itself. So a stage keeps
the arrays it handed out and writes the next batch into one of them once nobody else
can see it any more (``reuse.is_free``): every pooled buffer is a flat ``uint8`` array
(a *slab*), and every batch is a view of a slab, made with ``np.ndarray(shape, dtype,
buffer=slab)``, which holds a reference to it, as does every view made from the batch
(slices, ``np.asarray``, ``memoryview``, ``torch.from_numpy``...).

When a run reaches the end of its input, the free slabs of its pools go to the
stage's :class:`Spare` (kept by the stage's spec, so by the stream): the next run of
the same stream (the next epoch) takes them instead of making new ones. A stream keeps
at most ``POOL_BUFFERS`` spare slabs per stage between runs; dropping the stream frees
them.

A new slab of 1 MiB or more is its own private anonymous mapping, faulted in by the
kernel when it is made (``MAP_POPULATE``: one system call, the GIL released, instead
of a fault per page during the copy). It gets 4 KiB pages unless the system gives huge
pages to every mapping: asking for huge pages (``madvise(MADV_HUGEPAGE)``, which
NumPy does for large arrays) makes the first fault of a run wait while the kernel
compacts memory, 10-20 times the cost of the copy on the machines measured in
docs/performance.md, and copying into 4 KiB pages ran at the same speed there.
"""

from __future__ import annotations

import math
import mmap
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .._engine.util import describe_callable, is_async_callable
from .._ext import pad_stack as _pad_stack
from .._ext import stack as _stack
from .reuse import CAN_REUSE, is_free

Array = npt.NDArray[Any]

#: Buffers one pool keeps at most for large batches. A pool only grows when every
#: buffer it has is still referenced, so it never holds more buffers than were alive
#: at once; the bound keeps a consumer that hoards batches from growing it further.
POOL_BUFFERS = 4
#: Small batches may have more buffers, up to this many bytes in all...
POOL_SMALL_BYTES = 64 << 20
#: ... and this many buffers.
POOL_MAX_BUFFERS = 16
#: Pools (one per array field of the items) one collate keeps at most; batches of
#: further fields are written into fresh arrays.
MAX_POOLS = 64

#: Python and NumPy scalars that the default collate turns into one array.
NUMBER_TYPES: tuple[type, ...] = (int, float, complex, np.number, np.bool_)


class Spare:
    """Free slabs handed from one run of a batching stage to the next (see the module's
    docstring). Thread-safe: runs of one stream may overlap (``open_sync()`` in several
    threads). Pickles as an empty one."""

    __slots__ = ("_lock", "_slabs")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slabs: list[Array] = []

    def __reduce__(self) -> tuple[type[Spare], tuple[()]]:
        return (Spare, ())

    def __len__(self) -> int:
        return len(self._slabs)

    def take(self, nbytes: int) -> Array | None:
        """A free spare slab of ``nbytes`` to ``2 * nbytes`` bytes (the smallest), or None."""
        with self._lock:
            slabs = self._slabs
            # By index: a name bound to a slab would count as a reference to it.
            fits = [
                i for i in range(len(slabs)) if nbytes <= slabs[i].nbytes <= 2 * nbytes and is_free(slabs, i)
            ]
            if not fits:
                return None
            best = min(fits, key=lambda i: self._slabs[i].nbytes)
            return self._slabs.pop(best)

    def give(self, slabs: list[Array]) -> None:
        """Keep ``slabs`` for the next run, the newest ``POOL_BUFFERS`` in all; one that a
        batch still uses is taken only once that batch is gone."""
        if not slabs:
            return
        with self._lock:
            self._slabs.extend(slabs)
            del self._slabs[:-POOL_BUFFERS]


class Pool:
    """Reusable output buffers for one field of one stage, in one run of a pipeline.

    ``empty(shape, dtype)`` returns an uninitialised C-contiguous array: a view of a
    pooled slab that no batch or view refers to any more, or a new array. ``spare``: the
    stage's slabs from earlier runs, taken before making new ones.
    """

    __slots__ = ("_slabs", "grown", "recycled", "reused", "spare", "unpooled")

    def __init__(self, spare: Spare | None = None) -> None:
        self.spare = spare
        #: Slabs taken from an earlier run (counted in ``grown`` too).
        self.recycled = 0
        self._slabs: list[Array] = []
        #: Arrays handed out in a slab that had been used before.
        self.reused = 0
        #: Arrays handed out in a slab allocated for them (and kept for reuse).
        self.grown = 0
        #: Arrays allocated outside the pool: every slab was still referenced.
        self.unpooled = 0

    def __len__(self) -> int:
        return len(self._slabs)

    def capacity(self) -> int:
        """Bytes held by the pool's slabs."""
        return sum(s.nbytes for s in self._slabs)

    def is_free(self, i: int) -> bool:
        """True if nothing but the pool refers to slab ``i`` (always False off CPython)."""
        return is_free(self._slabs, i)

    def hand_on(self) -> None:
        """The run is over: its slabs go to the spare, for the next run."""
        if self.spare is not None:
            self.spare.give(self._slabs)
        self._slabs = []

    def empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Array:
        nbytes = math.prod(shape) * dtype.itemsize
        slabs = self._slabs  # least recently handed out first
        spare = -1
        for i in range(len(slabs) - 1, -1, -1):
            if not self.is_free(i):
                continue
            if slabs[i].nbytes >= nbytes:
                # The most recently used free slab: the likeliest to be in cache.
                if i != len(slabs) - 1:
                    slabs.append(slabs.pop(i))
                self.reused += 1
                return np.ndarray(shape, dtype=dtype, buffer=slabs[-1])
            spare = i
        if spare >= 0 or (CAN_REUSE and len(slabs) < pool_limit(nbytes)):
            if spare >= 0:
                del slabs[spare]  # free, but too small for this batch: replace it
            slab = self.spare.take(nbytes) if self.spare is not None else None
            if slab is None:
                slab = new_slab(nbytes)
            else:
                self.recycled += 1
            slabs.append(slab)
            self.grown += 1
            return np.ndarray(shape, dtype=dtype, buffer=slab)
        self.unpooled += 1
        return np.empty(shape, dtype)


#: Slabs of at least this many bytes are mapped and faulted in by ``new_slab``.
SLAB_MAP_BYTES = 1 << 20
_MAP_FLAGS = (
    mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE
    if hasattr(mmap, "MAP_POPULATE") and hasattr(mmap, "MAP_ANONYMOUS")
    else 0
)


def new_slab(nbytes: int) -> Array:
    """A new flat ``uint8`` slab of ``nbytes``, already faulted in where the OS allows
    (a private anonymous mapping made with ``MAP_POPULATE``, unmapped when the slab is
    freed); a plain ``np.empty`` below ``SLAB_MAP_BYTES`` or elsewhere."""
    if nbytes >= SLAB_MAP_BYTES and _MAP_FLAGS:
        try:
            return np.frombuffer(mmap.mmap(-1, nbytes, flags=_MAP_FLAGS), np.uint8)
        except OSError:  # out of address space or mappings: let NumPy try (and raise)
            pass
    return np.empty(nbytes, np.uint8)


def pool_limit(nbytes: int) -> int:
    """How many buffers of ``nbytes`` a pool keeps: 4, or more for small batches."""
    return min(POOL_MAX_BUFFERS, max(POOL_BUFFERS, POOL_SMALL_BYTES // max(nbytes, 1)))


def _is_plain_array(x: object) -> bool:
    """An ndarray the kernels may copy: not a masked array (its mask would be lost)."""
    if type(x) is np.ndarray:
        return True
    if not isinstance(x, np.ndarray):
        return False
    ma = sys.modules.get("numpy.ma")
    return ma is None or not isinstance(x, ma.MaskedArray)


def format_path(path: tuple[object, ...]) -> str:
    return "".join(f"[{k!r}]" for k in path)


class Collator:
    """The default collate of ``batch()``, one per stage per run (it owns the pools).

    Called with the list of a batch's items; decides by the first item:

    - NumPy arrays: stacked by ``kernels.stack`` into a pooled buffer;
    - Python/NumPy numbers: ``np.asarray(items)``;
    - dicts (any ``Mapping``): a ``dict`` of the collated values of each key;
    - tuples (named tuples too) and lists: collated position by position;
    - anything else: the list of items, unchanged.

    After a failure, :attr:`failure` holds ``(path, index)``: the field and the index
    of the offending item within the batch (``None`` if unknown).
    """

    __slots__ = ("failure", "name", "pools", "spares")

    def __init__(self, name: str = "batch", spares: dict[tuple[object, ...], Spare] | None = None) -> None:
        self.name = name
        self.pools: dict[tuple[object, ...], Pool] = {}
        #: The stage's spare slabs by field, from its spec (None: no carry-over).
        self.spares = spares
        self.failure: tuple[tuple[object, ...], int | None] | None = None

    def __call__(self, items: list[Any]) -> Any:
        self.failure = None
        return self.collate(items, ())

    def release(self) -> None:
        """Forget the pools (at the end of the input): their slabs go to the stage's
        spares, for its next run, which takes each once no batch uses it."""
        for pool in self.pools.values():
            pool.hand_on()
        self.pools.clear()

    def pool(self, path: tuple[object, ...]) -> Pool | None:
        pool = self.pools.get(path)
        if pool is None and len(self.pools) < MAX_POOLS:
            spare = None
            if self.spares is not None:
                spare = self.spares.get(path)
                if spare is None and len(self.spares) < MAX_POOLS:
                    spare = self.spares.setdefault(path, Spare())
            pool = self.pools[path] = Pool(spare)
        return pool

    def fail(self, path: tuple[object, ...], index: int | None) -> None:
        if self.failure is None:  # the innermost failure is the one that names the item
            self.failure = (path, index)

    def collate(self, items: list[Any], path: tuple[object, ...]) -> Any:
        first = items[0]
        if _is_plain_array(first):
            return self.stack(items, path)
        if isinstance(first, NUMBER_TYPES):
            return self.numbers(items, path)
        if isinstance(first, Mapping):
            return self.mapping(items, path)
        if isinstance(first, (tuple, list)):
            return self.sequence(items, path)
        return items

    # -- leaves ----------------------------------------------------------------------
    def stack(self, items: list[Any], path: tuple[object, ...]) -> Array:
        first = items[0]
        out = None
        dtype = first.dtype
        if not dtype.hasobject:
            pool = self.pool(path)
            if pool is not None:
                out = pool.empty((len(items), *first.shape), dtype)
        try:
            return _stack(items, out)
        except (ValueError, TypeError):
            self.fail(path, _first_unlike(items, lambda a: a.shape == first.shape and a.dtype == dtype))
            raise

    def numbers(self, items: list[Any], path: tuple[object, ...]) -> Array:
        try:
            out = np.asarray(items)
        except (ValueError, TypeError, OverflowError):
            out = None
        if out is not None and out.ndim == 1 and out.dtype.kind in "biufc":
            return out
        bad = next((i for i, x in enumerate(items) if not isinstance(x, NUMBER_TYPES)), None)
        self.fail(path, bad)
        if bad is None:  # numbers all, but no numeric dtype holds them (ints beyond 64 bits)
            raise TypeError(
                f"{self.name}: these numbers do not fit one numeric dtype (dtype would be "
                f"{'?' if out is None else out.dtype}); convert them in a map() before batching"
            )
        raise TypeError(
            f"{self.name}: items[{bad}] is {type(items[bad]).__qualname__}, but items[0] is a "
            f"number ({type(items[0]).__qualname__}); a batch of numbers needs numbers only"
        )

    # -- containers ------------------------------------------------------------------
    def mapping(self, items: list[Any], path: tuple[object, ...]) -> dict[Any, Any]:
        keys = items[0].keys()
        for i, x in enumerate(items):
            if not isinstance(x, Mapping) or x.keys() != keys:
                self.fail(path, i)
                if not isinstance(x, Mapping):
                    raise TypeError(
                        f"{self.name}: items[{i}] is {type(x).__qualname__}, but items[0] is a mapping"
                    )
                raise ValueError(
                    f"{self.name}: items[{i}] has keys {sorted(map(repr, x.keys()))}, but "
                    f"items[0] has keys {sorted(map(repr, keys))}; every item of a batch needs the same keys"
                )
        return {k: self.collate([x[k] for x in items], (*path, k)) for k in keys}

    def sequence(self, items: list[Any], path: tuple[object, ...]) -> Any:
        first = items[0]
        n = len(first)
        kind = tuple if isinstance(first, tuple) else list
        # Passes in C on the common path; sequence_mismatch only looks for the culprit.
        types = set(map(type, items))
        if len(types) != 1 and not all(issubclass(t, kind) for t in types):
            self.sequence_mismatch(items, path, kind, n)
        if len(set(map(len, items))) != 1:
            self.sequence_mismatch(items, path, kind, n)
        fields = [self.collate(list(column), (*path, j)) for j, column in enumerate(zip(*items))]
        if kind is list:
            return fields
        if hasattr(first, "_fields"):  # a named tuple
            return type(first)(*fields)
        return tuple(fields)

    def sequence_mismatch(
        self, items: list[Any], path: tuple[object, ...], kind: type[Sequence[Any]], n: int
    ) -> None:
        for i, x in enumerate(items):
            if not isinstance(x, kind):
                self.fail(path, i)
                raise TypeError(
                    f"{self.name}: items[{i}] is {type(x).__qualname__}, but items[0] is a {kind.__name__}"
                )
            if len(x) != n:
                self.fail(path, i)
                raise ValueError(
                    f"{self.name}: items[{i}] has {len(x)} elements, but items[0] has {n}; a "
                    f"{kind.__name__} is collated element by element (use pad_batch() for "
                    f"variable-length sequences, or collate=None to keep the items as they are)"
                )


class PadCollator(Collator):
    """The collate of ``pad_batch()`` and ``bucket_by_length()``.

    Arrays with at least one axis, and lists (converted with ``np.asarray``), are padded
    along their first axis by ``kernels.pad_stack`` into a pooled buffer and become
    ``(batch, lengths)``; dicts and tuples are collated field by field with this same
    rule; everything else goes through the default collate's rules.
    """

    __slots__ = ("multiple", "pad_value")

    def __init__(
        self,
        name: str,
        pad_value: complex,
        multiple: int | None,
        spares: dict[tuple[object, ...], Spare] | None = None,
    ) -> None:
        super().__init__(name, spares)
        self.pad_value = pad_value
        self.multiple = multiple

    def collate(self, items: list[Any], path: tuple[object, ...]) -> Any:
        first = items[0]
        if isinstance(first, list) or (_is_plain_array(first) and first.ndim >= 1):
            return self.pad(items, path)
        return super().collate(items, path)

    def pad(self, items: list[Any], path: tuple[object, ...]) -> tuple[Array, Array]:
        types = set(map(type, items))
        if len(types) == 1 and np.ndarray in types:
            arrays = items
        else:
            arrays = [x if _is_plain_array(x) else np.asarray(x) for x in items]
            if list in types:
                _retype_empty_lists(items, arrays)
        first = arrays[0]
        dtype = first.dtype
        out = None
        pad_to = None
        if not dtype.hasobject:
            try:
                longest = max(map(len, arrays))
            except TypeError:  # a 0-d array: the kernel's error names it
                longest = None
            if longest is not None:
                m = self.multiple
                pad_to = longest if m is None else -(-longest // m) * m
                pool = self.pool(path)
                if pool is not None:
                    out = pool.empty((len(arrays), pad_to, *first.shape[1:]), dtype)
        try:
            return _pad_stack(arrays, self.pad_value, out, pad_to)
        except (ValueError, TypeError):
            rest = first.shape[1:]
            self.fail(
                path, _first_unlike(arrays, lambda a: a.ndim >= 1 and a.shape[1:] == rest and a.dtype == dtype)
            )
            raise


def _retype_empty_lists(items: list[Any], arrays: list[Array]) -> None:
    """``np.asarray([])`` is float64: give empty lists the dtype of the others."""
    like = next((a for a, x in zip(arrays, items) if not (isinstance(x, list) and not x)), None)
    if like is None:
        return
    for i, x in enumerate(items):
        if isinstance(x, list) and not x:
            arrays[i] = np.empty((0, *like.shape[1:]), like.dtype)


def _first_unlike(items: list[Any], like: Callable[[Array], bool]) -> int | None:
    """The index of the first item that is not an array ``like`` items[0] (error path only)."""
    for i, x in enumerate(items):
        if not isinstance(x, np.ndarray) or not like(x):
            return i
    return None


# -- build-time validation (called by Stream's methods) ---------------------------------
def check_collate(method: str, collate: object) -> None:
    """``collate`` must be ``"default"``, ``None`` or a sync function."""
    if collate is None or collate == "default":
        return
    if isinstance(collate, str) or not callable(collate):
        error = ValueError if isinstance(collate, str) else TypeError
        raise error(f"{method}: collate={collate!r} must be 'default', None or a sync function")
    if is_async_callable(collate):
        raise TypeError(
            f"{method} needs a sync collate function; {describe_callable(collate)} is an async function"
        )


def check_pad_value(method: str, pad_value: object) -> None:
    if not isinstance(pad_value, NUMBER_TYPES):
        raise TypeError(f"{method}: pad_value={pad_value!r} must be a bool, int, float or complex")


def _int_list(method: str, name: str, value: object, minimum: int) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{method}: {name}={value!r} must be a sequence of ints")
    out = []
    for i, x in enumerate(value):
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
            raise TypeError(f"{method}: {name}={value!r} must be a sequence of ints ({name}[{i}]={x!r})")
        if x < minimum:
            raise ValueError(f"{method}: {name}={value!r} must hold ints >= {minimum} ({name}[{i}]={x!r})")
        out.append(int(x))
    return tuple(out)


def check_buckets(method: str, boundaries: object, batch_sizes: object) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Validate ``bucket_by_length``'s boundaries and batch sizes; return them as tuples."""
    bounds = _int_list(method, "boundaries", boundaries, 1)
    for i in range(1, len(bounds)):
        if bounds[i] <= bounds[i - 1]:
            raise ValueError(
                f"{method}: boundaries={boundaries!r} must be strictly increasing "
                f"(boundaries[{i}]={bounds[i]} after {bounds[i - 1]})"
            )
    sizes = _int_list(method, "batch_sizes", batch_sizes, 1)
    if len(sizes) != len(bounds) + 1:
        raise ValueError(
            f"{method}: batch_sizes={batch_sizes!r} has {len(sizes)} sizes; it needs "
            f"len(boundaries) + 1 = {len(bounds) + 1}, one per bucket"
        )
    return bounds, sizes
