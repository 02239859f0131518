"""``assert_no_leaks()``: nothing a pipeline started may outlive it (docs/concurrency.md, rule 1).

A snapshot is taken when the block is entered; when it is left, whatever is new
and still alive is a leak: Python threads (except idle threads of trio's thread
cache; one that was idle at entry and runs a job at exit is a leak), descendant
processes (except the processes snake keeps on purpose: its worker launcher and
the idle workers of its process-wide cache, idle workers of a ``WorkerPool`` that
was open when the block was entered, multiprocessing's own helper processes, and
Ray's own daemons and idle workers) and child processes that exited but were never waited for (zombies), file
descriptors of this process (except those of the processes snake keeps, and
Ray's TCP sockets while Ray runs in this process),
snake's shared-memory files of this process in ``/dev/shm`` and this process's
mappings of them (except those of numpy arrays still reachable: results the
caller holds), and trio tasks of the current run (when the block runs in a trio
task). The OS needs a moment to reap what was stopped, so leaks are looked for
again, on the wall clock, until ``grace`` seconds have passed before they are
reported.
"""

from __future__ import annotations

import gc
import importlib
import inspect
import math
import os
import sys
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, final

import attrs
import trio

from .._engine import tasks
from .._workers import pool as _pool
from .._workers import procs as _procs
from .._workers import ray as _ray
from .._workers import shm

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


def _ray_sockets() -> set[str]:
    """While Ray runs in this process: its TCP connections (``socket:[inode]``), which
    its gRPC clients open and close as actors come and go. snake itself opens no TCP
    socket (its workers are reached through Unix sockets)."""
    ray: Any = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return set()
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        found.update(f"socket:[{fields[9]}]" for fields in map(str.split, lines) if len(fields) > 9)
    return found


def _segments() -> set[str]:
    """snake's files of this process in /dev/shm (other processes' runs share the directory)."""
    prefix = f"snake-{os.getpid()}-"
    try:
        return {name for name in os.listdir(shm.SHM_DIR) if name.startswith(prefix)}
    except OSError:
        return set()


# -- file descriptors and mappings ------------------------------------------------------

#: Where this process's open file descriptors are listed (Linux).
_FD_DIR = "/proc/self/fd"
#: Where this process's memory mappings are listed (Linux).
_MAPS = "/proc/self/maps"
#: Seconds between two searches for arrays that use a mapping (each walks the heap).
_ARRAY_SEARCH_S = 0.25


@attrs.frozen
class _Fd:
    """An open file descriptor, told apart from a later one that reuses its number."""

    number: int
    #: ``st_dev`` and ``st_ino`` of what it refers to.
    dev: int
    ino: int
    #: What ``/proc/self/fd`` says it is: a path, ``socket:[...]``, ``anon_inode:[...]``.
    target: str = attrs.field(eq=False)


def _fds() -> set[_Fd]:
    """This process's open file descriptors, or none where ``/proc`` does not list them."""
    try:
        numbers = os.listdir(_FD_DIR)
    except OSError:
        return set()
    found: set[_Fd] = set()
    for name in numbers:
        fd = int(name)
        try:
            target = os.readlink(os.path.join(_FD_DIR, name))
            st = os.fstat(fd)
        except OSError:
            continue  # closed meanwhile, or the directory listing's own descriptor
        found.add(_Fd(fd, st.st_dev, st.st_ino, target))
    return found


def _kept_fds() -> set[int]:
    """The descriptors of the processes snake keeps: a socket, a pidfd and a stack file
    for each idle worker (of the process-wide cache and of every open pool), and the
    launcher's control socket."""
    workers = list(_procs.cache.idle())
    for pool in list(_pool.open_pools):
        with pool._lock:
            workers.extend(pool._idle)
    fds: set[int] = set()
    for w in workers:
        fds.add(w.sock.fileno())
        if w.pidfd is not None:
            fds.add(w.pidfd)
        fds.add(w.stack_fd)
    launcher = _procs._launcher
    if launcher is not None and launcher.owner == os.getpid():
        fds.add(launcher.sock.fileno())
    fds.discard(-1)
    return fds


@attrs.frozen
class _Mapping:
    """A mapping of one of snake's shared-memory files into this process."""

    start: int
    end: int
    #: ``st_dev`` and ``st_ino`` of the file.
    dev: int
    ino: int
    #: The file, with `` (deleted)`` once it was unlinked.
    path: str


