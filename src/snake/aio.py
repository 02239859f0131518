"""snake from asyncio code: ``async with snake.aio.open(stream) as items: async for x in items``.

trio runs in guest mode on the asyncio loop; see docs/asyncio.md.
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
    """Open ``stream`` from asyncio: ``async with snake.aio.open(stream) as items:``.

    The pipeline runs on the running asyncio loop, in trio guest mode. Leaving the
    block, for whatever reason (the end, ``break``, an exception, the task being
    cancelled), cancels the pipeline and waits until every task and worker process of
    it has stopped. A stage's exception comes out of ``async for`` (or from the end of
    the block if the loop stopped reading first) as the original exception, with
    snake's note naming the stage and the item.

    ``state_dict``: a checkpoint to resume from (``items.state_dict()``), as for
    ``Stream.open``.
    """
    if not isinstance(stream, Stream):
        raise TypeError(f"snake.aio.open: stream={stream!r} must be a snake.Stream")
    p = stream._planned(state_dict)
    return open_specs(list(p.specs), p.notes, state_dict)

_publish(__name__, globals())
