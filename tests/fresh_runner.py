"""Runs one command in a fresh process and reports what it left behind (Linux).

    python fresh_runner.py TIMEOUT GRACE OUT ERR -- COMMAND...

The runner makes itself a *child subreaper* (``PR_SET_CHILD_SUBREAPER``): a process
that the command started and that outlives its parent is re-parented to the runner
instead of to init. Once the command has exited, every process still below the
runner is an orphan of the run: a worker launcher whose main process is gone, a
worker whose launcher is gone. The runner waits ``GRACE`` seconds for them to go
(``PR_SET_PDEATHSIG`` and closed sockets end them), then kills those left.

The command's stdout and stderr go to the files ``OUT`` and ``ERR`` (not pipes: a
lingering orphan that holds a pipe open would make reading it hang). Past
``TIMEOUT`` seconds the command is sent SIGABRT (with ``-X faulthandler`` Python
prints every thread's stack then), and SIGKILL 5 s later. The runner prints one
JSON object: ``returncode``, ``timed_out``, ``orphans`` (pid, name and command
line of each process left, and whether it was still there after the grace).

Only the standard library: the runner must not change what the command imports.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time

_PR_SET_CHILD_SUBREAPER = 36


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return "?"


def _below(root: int) -> dict[int, str]:
    """Live descendants of ``root``: pid -> "name: command line"."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read(f"/proc/{entry}/stat")
        fields = stat.rpartition(")")[2].split()
        if len(fields) < 2 or fields[0] in ("Z", "X"):
            continue
        parent[int(entry)] = int(fields[1])
    found: dict[int, str] = {}
    stack = [root]
    while stack:
        pid = stack.pop()
        for child, ppid in parent.items():
            if ppid == pid and child not in found:
                found[child] = f"{_read(f'/proc/{child}/comm')}: {_read(f'/proc/{child}/cmdline')[:200]}"
                stack.append(child)
    return found


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> None:
    timeout, grace, out, err = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
    assert sys.argv[5] == "--"
    command = sys.argv[6:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
    timed_out = False
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.send_signal(signal.SIGABRT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    me = os.getpid()
    deadline = time.monotonic() + grace
    first: dict[int, str] = {}
    while True:
        _reap()
        left = _below(me)
        for pid, what in left.items():
            first.setdefault(pid, what)
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while _below(me) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.02)
    _reap()
    orphans = [{"pid": pid, "what": what, "after_grace": pid in left} for pid, what in sorted(first.items())]
    print(json.dumps({"returncode": proc.returncode, "timed_out": timed_out, "orphans": orphans}))


if __name__ == "__main__":
    main()
