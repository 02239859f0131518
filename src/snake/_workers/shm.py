"""Shared-memory transport of numpy arrays from worker processes.

A worker writes every large array of a result (alone, or inside tuples, lists
and dicts) into a *segment*, a file in ``/dev/shm``, and sends only the
segment's name, the shape and the dtype through the pipe. The main process
maps the segment once and hands out an ndarray over it: no pickling of the
data, no copy in the main process. Segments are reused: once nothing refers
to an array any more (checked by reference count, see :class:`Segments`), its
segment is lent to the next call and written again; a fresh tmpfs page costs
~16x more to write than a reused one here.

Lifetime: every file name starts with ``snake-<main pid>-``: a stage run's own
files with its prefix ``snake-<main pid>-<token>-``, which are unlinked when the
stage stops (mappings in use stay valid until their arrays are collected). At
that point the run's batch slabs and segments go to the process's
:class:`ShmCache` instead, up to ``SNAKE_SHM_CACHE_BYTES``, renamed
``snake-<main pid>-kept-<n>``: the next stage run of the process writes them again
instead of faulting in fresh pages (a fresh tmpfs page costs several times a
reused one to write). The cache is emptied at exit; files left by a main process
that died are removed the next time a pipeline starts.
"""

from __future__ import annotations

import atexit
import contextlib
import mmap
import os
import sys
import threading
from itertools import count
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
else:

    class _NumPy:
        """NumPy, imported at first use: a worker whose results hold no arrays, and the
        launcher before its first fork, never pay for importing it."""

        def __getattr__(self, name: str) -> Any:
            import numpy

            globals()["np"] = numpy
            return getattr(numpy, name)

    np = _NumPy()


def is_free(holder: Any, key: Any) -> bool:
    """The reuse rule of ``_buffers.reuse`` (imported at first use: it needs NumPy)."""
    from .._buffers.reuse import is_free as rule

    return rule(holder, key)

SHM_DIR = "/dev/shm"
#: Arrays smaller than this are pickled: a file costs ~30 us to create and map.
MIN_SHM_BYTES = 64 * 1024
_PREFIX = "snake-"

_counter = count()
_kept_counter = count()
#: The default of ``SNAKE_SHM_CACHE_BYTES``: bytes of free slabs and segments a process
#: keeps between stage runs (ShmCache); at most a quarter of /dev/shm.
SHM_CACHE_BYTES = 1 << 30
#: And at most this many files (each mapping holds a file descriptor).
SHM_CACHE_FILES = 32
# Fault every page in with one system call instead of one fault per 4 KiB page.
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


def cache_bytes() -> int:
    """``SNAKE_SHM_CACHE_BYTES``, checked (``par_map`` checks it where it is called)."""
    text = os.environ.get("SNAKE_SHM_CACHE_BYTES")
    if text is None:
        return SHM_CACHE_BYTES
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"SNAKE_SHM_CACHE_BYTES={text!r} must be a whole number of bytes >= 0 (0 turns the cache off)")
    return value


def is_kept(name: str) -> bool:
    """Whether ``name`` is a file of a process's :class:`ShmCache`."""
    return name.startswith(_PREFIX) and name.split("-", 3)[2:3] == ["kept"]


def available() -> bool:
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)


def new_prefix() -> str:
    """A fresh name prefix for one stage run of this (main) process."""
    return f"{_PREFIX}{os.getpid()}-{os.urandom(4).hex()}-"


class ShmArray:
    """What crosses the pipe instead of a large array: where its bytes are."""

    __slots__ = ("dtype", "segment", "shape", "size")

    def __init__(self, segment: str, size: int, shape: tuple[int, ...], dtype: str) -> None:
        self.segment = segment
        #: The segment's size in bytes (the main process maps new segments whole).
        self.size = size
        self.shape = shape
        self.dtype = dtype

    def __reduce__(self) -> tuple[Any, ...]:
        return (ShmArray, (self.segment, self.size, self.shape, self.dtype))


# -- worker side ------------------------------------------------------------------------