def _mappings() -> set[_Mapping]:
    """This process's mappings of its own shared-memory files, ``/dev/shm/snake-<pid>-*``."""
    prefix = os.path.join(shm.SHM_DIR, f"snake-{os.getpid()}-")
    try:
        with open(_MAPS, encoding="utf-8", errors="replace") as f:
            lines = [line for line in f if prefix in line]
    except OSError:
        return set()
    found: set[_Mapping] = set()
    for line in lines:
        # "start-end perms offset dev inode path": the path may hold spaces.
        fields = line.rstrip("\n").split(maxsplit=5)
        if len(fields) < 6 or not fields[5].startswith(prefix):
            continue
        start, _, end = fields[0].partition("-")
        major, _, minor = fields[3].partition(":")
        dev = os.makedev(int(major, 16), int(minor, 16))
        found.add(_Mapping(int(start, 16), int(end, 16), dev, int(fields[4]), fields[5]))
    return found


def _reachable_array_addresses() -> list[int]:
    """Where the data of every numpy array still reachable from the running program
    starts: from the stacks of its threads, from modules, from objects that C code
    holds; not from garbage, objects that only reference cycles keep alive.

    What is reachable is found as the garbage collector finds it, without collecting:
    an object referenced more often than the tracked objects reference it is held
    from outside them (a stack, C code), and everything it references is reachable.
    With the collector enabled a collection runs first, so that what it would free
    soon is not mistaken for data in use; with it disabled (a test that checks that
    nothing relies on it), data that only garbage holds is a leak.
    """
    np = sys.modules.get("numpy")
    if np is None:
        return []
    if gc.isenabled():
        gc.collect()
    ndarray = np.ndarray
    objs = gc.get_objects()
    index = {id(o): i for i, o in enumerate(objs)}
    inside = [0] * len(objs)
    o = r = None
    for o in objs:
        for r in gc.get_referents(o):
            i = index.get(id(r))
            if i is not None:
                inside[i] += 1
    del o, r
    # sys.getrefcount counts the list objs and its own argument.
    stack = [objs[i] for i in range(len(objs)) if sys.getrefcount(objs[i]) - 2 > inside[i]]
    del inside
    arrays: list[Any] = [o for o in stack if isinstance(o, ndarray)]
    # A running function's frame holds its locals without reporting them to the
    # collector: they are read from its f_locals, a dict that Python fills with them
    # and keeps on the frame; it is emptied again, so that it keeps none of them alive
    # (the function's variables themselves are not in it). Other frames' namespaces
    # are dicts that the collector sees.
    for top in sys._current_frames().values():
        frame: Any = top
        while frame is not None:
            if frame.f_code.co_flags & inspect.CO_OPTIMIZED:
                snapshot = frame.f_locals
                arrays.extend(v for v in snapshot.values() if isinstance(v, ndarray))
                snapshot.clear()
            frame = frame.f_back
    del top, frame
    reached = {id(o) for o in stack}
    while stack:
        for r in gc.get_referents(stack.pop()):
            if isinstance(r, ndarray):
                arrays.append(r)
            if id(r) in index and id(r) not in reached:
                reached.add(id(r))
                stack.append(r)
    del objs, index, reached
    addresses: list[int] = []
    for a in arrays:
        while isinstance(a, ndarray):  # a view, and the arrays it is a view of
            addresses.append(a.__array_interface__["data"][0])
            a = a.base
    return addresses


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
    return set(tasks.walk([root]))


# -- the check --------------------------------------------------------------------------


