"""``assert_no_leaks()``: nothing a pipeline started may outlive it (DESIGN rule 1).

A snapshot is taken when the block is entered; when it is left, whatever is new
and still alive is a leak: Python threads (except idle threads of trio's thread
cache), descendant processes (except idle workers of a ``WorkerPool`` that was
open when the block was entered, and multiprocessing's own helper processes),
snake's shared-memory files of this process in ``/dev/shm``, and trio tasks of
the current run. The OS needs a moment to reap what was stopped, so leaks are
looked for again until ``grace`` seconds have passed before they are reported.
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

import trio

from .. import _pool, _shm

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


def _linux_descendants() -> dict[tuple[int, str], str]:
    """Live descendants of this process from ``/proc``: (pid, start time) -> command line."""
    parent: dict[int, int] = {}
    start: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid ... starttime(22nd)": comm may hold spaces and parentheses.
        fields = stat.rpartition(")")[2].split()
        if len(fields) < 20 or fields[0] in ("Z", "X"):
            continue  # a zombie has exited; only its parent's wait() is missing
        pid = int(entry)
        parent[pid] = int(fields[1])
        start[pid] = fields[19]
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[tuple[int, str], str] = {}
    stack = list(children.get(os.getpid(), []))
    while stack:
        pid = stack.pop()
        found[(pid, start[pid])] = _cmdline(pid)
        stack.extend(children.get(pid, []))
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            text = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return "?"
    return text if len(text) <= 100 else text[:97] + "..."


def _descendants() -> dict[tuple[int, str], str]:
    if os.path.isdir("/proc/self/task"):
        return _linux_descendants()
    try:
        psutil: Any = importlib.import_module("psutil")
    except ImportError:
        import multiprocessing

        # Without /proc or psutil only multiprocessing's own children can be seen.
        return {(p.pid or 0, ""): p.name for p in multiprocessing.active_children()}
    found: dict[tuple[int, str], str] = {}
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                found[(p.pid, str(p.create_time()))] = " ".join(p.cmdline())[:100]
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
    """Process ids of the idle workers of ``pools`` (a running worker is not in the cache)."""
    pids: set[int] = set()
    for pool in pools:
        cache = getattr(pool._context, "_worker_cache", None) or ()
        for worker in list(cache):
            pid = getattr(getattr(worker, "proc", None), "pid", None)
            if isinstance(pid, int):
                pids.add(pid)
    return pids


def _segments() -> set[str]:
    """snake's files of this process in /dev/shm (other processes' runs share the directory)."""
    prefix = f"snake-{os.getpid()}-"
    try:
        return {name for name in os.listdir(_shm.SHM_DIR) if name.startswith(prefix)}
    except OSError:
        return set()


def _current_run() -> trio.lowlevel.Task | None:
    """The root task of the trio run of this thread, or None outside trio."""
    try:
        return trio.lowlevel.current_root_task()
    except RuntimeError:
        return None


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
    __slots__ = ("pools", "processes", "root", "segments", "tasks", "threads")

    def __init__(self) -> None:
        self.threads = set(threading.enumerate())
        self.processes = set(_descendants())
        self.segments = _segments()
        self.pools = tuple(p for p in list(_pool.open_pools) if p._context is not None)
        self.root = _current_run()
        self.tasks = _tasks(self.root) if self.root is not None else set()

    def leaks(self) -> list[str]:
        """What is alive now and was not when the snapshot was taken."""
        out: list[str] = []
        for t in threading.enumerate():
            if t in self.threads or not t.is_alive() or t.name.startswith(_IDLE_TRIO_THREAD):
                continue
            out.append(f"thread {t.name!r} (daemon={t.daemon})")
        excused = _helper_pids() | _idle_pool_pids(self.pools)
        for (pid, started), cmd in sorted(_descendants().items()):
            if (pid, started) not in self.processes and pid not in excused:
                out.append(f"process {pid}: {cmd}")
        for pool in self.pools:
            if pool._context is None:
                continue  # closed inside the block: its workers were stopped
            running = pool.statistics().running_workers
            if running:
                out.append(f"{pool!r}: {running} worker(s) still running a job")
            if pool._in_use:
                out.append(f"{pool!r}: still held by a running par_map stage")
        for pool in list(_pool.open_pools):
            if pool._context is not None and pool not in self.pools:
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

    Use ``async with`` inside trio: it waits for the grace period with ``trio.sleep``
    instead of blocking the event loop.
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
        # Real time: under pytest-trio's autojump clock trio.sleep returns at once, but
        # the OS reaps threads and processes on the wall clock.
        deadline = time.monotonic() + self._grace
        with trio.CancelScope(shield=True):
            while (leaks := self._snapshot.leaks()) and time.monotonic() < deadline:
                await trio.sleep(_POLL_S)
        self._finish(leaks, exc)


def assert_no_leaks(*, grace: float = 2.0) -> LeakCheck:
    """Fail if a thread, process, shared-memory file or trio task started in the block
    outlives it: ``with assert_no_leaks(): ...`` or, in trio, ``async with assert_no_leaks(): ...``.

    What counts, after the block (looked for again for ``grace`` seconds, so that the
    OS can reap what was stopped):

    - Python threads that were not running when the block was entered, except trio's
      idle thread-cache threads (a cache thread running a job is a leak);
    - descendant processes that were not running, except the idle workers of a
      :class:`snake.WorkerPool` that was open when the block was entered, and
      multiprocessing's resource tracker and forkserver; a pool worker still running
      a job, a pool still held by a stage, or a pool entered in the block and still
      open are leaks too;
    - files of this process's shared-memory segments, ``/dev/shm/snake-<pid>-*``;
    - when the block runs inside trio: new tasks of the current run, anywhere in it.

    Raises ``AssertionError`` listing each leak; if the block raised, the list goes
    into a note on that exception instead.
    """
    return LeakCheck(check_grace("assert_no_leaks", grace))
