"""The thread backend: ``par_map(fn, backend="thread")``, for code that releases the GIL."""

from __future__ import annotations

import operator
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

import trio

from .._engine.util import add_note
from .backend import Backend, Chunk, Failure, Running, apply


class ThreadBackend(Backend):
    """Units run in trio's worker threads, at most ``workers`` at a time.

    A thread cannot be killed: a cancelled stage waits for the units in flight (a
    few ms each), so no thread outlives the stage.
    """

    kind = "thread"

    def __init__(self, fn: Callable[[Any], Any], workers: int, label: str, skip: bool) -> None:
        self.fn = fn
        self.label = label
        self.skip = skip
        self.limiter = trio.CapacityLimiter(workers)

    async def run(self, items: Chunk, start: int, running: Running) -> tuple[Chunk, list[Failure]]:
        return await trio.to_thread.run_sync(self._work, items, start, running, limiter=self.limiter)

    def _work(self, items: Chunk, start: int, running: Running) -> tuple[Chunk, list[Failure]]:
        if self.skip:
            running.worker = (threading.get_ident(), None)
            return apply(self.fn, items, start, self.label, True)
        # The plain path, as fast as map(): the item running is read off the iterator.
        it = iter(items)
        running.worker = (threading.get_ident(), it)
        try:
            return list(map(self.fn, it)), []
        except Exception as exc:
            add_note(exc, self.label, start + len(items) - operator.length_hint(it) - 1)
            raise

    def progress(self, running: Running) -> None:
        worker = running.worker
        if worker is not None and worker[1] is not None:
            running.index = running.start + running.count - operator.length_hint(worker[1]) - 1

    async def stack(self, running: Running) -> str:
        if running.worker is None:
            return "(not started)"
        thread_id = running.worker[0]
        frame = sys._current_frames().get(thread_id)
        if frame is None:
            return "(the thread has finished the unit)"
        name = next((t.name for t in threading.enumerate() if t.ident == thread_id), "?")
        lines = traceback.format_stack(frame)
        return f"Thread {thread_id:#x} ({name}), most recent call last:\n" + "".join(lines).rstrip()
