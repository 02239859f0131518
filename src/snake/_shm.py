"""Shared-memory transport of numpy arrays from worker processes.

A worker writes every large array of a result (alone, or inside tuples, lists
and dicts) into a file in ``/dev/shm`` and sends only its name, shape and
dtype through the pipe. The main process maps the file, unlinks it at once
(the mapping lives on until the array is garbage collected) and hands out an
ndarray over the mapping: no pickling of the data, no copy in the main process.

Lifetime: every file name starts with the run's prefix
``snake-<main pid>-<token>-``. Files of results that never reached the main
process (a crashed or killed worker, a cancelled call) are removed when the
stage stops; files left by a main process that died are removed the next time
a pipeline starts.
"""

from __future__ import annotations

import mmap
import os
import secrets
from itertools import count
from typing import Any

import numpy as np

SHM_DIR = "/dev/shm"
#: Arrays smaller than this are pickled: a file costs ~30 us to create and map.
MIN_SHM_BYTES = 64 * 1024
_PREFIX = "snake-"

_counter = count()
# Fault every page in with one system call instead of one fault per 4 KiB page.
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


def available() -> bool:
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)


def new_prefix() -> str:
    """A fresh name prefix for one stage run of this (main) process."""
    return f"{_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-"


class ShmArray:
    """What crosses the pipe instead of a large array."""

    __slots__ = ("name", "shape", "dtype")

    def __init__(self, name: str, shape: tuple[int, ...], dtype: str) -> None:
        self.name = name
        self.shape = shape
        self.dtype = dtype

    def __reduce__(self) -> tuple[Any, ...]:
        return (ShmArray, (self.name, self.shape, self.dtype))


def _export_array(arr: np.ndarray[Any, Any], prefix: str) -> ShmArray:
    name = f"{prefix}{os.getpid()}-{next(_counter)}"
    path = os.path.join(SHM_DIR, name)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, arr.nbytes)
        with mmap.mmap(fd, arr.nbytes, flags=_MAP_FLAGS) as mm:
            dst: np.ndarray[Any, Any] = np.ndarray(arr.shape, dtype=arr.dtype, buffer=mm)
            np.copyto(dst, arr, casting="no")
            del dst
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return ShmArray(name, arr.shape, arr.dtype.str)


def export(obj: Any, prefix: str) -> Any:
    """In a worker: replace large arrays in ``obj`` by :class:`ShmArray` markers."""
    if type(obj) is np.ndarray:
        if obj.nbytes >= MIN_SHM_BYTES and not obj.dtype.hasobject:
            return _export_array(obj, prefix)
        return obj
    if type(obj) is tuple or type(obj) is list:
        return type(obj)(export(x, prefix) for x in obj)
    if type(obj) is dict:
        return {k: export(v, prefix) for k, v in obj.items()}
    return obj


def _import_array(marker: ShmArray) -> np.ndarray[Any, Any]:
    path = os.path.join(SHM_DIR, marker.name)
    dtype = np.dtype(marker.dtype)
    nbytes = int(np.prod(marker.shape, dtype=np.int64)) * dtype.itemsize
    fd = os.open(path, os.O_RDWR)
    try:
        mm = mmap.mmap(fd, nbytes, flags=_MAP_FLAGS)
    finally:
        os.close(fd)
        os.unlink(path)
    # The array keeps the mapping alive; unmapped when the array is collected.
    return np.frombuffer(mm, dtype=dtype).reshape(marker.shape)


def import_(obj: Any) -> Any:
    """In the main process: replace markers by arrays over the shared memory."""
    if type(obj) is ShmArray:
        return _import_array(obj)
    if type(obj) is tuple or type(obj) is list:
        return type(obj)(import_(x) for x in obj)
    if type(obj) is dict:
        return {k: import_(v) for k, v in obj.items()}
    return obj


def discard(obj: Any) -> None:
    """Unlink the files of markers in a result that will not be delivered."""
    if type(obj) is ShmArray:
        try:
            os.unlink(os.path.join(SHM_DIR, obj.name))
        except FileNotFoundError:
            pass
    elif type(obj) is tuple or type(obj) is list:
        for x in obj:
            discard(x)
    elif type(obj) is dict:
        for x in obj.values():
            discard(x)


def cleanup(prefix: str) -> int:
    """Remove the files of a stage run that were never imported; returns how many."""
    removed = 0
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return 0
    for name in names:
        if name.startswith(prefix):
            try:
                os.unlink(os.path.join(SHM_DIR, name))
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def cleanup_stale() -> int:
    """Remove files left by snake main processes that no longer exist."""
    removed = 0
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return 0
    for name in names:
        if not name.startswith(_PREFIX):
            continue
        pid_text = name[len(_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        try:
            os.kill(pid, 0)
            continue  # still alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            os.unlink(os.path.join(SHM_DIR, name))
            removed += 1
        except FileNotFoundError:
            pass
    return removed


class Progress:
    """Shared int64 slots: a worker writes into its call's slot the index of the item it
    starts, so that after a crash or a timeout the main process knows which item it was."""

    __slots__ = ("path", "_mm", "view", "_free")

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

    def take(self) -> int:
        slot = self._free.pop()
        self.view[slot] = -1
        return slot

    def give_back(self, slot: int) -> None:
        self._free.append(slot)

    def read(self, slot: int) -> int:
        return int(self.view[slot])


_worker_progress: dict[str, np.ndarray[Any, np.dtype[np.int64]]] = {}


def progress_view(path: str) -> np.ndarray[Any, np.dtype[np.int64]]:
    """In a worker: the mapped progress slots at ``path`` (mapped once per process)."""
    view = _worker_progress.get(path)
    if view is None:
        fd = os.open(path, os.O_RDWR)
        try:
            mm = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        view = _worker_progress[path] = np.frombuffer(mm, dtype=np.int64)
    return view
