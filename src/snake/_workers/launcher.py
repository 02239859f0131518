"""The launcher: a single-threaded process that forks worker processes on request.

The main process starts it once (a fresh interpreter, never a fork of the user's
process, which may have threads holding locks), tells it its ``sys.path`` and main
module, and then asks it for workers over a Unix socket, passing each worker's
socket and stack file. The launcher imports the main module and the modules the
stages need (snake's worker side, the user's functions and what they import) once,
so every worker it forks starts warm in a few milliseconds.

Before every fork it checks that it has exactly one thread; if some import
started threads, the worker is started as a fresh interpreter instead (the
reply says so). It exits when the main process closes the socket (or dies), and
its workers die with it (``PR_SET_PDEATHSIG``). It must not import trio.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import sys
import traceback
from typing import Any

from . import child, wire


def _set_environ(env: dict[str, str]) -> None:
    """Make ``os.environ`` (and so the environment a forked or spawned worker inherits)
    exactly ``env``."""
    if env == os.environ:
        return
    for key in [k for k in os.environ if k not in env]:
        del os.environ[key]
    for key, value in env.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _fork_worker(sock_fd: int, stack_fd: int, idle_timeout: float, ctl: socket.socket) -> int:
    me = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            ctl.close()
            child.serve(socket.socket(fileno=sock_fd), stack_fd, me, idle_timeout)
        finally:
            os._exit(1)
    return pid


def _spawn_worker(sock_fd: int, stack_fd: int, idle_timeout: float, main: dict[str, str], modules: list[str]) -> int:
    me = os.getpid()
    boot = "import sys, json; sys.path[:] = json.loads(sys.argv[1]); from snake._workers.child import spawned_main; spawned_main()"
    argv = [
        sys.executable, "-c", boot, json.dumps(sys.path), str(sock_fd), str(stack_fd), str(me),
        repr(idle_timeout), json.dumps(main), json.dumps(modules),
    ]
    pid = os.fork()
    if pid == 0:
        try:
            os.set_inheritable(sock_fd, True)
            os.set_inheritable(stack_fd, True)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.execv(sys.executable, argv)
        finally:
            os._exit(1)
    return pid


def _handle(request: dict[str, Any], fds: list[int], state: dict[str, Any], ctl: socket.socket) -> dict[str, Any]:
    errors: list[str] = []
    sys.path[:] = request["path"]  # as the main process has it now
    _set_environ(request["env"])  # and its environment (the launcher may have started earlier)
    if not state["main_done"]:
        state["main_done"] = True
        try:
            child.import_main(state["main"])
        except BaseException as exc:
            state["main_error"] = "".join(traceback.format_exception(exc)).rstrip()
    if state.get("main_error"):
        errors.append(state["main_error"])
    errors += child.preload(request["modules"])
    sock_fd, stack_fd = fds
    threads = wire.thread_count()
    try:
        if request["mode"] == "spawn" or threads > 1:
            pid = _spawn_worker(sock_fd, stack_fd, request["idle_timeout"], state["main"], request["modules"])
            mode = "spawn"
        else:
            pid = _fork_worker(sock_fd, stack_fd, request["idle_timeout"], ctl)
            mode = "forkserver"
    finally:
        os.close(sock_fd)
        os.close(stack_fd)
    return {"pid": pid, "mode": mode, "threads": threads, "errors": errors}


def main() -> None:
    """``argv``: sys.path (JSON, already applied) and the control socket's fd."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    wire.set_process_name("snake-launcher")
    # Workers are reaped by the kernel as they exit: the main process watches them
    # through pidfds and their sockets, not through exit statuses.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    ctl = socket.socket(fileno=int(sys.argv[2]))
    # The worker side of snake (the shared-memory transport), not its engine, and not
    # NumPy: the user's modules import it if their functions use it (a worker imports
    # it at its first array otherwise), and the first workers start 35 ms sooner.
    child.preload(["snake._workers.remote"])
    got = wire.recv_blocking(ctl)
    if got is None:
        os._exit(0)
    state: dict[str, Any] = {"main": pickle.loads(got[0])["main"], "main_done": False}
    while True:
        got = wire.recv_blocking(ctl, with_fds=2)
        if got is None:
            os._exit(0)  # the main process is gone: the workers die with this process
        request = pickle.loads(got[0])
        try:
            reply = _handle(request, got[1], state, ctl)
        except BaseException as exc:
            reply = {"error": "".join(traceback.format_exception(exc))}
        try:
            wire.send_blocking(ctl, pickle.dumps(reply))
        except OSError:
            os._exit(0)
