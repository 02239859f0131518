"""The loop a worker process runs: receive a call, run it, send the outcome back.

Imported in worker processes and in the launcher, before any user code: it must
not import trio. A worker

- ignores SIGINT (the main process turns Ctrl-C into cancellation, which kills it);
- dies with its parent: the kernel kills it if the launcher exits (``PR_SET_PDEATHSIG``,
  which works even while it is stuck in native code), and the loop checks its parent
  between calls and every second while idle;
- dumps every thread's Python stack into its stack file on ``STACK_SIGNAL``, so the
  main process can show where a stalled item is;
- retires by itself after ``idle_timeout`` seconds without a call.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import pickle
import select
import signal
import socket
import sys
import time
import traceback
from typing import Any

from . import wire

#: How often an idle worker checks that its parent is alive, in seconds.
_PARENT_CHECK_S = 1.0


def portable(exc: BaseException) -> BaseException:
    """``exc`` with the worker's traceback as a note, or a RemoteError if it cannot pickle."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, chain=False))
    exc.add_note("snake: traceback in the worker process:\n" + tb.rstrip())
    try:
        pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        from .._engine.errors import RemoteError

        return RemoteError(f"{type(exc).__qualname__}: {exc}\n{tb}")
    return exc


def with_path(path: list[str], job: bytes) -> Any:
    """A call sent with the main process's new ``sys.path``: set it, then run the call."""
    sys.path[:] = path
    fn, args = pickle.loads(job)
    return fn(*args)


def _run(job: bytes) -> bytes:
    try:
        fn, args = pickle.loads(job)
        outcome: tuple[bool, Any] = (True, fn(*args))
    except BaseException as exc:
        outcome = (False, portable(exc))
    try:
        return pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException as exc:
        err = exc if outcome[0] else outcome[1]
        return pickle.dumps((False, portable(RuntimeError(f"the result could not be pickled: {err!r}"))))


def serve(sock: socket.socket, stack_fd: int, parent: int, idle_timeout: float) -> None:
    """Serve calls on ``sock`` until the main process closes it, the parent dies or the
    worker has been idle for ``idle_timeout`` seconds; then exit the process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGCHLD"):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    wire.die_with_parent(parent)
    wire.set_process_name("snake-worker")
    try:
        faulthandler.register(wire.STACK_SIGNAL, file=stack_fd, all_threads=True, chain=False)
        # A fatal signal (SIGSEGV, SIGABRT, ...) leaves its Python traceback there too,
        # for the main process to quote in WorkerCrashedError.
        faulthandler.enable(file=stack_fd, all_threads=True)
    except (ValueError, OSError, RuntimeError):
        pass
    sock.setblocking(True)
    idle_since = time.monotonic()
    while True:
        wait = min(_PARENT_CHECK_S, max(0.0, idle_since + idle_timeout - time.monotonic()))
        ready, _, _ = select.select([sock], [], [], wait)
        if not ready:
            if os.getppid() != parent:
                break
            if time.monotonic() - idle_since >= idle_timeout:
                try:
                    wire.send_blocking(sock, wire.RETIRE)
                except OSError:
                    pass
                break
            continue
        got = wire.recv_blocking(sock)
        if got is None:
            break  # the main process let this worker go (or died)
        reply = _run(got[0])
        try:
            wire.send_blocking(sock, reply)
        except OSError:
            break
        idle_since = time.monotonic()
    _exit()


def _exit() -> None:
    # Never run atexit handlers or finalizers inherited from the launcher (or, for a
    # forked worker, from the user's process): flush what the user printed and go.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken stream: nothing to flush
            stream.flush()
    os._exit(0)


def import_main(main: dict[str, Any]) -> None:
    """Import the user's main module as ``__mp_main__`` (its ``if __name__ ==
    "__main__"`` block does not run), so that functions defined there unpickle. Its
    ``sys.argv`` is the parent's, as under multiprocessing."""
    import multiprocessing  # noqa: F401  (its first import aliases __mp_main__ to __main__)
    import runpy
    import types

    if "argv" in main:
        sys.argv = list(main["argv"])
    if "name" in main:
        content = runpy.run_module(main["name"], run_name="__mp_main__", alter_sys=False)
    elif "path" in main:
        content = runpy.run_path(main["path"], run_name="__mp_main__")
    else:
        return
    module = types.ModuleType("__mp_main__")
    module.__dict__.update(content)
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module


def preload(modules: list[str]) -> list[str]:
    """Import ``modules``; the errors as text (an import that fails is the call's to report)."""
    errors = []
    for name in modules:
        if name in sys.modules:
            continue
        try:
            __import__(name)
        except BaseException as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    return errors


def spawned_main() -> None:
    """Entry point of a worker started as a fresh interpreter (``worker_type="spawn"``):
    ``argv`` = sys.path (JSON, already applied), socket fd, stack fd, parent pid,
    idle timeout, main module (JSON), modules to import (JSON)."""
    sock_fd, stack_fd, parent = (int(a) for a in sys.argv[2:5])
    idle_timeout = float(sys.argv[5])
    main, modules = json.loads(sys.argv[6]), json.loads(sys.argv[7])
    sock = socket.socket(fileno=sock_fd)
    try:
        import_main(main)  # sets sys.argv to the parent's
    except BaseException:
        traceback.print_exc()
    preload(modules)
    serve(sock, stack_fd, parent, idle_timeout)
