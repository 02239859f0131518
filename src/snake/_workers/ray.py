"""The Ray backend: ``par_map(fn, backend="ray")`` on Ray actors.

Ray is optional, so this module never imports it at the top: ``import snake``,
building a stream and the leak check read it without Ray installed; ``ray`` is
imported when a stage first runs (and at build time, to check the options).

- :class:`SnakeWorker` is what runs in an actor: the stage's function (sent once
  per actor, then kept) over units of items, with the index of the item it is on
  and its stack readable from a second thread (the ``"watch"`` concurrency group).
- :class:`Actors` is a set of at most ``workers`` actors: one stage run's own, or a
  ``WorkerPool(backend="ray")``'s, kept across runs. A call that is cancelled,
  times out or loses its actor gets that actor killed (``ray.kill``); a new one
  replaces it at the next call. Actors that Ray cannot place yet (their
  ``ray_options`` ask for more than the cluster has free) are waited for, but an
  idle actor coming back is taken first.
- :class:`RayBackend` runs one stage run's units on them. A unit's result is
  awaited through Ray's completion callback (``ObjectRef.future()``), with no
  thread per call; each actor runs one unit at a time, so at most ``workers``
  units are outstanding.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import importlib.util
import itertools
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import trio

from .backend import Backend, Chunk, Failure, Lost, Running, apply
from .child import portable

if TYPE_CHECKING:
    from typing import Self

logger = logging.getLogger("snake")

#: The actor class's name: Ray names its processes ``ray::SnakeWorker``.
ACTOR_CLASS = "SnakeWorker"
#: ``ray_options`` keys that snake sets itself: an actor runs one unit at a time
#: (plus its watch thread), is never restarted by Ray (snake retries the items on
#: a fresh actor) and never outlives the stage or pool that started it.
MANAGED_OPTIONS = (
    "concurrency_groups",
    "get_if_exists",
    "lifetime",
    "max_concurrency",
    "max_restarts",
    "max_task_retries",
    "name",
)
#: What every actor asks of Ray unless ``ray_options`` says otherwise: one CPU, like
#: a worker process, so that Ray spreads the actors over the cluster's CPUs.
DEFAULT_OPTIONS: dict[str, Any] = {"num_cpus": 1}
#: Failed actor starts in a row after which a stage gives up.
_START_FAILURES = 3
#: Functions an actor keeps (a pool's actors serve many stages).
_KEEP_FNS = 16
#: Seconds to wait for an actor's stack in a stall warning.
_STACK_WAIT_S = 5.0

INSTALL_HINT = "pip install 'snake[ray]' (or pip install ray)"


# -- without importing ray ----------------------------------------------------------------


def available() -> bool:
    """Whether Ray can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


def need_ray(method: str) -> None:
    """Raise ``ImportError`` saying how to install Ray, if it is not installed."""
    if not available():
        raise ImportError(f'{method}(backend="ray") needs Ray, an optional dependency of snake: {INSTALL_HINT}')


def check_options(method: str, options: object) -> dict[str, Any]:
    """``ray_options`` as a new dict, checked: a mapping of Ray actor options, none of
    them one that snake sets (:data:`MANAGED_OPTIONS`), accepted by Ray itself."""
    if not isinstance(options, Mapping):
        raise TypeError(f"{method}: ray_options={options!r} must be a dict of Ray actor options")
    opts = dict(options)
    for key in opts:
        if not isinstance(key, str):
            raise TypeError(f"{method}: ray_options={options!r}: key {key!r} is not a string")
        if key in MANAGED_OPTIONS:
            raise ValueError(
                f"{method}: ray_options={options!r}: {key!r} is set by snake (each actor runs one unit "
                "at a time, is never restarted by Ray, and ends with its stage or pool)"
            )
    need_ray(method)
    try:
        _actor_class().options(**{**DEFAULT_OPTIONS, **opts})
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{method}: ray_options={options!r}: {exc}") from None
    return opts


def check_picklable(method: str, fn: Callable[..., Any]) -> None:
    """Raise ``TypeError`` naming ``fn`` if Ray cannot send it to its workers."""
    from ray import cloudpickle

    try:
        cloudpickle.dumps(fn)
    except Exception as exc:
        from .._engine.util import describe_callable

        raise TypeError(
            f'{method}(backend="ray") needs a function that Ray can pickle; '
            f"{describe_callable(fn)} is not ({type(exc).__name__}: {exc})"
        ) from None


#: Command lines of Ray's own processes: its daemons, its agents and its idle workers.
_RAY_DAEMONS = (
    "/ray/core/src/ray/gcs/gcs_server",
    "/ray/core/src/ray/raylet/raylet",
    "/ray/dashboard/",
    "/ray/_private/log_monitor.py",
    "/ray/autoscaler/_private/monitor.py",
    "/ray/_private/runtime_env/agent/",
)
_RAY_TITLES = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray-dashboard-")


