"""Pipelines from asyncio code: ``async with snake.aio.open(stream) as items: async for x in items``.

trio runs in guest mode on the running asyncio loop. A submodule that ``import snake``
does not load: ``import snake.aio``. docs/asyncio.md explains how it runs, what cancels
a pipeline, and why guest mode.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from ._embed.aio import AsyncioItems as AsyncioItems
from ._embed.aio import EndOfStream as EndOfStream
from ._embed.aio import RuntimeStatistics as RuntimeStatistics
from ._embed.aio import open_specs
from ._embed.aio import statistics as statistics
from ._engine.util import publish as _publish
from ._stream import Stream

__all__ = ["AsyncioItems", "EndOfStream", "RuntimeStatistics", "open", "statistics"]

T = TypeVar("T")


def open(
    stream: Stream[T], /, *, state_dict: dict[str, Any] | None = None
) -> AbstractAsyncContextManager[AsyncioItems[T]]:
    """Run ``stream`` from asyncio code: ``async with snake.aio.open(stream) as items:``.

    The pipeline runs as :meth:`Stream.open` would, in the loop's shared trio
    runtime: a trio guest run on the running asyncio loop, started with the first
    block open on the loop and stopped when the last one closes. The block yields an
    :class:`AsyncioItems`. Leaving the block, whichever way (the end, ``break``, an
    exception, the task being cancelled), cancels the pipeline and returns once
    every task, thread and worker process of it has stopped; a cancellation that
    arrives during that wait is raised after it. A stage's exception comes out of
    ``async for`` as itself, with snake's note, after the items handed over before
    the failure; if the block stops reading first, it is raised at the end of the
    block (unless the block raises its own).

    Raises ``TypeError: snake.aio.open: stream=... must be a snake.Stream`` when
    called; ``RuntimeError`` when entered with no running asyncio loop (under trio,
    say), where another trio run is active in the thread, or a second time. Close
    every block before closing its loop: the next ``snake.aio.open()`` in a thread
    whose loop was closed under an open block first finishes that block's trio run
    (:doc:`/asyncio`, How it runs).

    ``state_dict``: a checkpoint to resume from (``items.state_dict()``), exactly as
    for :meth:`Stream.open`; ``ValueError`` if it belongs to another pipeline.
    """
    if not isinstance(stream, Stream):
        raise TypeError(f"snake.aio.open: stream={stream!r} must be a snake.Stream")
    p = stream._planned(state_dict)
    return open_specs(list(p.specs), p.notes, state_dict)

_publish(__name__, globals())
