"""The byte protocol between the main process, the launcher and the workers.

Every message is an 8-byte little-endian length followed by that many bytes (a
pickle, or one of the short markers below). This module is imported by worker
processes and by the launcher: it must not import trio.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import sys

_HEADER = struct.Struct("<Q")
#: A worker that retired (idle past its timeout) sends this instead of a reply.
RETIRE = b"\x00snake-retire"
#: faulthandler in a worker dumps every thread's Python stack on this signal.
STACK_SIGNAL = signal.SIGRTMIN + 4 if hasattr(signal, "SIGRTMIN") else signal.SIGUSR2
#: Set in the environment of the launcher and of every worker process.
WORKER_ENV = "SNAKE_WORKER_PROCESS"
#: Native libraries that would otherwise start threads in the launcher at import
#: (OpenBLAS, OpenMP, MKL: one thread each, as torch's DataLoader workers do; jemalloc
#: in pyarrow: no background thread), and glibc's allocator. Set unless the user set them.
SINGLE_THREAD_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    # pyarrow's jemalloc starts a background purging thread at import.
    "JE_ARROW_MALLOC_CONF": "background_thread:false",
    # Without that thread jemalloc purges inline, on the reading thread: reading Parquet
    # row groups in workers ran 7 % slower than with the C library's allocator
    # (bench/parquet.py, read=False), which arrow then uses instead.
    "ARROW_DEFAULT_MEMORY_POOL": "system",
    # glibc: blocks up to 32 MiB come from the heap, and up to 64 MiB of freed memory is
    # kept, instead of a new mapping (a page fault per 4 KiB page) for every array above
    # malloc's dynamic threshold. A worker building and returning 3 MiB arrays spent
    # 1.1 ms on each np.full without this, 0.46 ms with it (bench/peers arrays: 2.1 ->
    # 2.7 GB/s). Other C libraries ignore these.
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(64 << 20),
}


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


def send_blocking(sock: socket.socket, payload: bytes, fds: list[int] | None = None) -> None:
    data = frame(payload)
    if fds:
        socket.send_fds(sock, [data[:8]], fds)
        data = data[8:]
    sock.sendall(data)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            return None
        got += k
    return bytes(buf)


def recv_blocking(sock: socket.socket, with_fds: int = 0) -> tuple[bytes, list[int]] | None:
    """The next message (and the fds sent with it), or None at end of file."""
    fds: list[int] = []
    if with_fds:
        head, fds, _flags, _addr = socket.recv_fds(sock, 8, with_fds)
        if not head:
            return None
        if len(head) < 8:
            rest = _recv_exact(sock, 8 - len(head))
            if rest is None:
                return None
            head += rest
    else:
        got = _recv_exact(sock, 8)
        if got is None:
            return None
        head = got
    (n,) = _HEADER.unpack(head)
    body = _recv_exact(sock, n)
    if body is None:
        return None
    return body, fds


def thread_count() -> int:
    """Threads of this process, native ones included (Linux), else Python's."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def _prctl(option: int, arg: int) -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)


def set_process_name(name: str) -> None:
    """Name this process as ``ps``, ``top`` and psutil's ``name()`` show it (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):  # a name is only a convenience
            buf = ctypes.create_string_buffer(name.encode()[:15])
            pr_set_name = 15
            ctypes.CDLL(None).prctl(pr_set_name, buf, 0, 0, 0)


def die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent exits (Linux), and exit
    now if the parent is already gone."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        # Without prctl, the worker loop's parent check still ends the worker.
        with contextlib.suppress(Exception):
            _prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(0)