def is_ray_own_process(cmd: str) -> bool:
    """Whether ``cmd`` is the command line of one of Ray's own processes (a daemon, an
    agent, an idle worker), not of an actor: for ``snake.testing.assert_no_leaks``.
    Only while Ray is imported in this process."""
    if "ray" not in sys.modules:
        return False
    return cmd.startswith(_RAY_TITLES) or any(part in cmd for part in _RAY_DAEMONS)


# -- in the actor ---------------------------------------------------------------------------


class SnakeWorker:
    """What runs in a Ray actor: units of a ``par_map`` stage's items.

    ``run`` runs in the actor's default concurrency group (one call at a time);
    ``progress`` and ``stack`` in the ``"watch"`` group, a thread of their own, so
    that they answer while a unit runs.
    """

    def __init__(self) -> None:
        self.fns: collections.OrderedDict[str, Callable[[Any], Any]] = collections.OrderedDict()
        #: (call id, index of the item it runs): written as each item starts.
        self.at = (-1, -1)
        self.thread: int | None = None

    def ready(self) -> tuple[int, str, str]:
        """The actor's process id, node id and actor id, once it has started."""
        import ray

        context = ray.get_runtime_context()
        return os.getpid(), context.get_node_id(), context.get_actor_id() or ""

    def run(
        self, key: str, blob: bytes | None, call: int, items: Chunk, start: int, label: str, skip: bool
    ) -> tuple[bool, Any, list[Failure]]:
        """``(True, results, failures)``, or ``(False, error, [])`` (as ``apply_in_worker``)."""
        fn = self.fns.get(key)
        if fn is None:
            if blob is None:
                return False, RuntimeError(f"snake: stage {label}: this Ray actor was not sent the function"), []
            from ray import cloudpickle

            try:
                fn = cloudpickle.loads(blob)
            except Exception as exc:
                err = portable(exc)  # the traceback first, so that it does not repeat the note
                err.add_note(
                    f"snake: stage {label}: a Ray actor could not load the function (pid {os.getpid()}); "
                    "the modules it refers to must be importable on every node (see runtime_env)"
                )
                return False, err, []
            self.fns[key] = fn
            while len(self.fns) > _KEEP_FNS:
                self.fns.popitem(last=False)
        else:
            self.fns.move_to_end(key)
        self.thread = threading.get_ident()

        def mark(index: int) -> None:
            self.at = (call, index)

        mark(start)
        try:
            results, failures = apply(fn, items, start, label, skip, mark)
        except Exception as exc:
            return False, portable(exc), []
        return True, results, [(i, portable(e)) for i, e in failures]

    def progress(self) -> tuple[int, int]:
        return self.at

    def stack(self) -> str:
        frame = sys._current_frames().get(self.thread) if self.thread is not None else None
        if frame is None:
            return "(no unit running)"
        return "".join(traceback.format_stack(frame)).rstrip()


@functools.cache
def _actor_class() -> Any:
    import ray

    return ray.remote(concurrency_groups={"watch": 1}, max_restarts=0)(SnakeWorker)


# -- in the driver ----------------------------------------------------------------------------

_init_lock = threading.Lock()


def init_ray() -> None:
    """``ray.init()`` unless this process has initialised Ray already (blocks: seconds)."""
    import ray

    with _init_lock:
        if not ray.is_initialized():
            ray.init()


async def ensure_ray() -> None:
    """Use the Ray that this process has initialised (``ray.init()``, or ``RAY_ADDRESS``
    on the first call), else start a local one: in a thread, since it takes seconds."""
    import ray

    if not ray.is_initialized():
        await trio.to_thread.run_sync(init_ray)