class _Snapshot:
    __slots__ = (
        "arrays",
        "fds",
        "idle_cache_threads",
        "mappings",
        "pools",
        "processes",
        "root",
        "searched",
        "segments",
        "tasks",
        "threads",
    )

    def __init__(self) -> None:
        self.fds = _fds()
        self.mappings = _mappings()
        #: Reachable arrays' addresses; when they were last searched for, and for which mappings.
        self.arrays: list[int] = []
        self.searched: tuple[float, set[_Mapping]] = (-math.inf, set())
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
            if (pid, started) in self.processes or pid in excused or _ray.is_ray_own_process(proc.cmd):
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
        # The cache of free shared memory snake keeps for the next run: its files, their
        # mappings and the descriptors their mmaps hold are not leaks.
        kept_names = shm.cache.names()
        for name in sorted(_segments() - self.segments - kept_names):
            out.append(f"shared-memory file {os.path.join(shm.SHM_DIR, name)}")
        kept_files = {os.path.join(shm.SHM_DIR, name) for name in kept_names}
        mapped, in_use = self._new_mappings(kept_files)  # first: it may run the garbage collector
        fds = sorted(_fds() - self.fds, key=lambda fd: fd.number)
        for m in mapped:
            # Python's mmap keeps a descriptor of the file it maps: part of the same leak.
            its = [str(fd.number) for fd in fds if (fd.dev, fd.ino) == (m.dev, m.ino)]
            held = f", with file descriptor(s) {', '.join(its)}" if its else ""
            out.append(f"mapping of shared-memory file {m.path} at {m.start:#x}-{m.end:#x}{held}")
        files = {(m.dev, m.ino) for m in (*mapped, *in_use)}
        kept = _kept_fds()
        ray_sockets = _ray_sockets() if any(fd.target.startswith("socket:") for fd in fds) else set()
        for fd in fds:
            if (
                fd.number not in kept
                and (fd.dev, fd.ino) not in files
                and fd.target not in ray_sockets
                and fd.target not in kept_files
            ):
                out.append(f"file descriptor {fd.number}: {fd.target}")
        root = _current_run()
        if root is not None and root is self.root:
            for task in sorted(_tasks(root) - self.tasks, key=lambda t: t.name):
                out.append(f"trio task {task.name!r}")
        return out

    def _new_mappings(self, kept: set[str]) -> tuple[list[_Mapping], list[_Mapping]]:
        """The mappings made since the snapshot, but of the ``kept`` files: those no
        reachable array views (leaks), and those one does (in use)."""

        def made() -> set[_Mapping]:
            return {m for m in _mappings() - self.mappings if m.path not in kept}

        new = made()
        if not new:
            return [], []
        now = time.monotonic()
        # A heap walk: not at every poll, but again for mappings it was not done for.
        if now - self.searched[0] >= _ARRAY_SEARCH_S or not new <= self.searched[1]:
            self.arrays = _reachable_array_addresses()
            new = made()  # the collection it may run unmaps garbage's
            self.searched = (now, new)
        leaked: list[_Mapping] = []
        in_use: list[_Mapping] = []
        for m in sorted(new, key=lambda m: m.start):
            (in_use if any(m.start <= a < m.end for a in self.arrays) else leaked).append(m)
        return leaked, in_use


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
    """Fail if a thread, process, file descriptor, shared-memory file or mapping, or trio
    task started in the block outlives it: ``with assert_no_leaks(): ...`` or, in trio,
    ``async with assert_no_leaks(): ...``.

    What counts, after the block (looked for again for ``grace`` seconds, so that the
    OS can reap what was stopped):

    - Python threads that were not running when the block was entered, except trio's
      idle thread-cache threads (a cache thread running a job is a leak, also one that
      was idle when the block was entered);
    - descendant processes that were not running, except the processes snake keeps on
      purpose (its worker launcher and the idle workers of its process-wide cache), the
      idle workers of a :class:`snake.WorkerPool` that was open when the block was
      entered (its idle Ray actors, for ``backend="ray"``), multiprocessing's resource
      tracker and forkserver, and, while Ray is imported, Ray's own processes (its
      daemons and agents, and its idle workers, ``ray::IDLE``: not snake's actors,
      ``ray::SnakeWorker``, which must be gone); a pool worker
      still running a job, a pool still held by a stage, or a pool entered in the block
      and still open are leaks too; so is a child process started in the block that
      exited but was never waited for (a zombie);
    - file descriptors of this process that were not open (``/proc/self/fd``), except
      those of the processes snake keeps: each idle worker's socket, pidfd and stack
      file, and the launcher's socket; and, while Ray is initialised in this process,
      TCP sockets, which Ray's clients open and close on their own (snake opens none);
    - files of this process's shared-memory segments, ``/dev/shm/snake-<pid>-*``, and
      this process's mappings of them that were not there (``/proc/self/maps``, also
      of files already removed), with the descriptor Python's ``mmap`` keeps of each,
      except those that a numpy array still reachable from the program views: results
      the caller holds are not leaks. An array that only garbage holds (reference
      cycles) excuses nothing: with the garbage collector enabled, a collection runs
      first; with it disabled, that mapping is a leak;
    - when the block runs in a trio task: new tasks of the current run, anywhere in it
      (not from asyncio code, even while a ``snake.aio`` guest run is open).

    Raises ``AssertionError`` listing each leak; if the block raised, the list goes
    into a note on that exception instead. ``ValueError: assert_no_leaks: grace=-1 must
    be >= 0 and finite`` and ``TypeError: assert_no_leaks: grace=... must be a number of
    seconds`` are raised by the call.
    """
    return LeakCheck(check_grace("assert_no_leaks", grace))