#: Stage runs whose segments this worker keeps mapped, most recent last. Stages of one
#: trio run can share a WorkerPool, so calls of a few runs alternate on a worker: their
#: mappings are kept (no re-mapping, no re-faulting at every switch), up to this many.
_WORKER_RUNS = 4
#: Segments this worker has mapped: run prefix -> segment name -> mapping.
_worker_maps: dict[str, dict[str, mmap.mmap]] = {}
_worker_prefix = ""


def _unmap(maps: dict[str, mmap.mmap]) -> None:
    for mm in maps.values():
        try:
            mm.close()
        except BufferError:
            pass


def _round_up(n: int) -> int:
    return (n + MIN_SHM_BYTES - 1) // MIN_SHM_BYTES * MIN_SHM_BYTES


#: Kept files (``ShmCache``) this worker has mapped: name -> mapping, across stage runs,
#: until the main process removes the file.
_kept_maps: dict[str, mmap.mmap] = {}
#: At most this many of them (the oldest are unmapped first).
_KEPT_MAPS = 32


def _prune_kept() -> None:
    """Unmap the kept files the main process has removed (their memory is freed then)."""
    gone = [n for n in _kept_maps if not os.path.exists(os.path.join(SHM_DIR, n))]
    _unmap({n: _kept_maps.pop(n) for n in gone})


def worker_run(prefix: str) -> None:
    """In a worker, at each call: make ``prefix`` the current stage run, and unmap the
    files of runs that have ended (the main process removed them) or are the oldest."""
    global _worker_prefix
    if prefix == _worker_prefix:
        return
    _prune_kept()
    current = _worker_maps.pop(prefix, {})
    for old in list(_worker_maps):
        maps = _worker_maps[old]
        first = next(iter(maps), None)
        ended = first is None or not os.path.exists(os.path.join(SHM_DIR, first))
        if ended or len(_worker_maps) >= _WORKER_RUNS:
            _unmap(_worker_maps.pop(old))
    _worker_maps[prefix] = current
    _worker_prefix = prefix


def worker_end_run(prefix: str) -> None:
    """In a worker, when the main process ends a stage run: unmap its segments and its
    progress slots now (mappings still exported are dropped with their last view)."""
    global _worker_prefix
    _unmap(_worker_maps.pop(prefix, {}))
    _prune_kept()
    if _worker_prefix == prefix:
        _worker_prefix = ""
    for path in [p for p in _worker_progress if os.path.basename(p).startswith(prefix)]:
        del _worker_progress[path]


def worker_map(name: str, size: int, populate: bool = True) -> mmap.mmap:
    """In a worker: ``name`` mapped whole (once per stage run; a kept file once until it
    is removed). ``populate`` faults every page in at once (for a segment written whole;
    not for a new slab written a row at a time; always for a kept file, whose pages
    exist: one call maps them several times faster than a fault per page)."""
    kept = is_kept(name)
    maps = _kept_maps if kept else _worker_maps.setdefault(_worker_prefix, {})
    mm = maps.get(name)
    if mm is None:
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR)
        try:
            flags = _MAP_FLAGS if populate or kept else mmap.MAP_SHARED
            mm = maps[name] = mmap.mmap(fd, size, flags=flags)
        finally:
            os.close(fd)
        if kept and len(_kept_maps) > _KEPT_MAPS:
            _unmap({n: _kept_maps.pop(n) for n in list(_kept_maps)[: len(_kept_maps) - _KEPT_MAPS]})
    return mm


