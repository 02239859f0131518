"""``assert_no_leaks()``: nothing a pipeline started may outlive it (DESIGN rule 1).

A snapshot is taken when the block is entered; when it is left, whatever is new
and still alive is a leak: Python threads (except idle threads of trio's thread
cache; one that was idle at entry and runs a job at exit is a leak), descendant
processes (except idle workers of a ``WorkerPool`` that was open when the block
was entered, and multiprocessing's own helper processes) and child processes that
exited but were never waited for (zombies), snake's shared-memory files of this
process in ``/dev/shm``, and trio tasks of the current run (when the block runs in
a trio task). The OS needs a moment to reap what was stopped, so leaks are looked
for again, on the wall clock, until ``grace`` seconds have passed before they are
reported.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, final

import attrs
import trio

from .. import _shm
from .._workers import pool as _pool
from .._workers import procs as _procs

if TYPE_CHECKING:
    from typing import Self

#: Name of a trio thread-cache thread while it waits for work (it is renamed while it runs a job).
_IDLE_TRIO_THREAD = "Trio thread "
#: How often a leak is looked for again during the grace period.
_POLL_S = 0.02


def check_grace(method: str, grace: object) -> float:
    if isinstance(grace, bool) or not isinstance(grace, (int, float)):
        raise TypeError(f"{method}: grace={grace!r} must be a number of seconds")
    if not (grace >= 0 and math.isfinite(grace)):
        raise ValueError(f"{method}: grace={grace!r} must be >= 0 and finite")
    return float(grace)


# -- what is alive ----------------------------------------------------------------------


@attrs.frozen
class _Proc:
    """A descendant process as the leak check reports it."""

    #: Its command line (its name, for a zombie, which has none).
    cmd: str
    #: Its parent is this process.
    child: bool
    #: It has exited, but its parent has not waited for it yet.
    zombie: bool


def _linux_descendants() -> dict[tuple[int, str], _Proc]:
    """Descendants of this process from ``/proc``: (pid, start time) -> what it is."""
    parent: dict[int, int] = {}
    start: dict[int, str] = {}
    zombie: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid ... starttime(22nd)": comm may hold spaces and parentheses.
        head, _, tail = stat.rpartition(")")
        fields = tail.split()
        if len(fields) < 20 or fields[0] == "X":
            continue  # dead: it is being reaped
        pid = int(entry)
        parent[pid] = int(fields[1])
        start[pid] = fields[19]
        if fields[0] == "Z":
            zombie[pid] = head.partition("(")[2]
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    me = os.getpid()
    found: dict[tuple[int, str], _Proc] = {}
    stack = list(children.get(me, []))
    while stack:
        pid = stack.pop()
        is_zombie = pid in zombie
        cmd = zombie[pid] if is_zombie else _cmdline(pid)
        found[(pid, start[pid])] = _Proc(cmd, parent[pid] == me, is_zombie)
        stack.extend(children.get(pid, []))
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            text = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return "?"
    return text if len(text) <= 100 else text[:97] + "..."


def _descendants() -> dict[tuple[int, str], _Proc]:
    if os.path.isdir("/proc/self/task"):
        return _linux_descendants()
    try:
        psutil: Any = importlib.import_module("psutil")
    except ImportError:
        import multiprocessing

        # Without /proc or psutil only multiprocessing's own children can be seen (and
        # active_children() reaps those that exited: no zombies).
        return {(p.pid or 0, ""): _Proc(p.name, True, False) for p in multiprocessing.active_children()}
    found: dict[tuple[int, str], _Proc] = {}
    me = os.getpid()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                found[(p.pid, str(p.create_time()))] = _Proc(p.name(), p.ppid() == me, True)
            else:
                found[(p.pid, str(p.create_time()))] = _Proc(
                    " ".join(p.cmdline())[:100], p.ppid() == me, False
                )
        except psutil.Error:
            pass
    return found


def _helper_pids() -> set[int]:
    """multiprocessing's resource tracker and forkserver: started once, kept for the process's life."""
    pids: set[int] = set()
    for module, obj, attr in (
        ("multiprocessing.resource_tracker", "_resource_tracker", "_pid"),
        ("multiprocessing.forkserver", "_forkserver", "_forkserver_pid"),
    ):
        mod = sys.modules.get(module)
        pid = getattr(getattr(mod, obj, None), attr, None)
        if isinstance(pid, int):
            pids.add(pid)
    return pids


def _idle_pool_pids(pools: tuple[_pool.WorkerPool, ...]) -> set[int]:
    """Process ids of the idle workers of ``pools`` (a running worker is not idle)."""
    pids: set[int] = set()
    for pool in pools:
        pids |= pool._idle_pids()
    return pids


def _segments() -> set[str]:
    """snake's files of this process in /dev/shm (other processes' runs share the directory)."""
    prefix = f"snake-{os.getpid()}-"
    try:
        return {name for name in os.listdir(_shm.SHM_DIR) if name.startswith(prefix)}
    except OSError:
        return set()


def _in_trio_task() -> bool:
    # Not current_trio_token(): a guest run (snake.aio on asyncio) stays registered in its
    # thread while the asyncio code around it runs outside any trio task.
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def _current_run() -> trio.lowlevel.Task | None:
    """The root task of the trio run whose task runs this code, or None outside a trio task."""
    return trio.lowlevel.current_root_task() if _in_trio_task() else None


def _tasks(root: trio.lowlevel.Task) -> set[trio.lowlevel.Task]:
    seen: set[trio.lowlevel.Task] = set()
    stack = [root]
    while stack:
        task = stack.pop()
        seen.add(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return seen


# -- the check --------------------------------------------------------------------------


class _Snapshot:
    __slots__ = ("idle_cache_threads", "pools", "processes", "root", "segments", "tasks", "threads")

    def __init__(self) -> None:
        self.threads = set(threading.enumerate())
        self.idle_cache_threads = {t for t in self.threads if t.name.startswith(_IDLE_TRIO_THREAD)}
        self.processes = set(_descendants())
        self.segments = _segments()
        self.pools = tuple(p for p in list(_pool.open_pools) if p._open)
        self.root = _current_run()
        self.tasks = _tasks(self.root) if self.root is not None else set()

    def leaks(self) -> list[str]:
        """What is alive now and was not when the snapshot was taken."""
        out: list[str] = []
        for t in threading.enumerate():
            if not t.is_alive() or t.name.startswith(_IDLE_TRIO_THREAD):
                continue
            if t in self.idle_cache_threads:
                # trio names a cache thread after the job it runs (to_thread.run_sync's
                # "fn from task"): one idle before the block runs a job of the block.
                out.append(f"thread {t.name!r} of trio's thread cache, still running a job")
            elif t not in self.threads:
                out.append(f"thread {t.name!r} (daemon={t.daemon})")
        excused = _helper_pids() | _idle_pool_pids(self.pools) | _procs.kept_pids()
        for (pid, started), proc in sorted(_descendants().items()):
            if (pid, started) in self.processes or pid in excused:
                continue
            if not proc.zombie:
                out.append(f"process {pid}: {proc.cmd}")
            elif proc.child:  # a grandchild is its parent's to wait for
                out.append(f"process {pid}: {proc.cmd}, exited but never waited for (a zombie)")
        for pool in self.pools:
            if not pool._open:
                continue  # closed inside the block: its workers were stopped
            running = pool.statistics().running_workers
            if running:
                out.append(f"{pool!r}: {running} worker(s) still running a job")
            if pool._in_use:
                out.append(f"{pool!r}: still held by a running par_map stage")
        for pool in list(_pool.open_pools):
            if pool._open and pool not in self.pools:
                out.append(f"{pool!r}: entered in the block and still open")
        for name in sorted(_segments() - self.segments):
            out.append(f"shared-memory file {os.path.join(_shm.SHM_DIR, name)}")
        root = _current_run()
        if root is not None and root is self.root:
            for task in sorted(_tasks(root) - self.tasks, key=lambda t: t.name):
                out.append(f"trio task {task.name!r}")
        return out


@final
class LeakCheck:
    """The context manager that :func:`assert_no_leaks` returns: ``with`` and ``async with``.

    Use ``async with`` inside trio: it waits for the grace period in a thread (wall-clock
    time, also under a virtual clock) instead of blocking the event loop. Under asyncio,
    ``async with`` waits with ``asyncio.sleep``.
    """

    __slots__ = ("_context", "_grace", "_snapshot")

    def __init__(self, grace: float, context: str = "") -> None:
        self._grace = grace
        self._context = context
        self._snapshot: _Snapshot | None = None

    def __repr__(self) -> str:
        return f"assert_no_leaks(grace={self._grace!r})"

    def _enter(self) -> None:
        if self._snapshot is not None:
            raise RuntimeError(f"{self!r} is already in use; make a new one for each block")
        self._snapshot = _Snapshot()

    def _message(self, leaks: list[str]) -> str:
        head = f"{len(leaks)} thing(s) started in the block outlived it (checked for {self._grace:g} s after)"
        lines = [f"snake.testing.assert_no_leaks: {head}:", *(f"  - {leak}" for leak in leaks)]
        if self._context:
            lines.insert(0, self._context)
        return "\n".join(lines)

    def _finish(self, leaks: list[str], exc: BaseException | None) -> None:
        self._snapshot = None
        if not leaks:
            return
        message = self._message(leaks)
        if exc is not None:
            # Never hide the block's own exception: the leaks go into a note on it.
            exc.add_note(message)
            return
        raise AssertionError(message)

    def __enter__(self) -> Self:
        self._enter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._snapshot is not None
        deadline = time.monotonic() + self._grace
        while (leaks := self._snapshot.leaks()) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        self._finish(leaks, exc)

    async def __aenter__(self) -> Self:
        self._enter()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._snapshot is not None
        deadline = time.monotonic() + self._grace
        if not _in_trio_task():  # asyncio code (snake.aio): its loop waits
            import asyncio

            while (leaks := self._snapshot.leaks()) and time.monotonic() < deadline:
                await asyncio.sleep(_POLL_S)
            self._finish(leaks, exc)
            return
        # Real time: under a virtual clock (pytest-trio's autojump_clock) trio.sleep returns
        # at once, but the OS reaps threads and processes on the wall clock. The sleep runs
        # in a thread of trio's cache under a limiter of its own (the default one may be full).
        limiter = trio.CapacityLimiter(1)
        with trio.CancelScope(shield=True):
            while (leaks := self._snapshot.leaks()) and time.monotonic() < deadline:
                await trio.to_thread.run_sync(time.sleep, _POLL_S, limiter=limiter)
        self._finish(leaks, exc)


def assert_no_leaks(*, grace: float = 2.0) -> LeakCheck:
    """Fail if a thread, process, shared-memory file or trio task started in the block
    outlives it: ``with assert_no_leaks(): ...`` or, in trio, ``async with assert_no_leaks(): ...``.

    What counts, after the block (looked for again for ``grace`` seconds, so that the
    OS can reap what was stopped):

    - Python threads that were not running when the block was entered, except trio's
      idle thread-cache threads (a cache thread running a job is a leak, also one that
      was idle when the block was entered);
    - descendant processes that were not running, except the idle workers of a
      :class:`snake.WorkerPool` that was open when the block was entered, and
      multiprocessing's resource tracker and forkserver; a pool worker still running
      a job, a pool still held by a stage, or a pool entered in the block and still
      open are leaks too; so is a child process started in the block that exited but
      was never waited for (a zombie);
    - files of this process's shared-memory segments, ``/dev/shm/snake-<pid>-*``;
    - when the block runs in a trio task: new tasks of the current run, anywhere in it
      (not from asyncio code, even while a ``snake.aio`` guest run is open).

    Raises ``AssertionError`` listing each leak; if the block raised, the list goes
    into a note on that exception instead.
    """
    return LeakCheck(check_grace("assert_no_leaks", grace))