async def wait_ref(ref: Any) -> Any:
    """The value of the Ray object ``ref``: Ray calls back when it is ready, and trio
    waits meanwhile (cancellable; the callback of an abandoned wait does nothing)."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    future = ref.future()
    future.add_done_callback(functools.partial(_wake, token, done))
    await done.wait()
    return future.result()


def _wake(token: trio.lowlevel.TrioToken, event: trio.Event, _future: object) -> None:
    try:
        token.run_sync_soon(event.set)
    except trio.RunFinishedError:
        pass


class ActorLost(Exception):
    """A Ray actor died (its process or its node) while it ran a unit."""

    def __init__(self, actor: RayActor, error: BaseException) -> None:
        # Ray's message says why in one sentence: "The actor is dead because its
        # worker process has died.", "... because its node has died.", ...
        line = next((line.strip() for line in str(error).splitlines() if "because" in line), "")
        why = line.partition(". ")[0].rstrip(".")
        where = f"pid {actor.pid}" if actor.pid is not None else "not started"
        super().__init__(f"Ray actor {actor.name} ({where}): {type(error).__name__}")
        #: For the WorkerCrashedError message.
        self.how = f"{why[:1].lower()}{why[1:300]}" if why else "its Ray actor died"


class RayActor:
    """One actor, as the driver sees it."""

    __slots__ = ("dead", "handle", "id", "keys", "node", "pid", "ready")

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        #: Its ``ready()`` call: done once the actor has started (or failed to).
        self.ready = handle.ready.remote().future()
        self.pid: int | None = None
        self.node: str | None = None
        self.id = ""
        #: The functions it was sent (their keys).
        self.keys: set[str] = set()
        self.dead = False

    @property
    def name(self) -> str:
        return self.id[:8] or "(starting)"

    def kill(self) -> None:
        self.dead = True
        import ray

        with contextlib.suppress(Exception):  # gone already, or Ray was shut down
            ray.kill(self.handle, no_restart=True)


class Actors:
    """At most ``workers`` Ray actors started with ``options``, idle or running a unit."""

    def __init__(self, workers: int, options: Mapping[str, Any], owner: str) -> None:
        self.workers = workers
        self.options = {**DEFAULT_OPTIONS, **options}
        #: Who they are for, in errors: "stage #1 par_map(...)", "WorkerPool(...)".
        self.owner = owner
        self._lock = threading.Lock()
        self._idle: collections.deque[RayActor] = collections.deque()
        self._busy: set[RayActor] = set()
        self._starting: list[RayActor] = []
        self._waiters: set[trio.Event] = set()
        self._failures = 0
        self._error: BaseException | None = None
        self.closed = False

    def _start(self) -> None:
        handle = _actor_class().options(**self.options).remote()
        self._starting.append(RayActor(handle))

    def prestart(self) -> None:
        """Start actors up to ``workers`` now (Ray starts them in the background)."""
        with self._lock:
            while not self.closed and len(self._idle) + len(self._busy) + len(self._starting) < self.workers:
                self._start()

    def _settle(self) -> None:
        """Actors that have started become idle; those that failed to start are let go."""
        for actor in [a for a in self._starting if a.ready.done()]:
            self._starting.remove(actor)
            try:
                actor.pid, actor.node, actor.id = actor.ready.result()
            except Exception as exc:
                self._failures += 1
                self._error = exc
                actor.kill()
                continue
            self._failures = 0
            self._idle.append(actor)

    async def get(self) -> RayActor:
        """An idle actor, or a new one while there are fewer than ``workers``; else the
        first to come back or to finish starting."""
        token = trio.lowlevel.current_trio_token()
        while True:
            with self._lock:
                if self.closed:
                    raise RuntimeError(f"{self.owner}: its Ray actors were released while a stage ran")
                self._settle()
                if self._failures >= _START_FAILURES:
                    self._failures = 0
                    raise RuntimeError(
                        f"{self.owner}: {_START_FAILURES} Ray actors in a row failed to start; the last: {self._error}"
                    ) from self._error
                while self._idle:
                    actor = self._idle.pop()
                    if not actor.dead:
                        self._busy.add(actor)
                        return actor
                if len(self._busy) + len(self._starting) < self.workers:
                    self._start()
                starting = list(self._starting)
                event = trio.Event()
                self._waiters.add(event)
            try:
                for actor in starting:
                    actor.ready.add_done_callback(functools.partial(_wake, token, event))
                await event.wait()
            finally:
                with self._lock:
                    self._waiters.discard(event)

    def give(self, actor: RayActor) -> None:
        """Back from a call: idle again, or killed if it died, was cancelled mid-call,
        or the set was closed meanwhile."""
        with self._lock:
            self._busy.discard(actor)
            keep = not self.closed and not actor.dead
            if keep:
                self._idle.append(actor)
            waiters = list(self._waiters)
        if not keep:
            actor.kill()
        for event in waiters:
            event.set()

    def close(self) -> None:
        """Kill every idle and starting actor now; those running a call are killed as
        the call ends."""
        with self._lock:
            self.closed = True
            gone = [*self._idle, *self._starting]
            self._idle.clear()
            self._starting.clear()
        for actor in gone:
            actor.kill()

    def counts(self) -> tuple[int, int, frozenset[int]]:
        """Idle actors, actors running a call, and the process ids of both."""
        with self._lock:
            self._settle()
            pids = {a.pid for a in (*self._idle, *self._busy) if a.pid is not None}
            return len(self._idle), len(self._busy), frozenset(pids)

    def starting(self) -> int:
        """Actors asked of Ray and not started yet (Ray may not have placed them)."""
        with self._lock:
            return len(self._starting)

    def idle_pids(self) -> set[int]:
        with self._lock:
            return {a.pid for a in self._idle if a.pid is not None and not a.dead}


class _Call:
    """A unit running on an actor, and the question in flight of which item it is on."""

    __slots__ = ("actor", "asking", "call")

    def __init__(self, actor: RayActor, call: int) -> None:
        self.actor = actor
        self.call = call
        self.asking: Any = None


class _NoLimit:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


class RayBackend(Backend):
    """Units on Ray actors: the stage's own (``actors=None``), or a pool's.

    ``shared``: a WorkerPool's limiter, held by every call on that pool.
    """

    kind = "ray"

    def __init__(
        self,
        fn: Callable[[Any], Any],
        workers: int,
        label: str,
        skip: bool,
        *,
        options: Mapping[str, Any],
        actors: Actors | None = None,
        shared: trio.CapacityLimiter | None = None,
        closed: Callable[[], bool] = lambda: False,
    ) -> None:
        self.fn = fn
        self.label = label
        self.skip = skip
        self.own = actors is None
        self.actors = actors if actors is not None else Actors(workers, options, f"stage {label}")
        self.shared = shared
        self.closed = closed
        self.limiter = trio.CapacityLimiter(workers)
        self.calls = itertools.count()
        self.key = ""
        self.blob = b""

    async def __aenter__(self) -> Self:
        await ensure_ray()
        from ray import cloudpickle

        self.blob = cloudpickle.dumps(self.fn)
        # The same function (by its pickle) is the same key: a pool's actors keep it
        # from one run or epoch to the next, and with it whatever state it set up.
        self.key = hashlib.blake2b(self.blob, digest_size=16).hexdigest()
        self.actors.prestart()
        return self

    async def aclose(self) -> None:
        if self.own:
            self.actors.close()

    async def run(self, items: Chunk, start: int, running: Running) -> tuple[Chunk, list[Failure]]:
        async with self.shared if self.shared is not None else _NoLimit(), self.limiter:
            if self.closed():
                raise RuntimeError(f"stage {self.label}: the WorkerPool was closed while the stage ran")
            # Waiting for an actor (one that Ray has not placed yet, say) counts neither
            # against the timeout nor in the measured time per item.
            actor = await self.actors.get()
            try:
                running.begin()
                return await self._call(actor, items, start, running)
            finally:
                self.actors.give(actor)

    async def _call(
        self, actor: RayActor, items: Chunk, start: int, running: Running
    ) -> tuple[Chunk, list[Failure]]:
        from ray.exceptions import RayActorError, RayError

        call = next(self.calls)
        blob = None if self.key in actor.keys else self.blob
        try:
            ref = actor.handle.run.remote(self.key, blob, call, items, start, self.label, self.skip)
        except Exception as exc:
            exc.add_note(
                f"snake: stage {self.label} could not send item indices {start}..{start + len(items) - 1} "
                "to a Ray actor"
            )
            raise
        actor.keys.add(self.key)
        running.worker = _Call(actor, call)
        try:
            ok, payload, failures = await wait_ref(ref)
        except RayActorError as exc:
            actor.dead = True
            # Which item killed it is known only for a unit of one item: the last index
            # seen may be stale by a poll. Else the scheduler runs each item alone.
            running.index = start if len(items) == 1 else -1
            raise Lost(ActorLost(actor, exc)) from exc
        except RayError as exc:
            exc.add_note(
                f"snake: stage {self.label} could not exchange item indices "
                f"{start}..{start + len(items) - 1} with a Ray actor"
            )
            raise
        except BaseException:
            # Cancelled or timed out: an actor cannot be interrupted mid-unit.
            actor.dead = True
            raise
        if not ok:
            raise payload
        return payload, failures

    def progress(self, running: Running) -> None:
        # Called by the stage's watch every period: read the answer to the last
        # question (one period old), and ask again.
        state = running.worker
        if not isinstance(state, _Call):
            return
        asking = state.asking
        if asking is not None:
            if not asking.done():
                return
            state.asking = None
            try:
                call, index = asking.result()
            except Exception:
                return  # the actor is gone: the unit's own call says how
            if call == state.call and running.start <= index < running.start + running.count:
                running.index = index
        progress = state.actor.handle.progress.options(concurrency_group="watch")
        state.asking = progress.remote().future()

    async def stack(self, running: Running) -> str:
        state = running.worker
        if not isinstance(state, _Call):
            starting = self.actors.starting()
            return (
                f"(waiting for a Ray actor; {starting} not yet placed by Ray: do the cluster's free "
                "resources cover ray_options?)"
            )
        actor = state.actor
        text = "(no answer)"
        with trio.move_on_after(_STACK_WAIT_S):
            try:
                text = await wait_ref(actor.handle.stack.options(concurrency_group="watch").remote())
            except Exception as exc:
                text = f"(no stack: {type(exc).__name__})"
        return f"Ray actor {actor.name} (pid {actor.pid}, node {str(actor.node)[:8]}):\n{text}"