class _Exporter:
    """Writes a result's arrays into lent segments, or into new ones."""

    def __init__(self, prefix: str, lent: list[tuple[str, int]]) -> None:
        worker_run(prefix)
        self.prefix = prefix
        self.lent = sorted(lent, key=lambda seg: seg[1])

    def array(self, arr: np.ndarray[Any, Any]) -> ShmArray | np.ndarray[Any, Any]:
        nbytes = arr.nbytes
        for i, (name, size) in enumerate(self.lent):
            if size >= nbytes:
                del self.lent[i]
                try:
                    mm = worker_map(name, size)
                except FileNotFoundError:  # removed from /dev/shm meanwhile (by a user, say)
                    break
                dst: np.ndarray[Any, Any] = np.ndarray(arr.shape, dtype=arr.dtype, buffer=mm)
                np.copyto(dst, arr, casting="no")
                del dst
                return ShmArray(name, size, arr.shape, arr.dtype.str)
        # A new segment: write() fills fresh tmpfs pages ~2x faster than faulting
        # them in through a mapping; it is mapped if it is lent back later.
        size = _round_up(nbytes)
        name = f"{self.prefix}{os.getpid()}-{next(_counter)}"
        path = os.path.join(SHM_DIR, name)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, size)
            data = memoryview(np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data)
            done = 0
            while done < nbytes:
                done += os.pwrite(fd, data[done:], done)
        except OSError:
            # /dev/shm is full (or failing): this array goes through the pipe instead.
            os.close(fd)
            os.unlink(path)
            return arr
        os.close(fd)
        return ShmArray(name, size, arr.shape, arr.dtype.str)

    def walk(self, obj: Any) -> Any:
        """``obj`` with its large arrays exported (the fallback for each is the pipe)."""
        if type(obj) is np.ndarray:
            if obj.nbytes >= MIN_SHM_BYTES and not obj.dtype.hasobject:
                return self.array(obj)
            return obj
        if type(obj) is tuple or type(obj) is list:
            return type(obj)(self.walk(x) for x in obj)
        if type(obj) is dict:
            return {k: self.walk(v) for k, v in obj.items()}
        return obj


def export(obj: Any, prefix: str, lent: list[tuple[str, int]] | None = None) -> Any:
    """In a worker: replace large arrays in ``obj`` by :class:`ShmArray` markers,
    writing them into the ``lent`` segments ``(name, size)`` where they fit."""
    if "numpy" not in sys.modules:
        return obj  # no array can exist before NumPy is imported
    return _Exporter(prefix, lent or []).walk(obj)


# -- main side --------------------------------------------------------------------------


