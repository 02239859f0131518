"""What a ``par_map`` stage needs from the workers that run its function.

``ParMap`` (``_ops/parallel.py``) does the scheduling: the ordering window, the
per-item deadlines, retries, naming the culprit item and the stall warnings. A
*backend* runs units of work (chunks of consecutive items) somewhere and reports
on them; ``thread.py`` and ``process.py`` are the two backends.

A backend is used for one stage run, as an async context manager; its ``run``
returns ``(results, failures)`` for a unit, or raises :class:`Lost` when the
worker running it died. While a unit runs, :meth:`Backend.progress` says which
item it is on and since when, and :meth:`Backend.stack` where that worker is.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

import trio

from .remote import Chunk, Failure, apply

if TYPE_CHECKING:
    from typing import Self

__all__ = ["Backend", "Chunk", "Failure", "Lost", "Running", "apply"]


class Lost(Exception):
    """A unit whose worker died, or was killed past its deadline, before it finished."""

    def __init__(self, cause: BaseException | None, *, timed_out: bool = False) -> None:
        super().__init__("timed out" if timed_out else "worker died")
        self.cause = cause
        self.timed_out = timed_out
        #: The index of the item the worker was running, when known.
        self.culprit: int | None = None

    def blame(self, running: Running) -> Lost:
        if running.count == 1:
            self.culprit = running.start
        elif running.start <= running.index < running.start + running.count:
            self.culprit = running.index
        return self


class Running:
    """One unit in flight: where it started, and the item it is on now."""

    __slots__ = ("count", "index", "scope", "since", "slot", "start", "timeout", "worker")

    def __init__(self, start: int, count: int, scope: trio.CancelScope, timeout: float | None) -> None:
        self.start = start
        self.count = count
        #: The item being run, and when it started on trio's clock (kept current by
        #: the scheduler from what the backend reports).
        self.index = start
        self.since = trio.current_time()
        #: The unit's cancel scope, whose deadline is ``timeout`` after the item started.
        self.scope = scope
        self.timeout = timeout
        #: Backend-specific: the progress slot, and who runs it (a worker, a thread).
        self.slot = -1
        self.worker: Any = None

    def begin(self) -> None:
        """The unit really starts now (it may have waited for a turn on a shared pool)."""
        self.item_started(trio.current_time())

    def item_started(self, now: float) -> None:
        self.since = now
        if self.timeout is not None:
            self.scope.deadline = now + self.timeout


class Backend(abc.ABC):
    """The workers of one ``par_map`` stage run."""

    #: "process" or "thread": how errors and statistics name the workers.
    kind: str

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release everything the run created (called however the run ends)."""

    def fuse(self, fused: Any) -> Any:
        """The stages fused after this one, as the backend runs them (it may take over a
        ``batch()`` that follows, say)."""
        return fused

    async def warm_up(self) -> None:
        """Start the workers while the source produces its first items (one task each)."""

    @abc.abstractmethod
    async def run(self, items: Chunk, start: int, running: Running) -> tuple[Chunk, list[Failure]]:
        """Run the stage's function over ``items`` (indices from ``start``)."""

    def progress(self, running: Running) -> None:
        """Bring ``running.index`` and ``running.since`` up to date."""

    async def stack(self, running: Running) -> str:
        """Where the worker running ``running`` is now (a Python stack), best effort."""
        return "(no stack available)"
