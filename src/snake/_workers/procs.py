"""Worker processes, as the main process sees them: start, call, kill, cache.

snake runs its own small process layer rather than trio-parallel's (see
docs/concurrency.md, "Worker processes"):

- Workers start from the *launcher*, a single-threaded process started once per
  main process (``launcher.py``), never by forking the user's process; or, for
  ``worker_type="spawn"``, as fresh interpreters; or, only when asked for with
  ``worker_type="fork"``, by forking the user's process.
- Each worker is reached through a Unix socket; its pid is known, and held as a
  pidfd, so the main process can kill it, wait for it and ask it for its stack.
- Idle workers wait in a process-wide cache, reused by every later stage, run,
  epoch and ``open()`` of the process; a worker idle for ``IDLE_TIMEOUT`` seconds
  exits by itself.
- A call that is cancelled, or that fails in transport, kills its worker: no call
  is ever abandoned to run on.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import trio

from . import wire

logger = logging.getLogger("snake")

#: Seconds a cached worker waits for a call before it exits; ``SNAKE_WORKER_IDLE_TIMEOUT``.
IDLE_TIMEOUT = float(os.environ.get("SNAKE_WORKER_IDLE_TIMEOUT", "60"))
#: Seconds to wait for a killed worker to be gone.
_KILL_WAIT_S = 5.0
#: The launcher's entry point, run as a script (see boot.py).
_BOOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "boot.py")
_HAS_PIDFD = hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")


class WorkerDied(Exception):
    """The worker process ended while it ran a call (or before it could take one)."""

    #: How it ended, in a few words, when known: ``"Fatal Python error: Segmentation
    #: fault"``, or that it left no Python error (``os._exit``, a kill signal).
    how = ""


class WorkerRetired(Exception):
    """The worker retired (idle timeout) just as a call was sent: the call did not run."""


def _main_module() -> dict[str, Any]:
    """How a worker imports the user's main module (as multiprocessing's spawn does),
    with the ``sys.argv`` it sees (a module that reads its arguments at import)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    argv = [str(a) for a in sys.argv]
    if isinstance(name, str) and name and name != "__main__":
        return {"name": name, "argv": argv}
    path = getattr(main, "__file__", None)
    if isinstance(path, str) and os.path.exists(path) and not sys.flags.interactive:
        return {"path": os.path.abspath(path), "argv": argv}
    return {}


#: Modules every worker should have imported before it is forked (``preload``).
_preload: dict[str, None] = dict.fromkeys(["snake._workers.remote"])


def preload(*modules: str) -> None:
    """Have every worker started from now on import ``modules`` before it starts
    (in the launcher, once). For modules that stages need in their workers."""
    for m in modules:
        _preload.setdefault(m, None)


# -- the launcher -----------------------------------------------------------------------


def _worker_env() -> dict[str, str]:
    """The environment of the launcher and its workers: the main process's, with
    WORKER_ENV set, and the single-thread settings the user did not set."""
    env = dict(os.environ)
    env[wire.WORKER_ENV] = "1"
    for var, value in wire.SINGLE_THREAD_ENV.items():
        env.setdefault(var, value)
    return env