class Segments:
    """The main process's side of a stage run's segments, and their reuse.

    A segment is mapped once. Every array handed out is a view of the segment's
    ``owner`` (a uint8 array over the mapping), and every further view or
    buffer export of it keeps ``owner`` alive; so a segment whose ``owner`` has
    no reference but ours is free, and is lent to a worker to be written again.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._owners: dict[str, np.ndarray[Any, np.dtype[np.uint8]]] = {}
        self._lent: set[str] = set()
        #: The sizes of the segments the workers made in this run.
        self._sizes: set[int] = set()
        #: Segments created so far (for statistics and tests).
        self.created = 0

    def lend(self, most: int) -> list[tuple[str, int]]:
        """Up to ``most`` free segments ``(name, size)``, marked lent until ``returned``."""
        out: list[tuple[str, int]] = []
        if most <= 0:
            return out
        owners = self._owners
        for name in owners:
            if name not in self._lent and is_free(owners, name):
                out.append((name, owners[name].size))
                self._lent.add(name)
                if len(out) >= most:
                    return out
        # Free segments of earlier runs, of a size this run has made (not a batch slab).
        sizes = self._sizes
        for name, owner in cache.take(lambda n: n in sizes, most - len(out)) if sizes else ():
            owners[name] = owner
            out.append((name, owner.size))
            self._lent.add(name)
        return out

    def close(self) -> None:
        """Hand the segments to the process's cache for the next run (mappings in use
        stay valid; a segment is lent again only once no array uses it)."""
        cache.keep(self._owners)
        self._lent.clear()

    def returned(self, lent: list[tuple[str, int]]) -> None:
        for name, _ in lent:
            self._lent.discard(name)

    def _owner(self, marker: ShmArray) -> np.ndarray[Any, np.dtype[np.uint8]]:
        owner = self._owners.get(marker.segment)
        if owner is None:
            path = os.path.join(SHM_DIR, marker.segment)
            fd = os.open(path, os.O_RDWR)
            try:
                mm = mmap.mmap(fd, marker.size, flags=_MAP_FLAGS)
            finally:
                os.close(fd)
            owner = self._owners[marker.segment] = np.frombuffer(mm, dtype=np.uint8)
            self._sizes.add(marker.size)
            self.created += 1
        return owner

    def import_(self, obj: Any) -> Any:
        """Replace markers by arrays over the segments."""
        if type(obj) is ShmArray:
            dtype = np.dtype(obj.dtype)
            nbytes = int(np.prod(obj.shape, dtype=np.int64)) * dtype.itemsize
            return self._owner(obj)[:nbytes].view(dtype).reshape(obj.shape)
        if type(obj) is tuple or type(obj) is list:
            return type(obj)(self.import_(x) for x in obj)
        if type(obj) is dict:
            return {k: self.import_(v) for k, v in obj.items()}
        return obj


def _kept_whole(name: str, new: str, size: int) -> bool:
    """Rename a run's file ``name`` to the kept name ``new`` and give it all its pages
    (False, and the file removed, if /dev/shm cannot; False if it is gone already)."""
    path = os.path.join(SHM_DIR, new)
    try:
        os.rename(os.path.join(SHM_DIR, name), path)
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)
        return False
    finally:
        os.close(fd)
    return True


class ShmCache:
    """The free batch slabs and segments this (main) process keeps between stage runs.

    When a stage run ends, its slabs and segments come here (renamed
    ``snake-<pid>-kept-<n>``, each with its owner array) instead of being removed;
    the next run writes them again, and its workers map their existing pages in one
    call. One still used by an array handed out is lent only once it is free (see
    ``_buffers.reuse``). The oldest are removed beyond ``SNAKE_SHM_CACHE_BYTES`` (at
    most a quarter of /dev/shm), and all of them at exit, or by :meth:`clear`.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        #: Name -> owner (a uint8 array over the mapping), oldest first.
        self.files: dict[str, np.ndarray[Any, np.dtype[np.uint8]]] = {}
        #: Pipelines of several threads (``open_sync()``) end and start runs at once.
        self.lock = threading.Lock()
        self._at_exit = False
        #: Set at exit: a run that ends later (in a daemon thread) keeps nothing.
        self.closed = False

    def _mine(self) -> dict[str, np.ndarray[Any, np.dtype[np.uint8]]]:
        if os.getpid() != self.pid:  # a fork of the process that keeps them: not ours
            self.pid, self.files, self.lock = os.getpid(), {}, threading.Lock()
        return self.files

    def names(self) -> set[str]:
        with self.lock:
            return set(self._mine())

    def take(self, fits: Any, most: int = 1) -> list[tuple[str, np.ndarray[Any, np.dtype[np.uint8]]]]:
        """Up to ``most`` free files whose size ``fits(size)`` accepts, removed from the
        cache (a file removed by someone else meanwhile is dropped)."""
        out: list[tuple[str, np.ndarray[Any, np.dtype[np.uint8]]]] = []
        with self.lock:
            files = self._mine()
            for name in list(files):
                if len(out) >= most:
                    break
                if fits(files[name].size) and is_free(files, name):
                    owner = files.pop(name)
                    if os.path.exists(os.path.join(SHM_DIR, name)):
                        out.append((name, owner))
        return out

    def keep(self, owners: dict[str, np.ndarray[Any, np.dtype[np.uint8]]]) -> None:
        """Take a finished run's files (its dict is emptied): rename, keep, trim. Each
        file gets all its pages (a slab's last batch may have left holes), so that a
        later run never writes onto a page tmpfs cannot give (SIGBUS)."""
        with self.lock:
            files = self._mine()
            for name, owner in list(owners.items()):
                new = name if is_kept(name) else f"{_PREFIX}{os.getpid()}-kept-{next(_kept_counter)}"
                if new != name and not _kept_whole(name, new, owner.size):
                    continue
                files[new] = owner
            owners.clear()
            if files and not self._at_exit:
                self._at_exit = True
                atexit.register(self._exit)
            self._trim(0 if self.closed else None)

    def _limit(self) -> int:
        try:
            st = os.statvfs(SHM_DIR)
        except OSError:
            return 0
        return min(cache_bytes(), st.f_blocks * st.f_frsize // 4)

    def _trim(self, limit: int | None = None) -> None:
        files = self._mine()
        limit = self._limit() if limit is None else limit
        total = sum(owner.size for owner in files.values())
        for name in list(files):
            if total <= limit and len(files) <= SHM_CACHE_FILES:
                break
            total -= files.pop(name).size
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(SHM_DIR, name))

    def clear(self) -> None:
        """Remove every kept file (mappings in use stay valid until their arrays go).
        Workers unmap theirs at their first call of their next stage run."""
        with self.lock:
            self._trim(0)

    def _exit(self) -> None:
        self.closed = True
        self.clear()


