"""Helpers about tasks: trio's task tree, where a task waits, and waiting from asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import traceback
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import trio

_TRIO_DIR = trio.__file__.rpartition("/")[0] + "/"


def walk(tasks: Iterable[trio.lowlevel.Task]) -> Iterator[trio.lowlevel.Task]:
    """``tasks`` and every task below them in trio's task tree."""
    stack = list(tasks)
    while stack:
        task = stack.pop()
        yield task
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)


def stack(task: trio.lowlevel.Task) -> str:
    """Where a trio task is suspended: its chain of awaits, as a traceback shows it
    (trio's own frames left out: they say nothing about the task)."""
    frames = []
    coro: Any = task.coro
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            break
        if not frame.f_code.co_filename.startswith(_TRIO_DIR):
            frames.append((frame, frame.f_lineno))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
    text = "".join(traceback.StackSummary.extract(frames).format()).rstrip()
    return f"trio task {task.name}:\n{text}"


def anyio_shield() -> AbstractContextManager[object]:
    """A shielded anyio cancel scope where anyio is loaded (Starlette, FastAPI, httpx).

    A cancelled anyio scope cancels the tasks inside it again on every turn of the loop
    until they leave it: a task waiting for a pipeline to stop would wake, and wait
    again, in a busy loop. Shielded, it is not cancelled again; the first cancellation
    (which did arrive) is raised when the wait is over.
    """
    anyio = sys.modules.get("anyio")
    if anyio is None:
        return contextlib.nullcontext()
    return anyio.CancelScope(shield=True)  # type: ignore[no-any-return]


async def wait_uncancelled(fut: asyncio.Future[Any]) -> None:
    """In asyncio: wait for ``fut`` even if this task is cancelled meanwhile; then raise
    the first cancellation that arrived, also one that arrived in the turn that ``fut``
    completed in."""
    if fut.done():
        return
    cancelled: asyncio.CancelledError | None = None
    with anyio_shield():
        while not fut.done():
            try:
                await asyncio.shield(fut)
            except asyncio.CancelledError as exc:
                if fut.cancelled():
                    raise
                if cancelled is None:
                    cancelled = exc
    if cancelled is not None:
        raise cancelled