class _Launcher:
    """The main process's end of the launcher (one per process; restarted if it dies)."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = _worker_env()
        import json

        try:
            self.proc = subprocess.Popen(
                [sys.executable, _BOOT, json.dumps(sys.path), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            theirs.close()
        self.sock = ours
        self.pid = self.proc.pid
        self.owner = os.getpid()
        self.warned: set[str] = set()
        wire.send_blocking(ours, pickle.dumps({"main": _main_module()}))

    def start(self, mode: str, sock_fd: int, stack_fd: int, idle_timeout: float) -> dict[str, Any]:
        """Ask for a worker (blocking: a fork there takes a few ms, the first call the
        launcher's imports)."""
        request = {
            "mode": mode,
            "modules": list(_preload),
            "idle_timeout": idle_timeout,
            "path": list(sys.path),
            # as the main process has it now, not when the launcher started
            "env": _worker_env(),
        }
        try:
            wire.send_blocking(self.sock, pickle.dumps(request), [sock_fd, stack_fd])
            got = wire.recv_blocking(self.sock)
        except OSError as exc:
            raise WorkerDied(f"the worker launcher (pid {self.pid}) is gone: {exc}") from exc
        if got is None:
            raise WorkerDied(f"the worker launcher (pid {self.pid}) exited")
        reply: dict[str, Any] = pickle.loads(got[0])
        if "error" in reply:
            raise RuntimeError(f"snake: the worker launcher could not start a worker:\n{reply['error']}")
        for error in reply["errors"]:
            if error not in self.warned:
                self.warned.add(error)
                logger.warning("snake: worker processes could not import: %s", error)
        if mode != "spawn" and reply["mode"] == "spawn" and "threads" not in self.warned:
            self.warned.add("threads")
            logger.warning(
                "snake: the worker launcher has %d threads after importing the modules the workers "
                "need, and a process with threads is never forked: workers start as fresh "
                "interpreters instead (slower to start)",
                reply["threads"],
            )
        return reply

    def close(self) -> None:
        self.sock.close()
        try:
            self.proc.wait(_KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def alive(self) -> bool:
        return self.proc.poll() is None


_launcher: _Launcher | None = None
_launcher_lock = threading.Lock()


def launcher_pid() -> int | None:
    """The launcher's pid, if this process has started one."""
    la = _launcher
    return la.pid if la is not None and la.owner == os.getpid() else None


def prestart() -> None:
    """Start the launcher now, if this process has none, without waiting for it: its
    start-up (a fresh interpreter importing the worker side of snake) then overlaps
    whatever the program does before its first run; the main module, the stage's
    modules and the environment come with the first request for a worker, as they
    are then. Called where a stage that needs worker processes is built; does
    nothing in a worker process, or while another thread is starting workers."""
    if os.environ.get(wire.WORKER_ENV) or not _launcher_lock.acquire(blocking=False):
        return
    try:
        _live_launcher()
    except OSError:
        pass  # the first worker's start tries again, and reports what fails
    finally:
        _launcher_lock.release()


def _live_launcher() -> _Launcher:
    """This process's launcher, started (again) if it has none alive; hold the lock."""
    global _launcher
    la = _launcher
    if la is None or la.owner != os.getpid() or not la.alive():
        if la is not None and la.owner == os.getpid():
            la.close()
        _launcher = None
        la = _launcher = _Launcher()
    return la


def _start_from_launcher(mode: str, sock_fd: int, stack_fd: int, idle_timeout: float) -> int:
    global _launcher
    if os.environ.get(wire.WORKER_ENV):
        raise RuntimeError(
            "snake: a pipeline with process workers was opened inside a worker process; "
            "a script that opens pipelines must run them under `if __name__ == \"__main__\":` "
            "(worker processes import the main module)"
        )
    with _launcher_lock:
        for attempt in (0, 1):
            la = _live_launcher()
            try:
                return int(la.start(mode, sock_fd, stack_fd, idle_timeout)["pid"])
            except WorkerDied:
                if attempt:
                    raise
                la.close()
                _launcher = None
    raise AssertionError("unreachable")


# -- one worker -------------------------------------------------------------------------


class ProcWorker:
    """A worker process and the main process's socket to it."""

    __slots__ = ("dead", "idle_since", "mode", "path", "pid", "pidfd", "runs", "sock", "stack_fd")

    def __init__(self, mode: str, idle_timeout: float = IDLE_TIMEOUT) -> None:
        """Start a worker (blocking: run it in a thread)."""
        #: The worker's sys.path: the main process's as the worker starts, and as each
        #: later call that found it changed set it.
        self.path = list(sys.path)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        stack_fd = os.memfd_create("snake-worker-stack", os.MFD_CLOEXEC) if hasattr(os, "memfd_create") else -1
        try:
            if mode == "fork":
                self.pid = _fork_here(ours, theirs, stack_fd, idle_timeout)
            else:
                # The launcher gets its own copies of the fds (SCM_RIGHTS).
                self.pid = _start_from_launcher(mode, theirs.fileno(), stack_fd, idle_timeout)
        except BaseException:
            ours.close()
            if stack_fd >= 0:
                os.close(stack_fd)
            raise
        finally:
            theirs.close()
        self.mode = mode
        self.sock = ours
        self.stack_fd = stack_fd
        self.pidfd = _pidfd(self.pid)
        self.sock.setblocking(False)
        self.dead = False
        self.idle_since = time.monotonic()
        #: Shared-memory run prefixes whose segments this worker may have mapped.
        self.runs: set[str] = set()

    def __repr__(self) -> str:
        return f"<snake worker process {self.pid} ({self.mode}){' dead' if self.dead else ''}>"

    # -- state -----------------------------------------------------------------------------
    def alive(self) -> bool:
        """False once the process has ended, or has retired (it wrote or closed its socket)."""
        if self.dead:
            return False
        import select

        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            readable = [self.sock]
        if readable:  # an idle worker only ever writes RETIRE, or closes its end
            self.discard()
            return False
        return True

    def kill(self) -> None:
        if self.dead:
            return
        try:
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except (ProcessLookupError, OSError):
            pass

    def discard(self, wait: float = _KILL_WAIT_S) -> None:
        """Kill the process, wait (up to ``wait`` s) for it to be gone, close every fd."""
        if self.dead:
            return
        self.kill()
        self._wait_gone(wait)
        self.dead = True
        self.sock.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        if self.stack_fd >= 0:
            os.close(self.stack_fd)
            self.stack_fd = -1

    def _wait_gone(self, wait: float) -> None:
        import select

        if self.pidfd is not None:
            select.select([self.pidfd], [], [], wait)
        if self.mode == "fork":  # our own child: reap it
            try:
                os.waitpid(self.pid, 0 if self.pidfd is not None else os.WNOHANG)
            except ChildProcessError:
                pass

    # -- calls -----------------------------------------------------------------------------
    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the worker: its value, or its exception re-raised here.

        Cancelled, or failing to exchange the call: the worker is killed (and waited
        for) before the exception propagates. ``WorkerDied`` if it ended meanwhile.
        """
        job = pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
        if sys.path != self.path:
            # The main process's sys.path changed since the worker started (a cached
            # worker, a script that extends its path): the worker takes the new one
            # before it unpickles the call, which may import from it.
            from .child import with_path

            self.path = list(sys.path)
            job = pickle.dumps((with_path, (self.path, job)), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            await _send(self.sock, wire.frame(job))
            reply = await _recv(self.sock)
        except BaseException as exc:
            if isinstance(exc, OSError):
                raise self._died(f": {exc}") from exc
            self.discard()
            raise
        if reply is None:
            raise self._died(" died")
        if reply == wire.RETIRE:
            self.discard()
            raise WorkerRetired
        ok, value = pickle.loads(reply)
        if not ok:
            raise value
        return value

    def _died(self, what: str) -> WorkerDied:
        """The worker is gone: a WorkerDied quoting what it wrote to its stack file as it
        died (faulthandler's report of a fatal signal), then let it go."""
        text = ""
        if self.stack_fd >= 0:
            self._wait_gone(0.5)  # faulthandler has written by the time the process is gone
            size = os.fstat(self.stack_fd).st_size
            text = os.pread(self.stack_fd, size, 0).decode("utf-8", "replace").strip("\0").strip()
        self.discard()
        if text:
            err = WorkerDied(f"worker process {self.pid}{what}:\n{text}")
            err.how = text.splitlines()[0]
        else:
            err = WorkerDied(f"worker process {self.pid}{what}")
            err.how = "it left no Python error: os._exit, a kill signal, or the out-of-memory killer"
        return err

    def stack(self, timeout: float = 1.0) -> str:
        """Every thread's Python stack in the worker, as faulthandler writes it (blocking)."""
        if self.dead or self.stack_fd < 0:
            return "(no stack: the worker has no stack file)"
        os.ftruncate(self.stack_fd, 0)
        os.lseek(self.stack_fd, 0, os.SEEK_SET)
        try:
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, wire.STACK_SIGNAL)
            else:
                os.kill(self.pid, wire.STACK_SIGNAL)
        except OSError as exc:
            return f"(no stack: {exc})"
        deadline = time.monotonic() + timeout
        size = -1
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now = os.fstat(self.stack_fd).st_size
            if now and now == size:
                break
            size = now
        text = os.pread(self.stack_fd, max(size, 0) or 65536, 0).decode("utf-8", "replace")
        os.ftruncate(self.stack_fd, 0)  # empty again: only a fatal error writes there now
        os.lseek(self.stack_fd, 0, os.SEEK_SET)
        return text.strip("\0").rstrip() or "(no stack: the worker did not answer)"


def _pidfd(pid: int) -> int | None:
    if not _HAS_PIDFD:
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def _fork_here(ours: socket.socket, theirs: socket.socket, stack_fd: int, idle_timeout: float) -> int:
    """``worker_type="fork"``: fork the user's process itself (see WorkerType's warning)."""
    from . import child

    me = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            child.serve(theirs, stack_fd, me, idle_timeout)
        finally:
            os._exit(1)
    return pid


async def _send(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = sock.send(view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        view = view[n:]
    await trio.lowlevel.checkpoint_if_cancelled()


async def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        try:
            k = sock.recv_into(view[got:])
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
            continue
        if not k:
            return None
        got += k
    return bytes(buf)


async def _recv(sock: socket.socket) -> bytes | None:
    head = await _recv_exact(sock, 8)
    if head is None:
        return None
    return await _recv_exact(sock, int.from_bytes(head, "little"))


# -- the process-wide cache -------------------------------------------------------------


class WorkerCache:
    """Idle workers, by how they were started, shared by every stage of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[str, collections.deque[ProcWorker]] = {}
        self._owner = os.getpid()

    def take(self, mode: str) -> ProcWorker | None:
        """The most recently used idle worker that is still alive, or None."""
        with self._lock:
            if self._owner != os.getpid():  # a fork of the user's process: not ours
                self._idle = {}
                self._owner = os.getpid()
            idle = self._idle.get(mode)
            while idle:
                worker = idle.pop()
                if worker.alive():
                    return worker
        return None

    def give(self, worker: ProcWorker) -> None:
        if worker.dead:
            return
        worker.idle_since = time.monotonic()
        with self._lock:
            self._idle.setdefault(worker.mode, collections.deque()).append(worker)

    def claim(self, mode: str, prefix: str) -> list[ProcWorker]:
        """Take out the idle workers that served the shared-memory run ``prefix``."""
        with self._lock:
            idle = self._idle.get(mode)
            if not idle:
                return []
            mine = [w for w in idle if prefix in w.runs]
            for w in mine:
                idle.remove(w)
            return mine

    def idle(self) -> list[ProcWorker]:
        with self._lock:
            return [w for q in self._idle.values() for w in q if not w.dead]

    def shutdown(self) -> None:
        """Stop every idle worker (closing its socket ends it; kill any that lingers)."""
        with self._lock:
            workers = [w for q in self._idle.values() for w in q]
            self._idle = {}
        for w in workers:
            w.discard(wait=1.0)


#: The process-wide cache of idle workers.
cache = WorkerCache()


async def start_worker(mode: str) -> ProcWorker:
    """A new worker, started in a thread (the first one waits for the launcher's imports)."""
    return await trio.to_thread.run_sync(ProcWorker, mode)


def _at_exit() -> None:
    cache.shutdown()
    global _launcher
    la = _launcher
    if la is not None and la.owner == os.getpid():
        _launcher = None
        la.close()


atexit.register(_at_exit)


def kept_pids() -> set[int]:
    """Processes snake keeps on purpose: the launcher and the idle workers of the
    process-wide cache (leak checks excuse these)."""
    pids = {w.pid for w in cache.idle()}
    la = launcher_pid()
    if la is not None:
        pids.add(la)
    return pids