#: The process's cache of free slabs and segments.
cache = ShmCache()


def _unlink_matching(keep: Any) -> int:
    """Unlink the files in ``SHM_DIR`` whose name ``keep(name)`` selects; how many."""
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return 0
    removed = 0
    for name in names:
        if keep(name):
            try:
                os.unlink(os.path.join(SHM_DIR, name))
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def cleanup(prefix: str) -> int:
    """Remove the files of a stage run (mappings in use stay valid); returns how many."""
    return _unlink_matching(lambda name: name.startswith(prefix))


def _owner_is_dead(name: str) -> bool:
    if not name.startswith(_PREFIX):
        return False
    pid_text = name[len(_PREFIX) :].split("-", 1)[0]
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def cleanup_stale() -> int:
    """Remove files left by snake main processes that no longer exist."""
    return _unlink_matching(_owner_is_dead)


class Progress:
    """Shared int64 slots: a worker writes into its call's slot the index of the item it
    starts, so that after a crash or a timeout the main process knows which item it was."""

    __slots__ = ("_free", "_mm", "path", "view")

    def __init__(self, prefix: str, slots: int) -> None:
        self.path = os.path.join(SHM_DIR, f"{prefix}progress")
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, 8 * slots)
            self._mm = mmap.mmap(fd, 8 * slots)
        finally:
            os.close(fd)
        self.view: np.ndarray[Any, np.dtype[np.int64]] = np.frombuffer(self._mm, dtype=np.int64)
        self.view[:] = -1
        self._free = list(range(slots))

    def close(self) -> None:
        del self.view
        self._mm.close()

    def take(self) -> int:
        slot = self._free.pop()
        self.view[slot] = -1
        return slot

    def give_back(self, slot: int) -> None:
        self._free.append(slot)

    def read(self, slot: int) -> int:
        return int(self.view[slot])


_worker_progress: dict[str, memoryview] = {}


def progress_view(path: str) -> memoryview:
    """In a worker: the mapped progress slots at ``path`` (mapped once per stage run)."""
    view = _worker_progress.get(path)
    if view is None:
        # A new stage run: keep the slots of the few latest (runs sharing a pool alternate).
        while len(_worker_progress) >= _WORKER_RUNS:
            del _worker_progress[next(iter(_worker_progress))]
        fd = os.open(path, os.O_RDWR)
        try:
            mm = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        view = _worker_progress[path] = memoryview(mm).cast("q")  # int64 slots, as Progress reads them
    return view


# -- batch slots (see slabs) --------------------------------------------------------


class _InSlot:
    """The type of :data:`IN_SLOT`; it unpickles as the same object."""

    __slots__ = ()

    def __reduce__(self) -> str:
        return "IN_SLOT"

    def __repr__(self) -> str:
        return "IN_SLOT"


#: A result a worker wrote into its slot: only this marker crosses the pipe.
IN_SLOT = _InSlot()

Dest = tuple[str, int, int]  # slab name, slab size, byte offset
#: The layout every result must have to be written into its slot, and the slots.
Dests = tuple[tuple[int, ...], str, list[Dest]]



def write_slots(results: list[Any], dests: Dests) -> list[Any]:
    """In a worker: write each result of the expected layout into its slot and return
    a marker for it; anything else goes back as it is (the main process checks it)."""
    shape, dtype_str, slots = dests
    dtype = np.dtype(dtype_str)
    out: list[Any] = []
    for r, (name, size, offset) in zip(results, slots):
        if type(r) is np.ndarray and r.shape == shape and r.dtype == dtype:
            try:
                mm = worker_map(name, size, populate=False)
            except FileNotFoundError:  # removed meanwhile: the main process copies it
                out.append(r)
                continue
            row: np.ndarray[Any, Any] = np.ndarray(shape, dtype=dtype, buffer=mm, offset=offset)
            np.copyto(row, r)
            del row
            out.append(IN_SLOT)
        else:
            out.append(r)
    return out
