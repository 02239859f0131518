"""Bounded channels everywhere: a slow consumer never makes the pipeline pull more.

Runs on trio's virtual clock (only trio tasks are involved).
"""

from __future__ import annotations

import itertools

import trio
import trio.testing

import snake
from snake._engine.chan import CHANNEL_CHUNKS
from snake._engine.util import CHUNK_CAP


def pipeline_bound(n_task_stages: int, windows: int) -> int:
    """The documented bound (docs/concurrency.md) on items held between source and consumer.

    Every task stage holds at most one input chunk it is slicing, one chunk in its
    outbox and one in flight to the next stage, besides its window; every channel
    holds CHANNEL_CHUNKS chunks; the source holds the chunk it is sending; the
    consumer holds the chunk it is reading.
    """
    chunks = 1 + 1 + (n_task_stages + 1) * CHANNEL_CHUNKS + 3 * n_task_stages
    return chunks * CHUNK_CAP + windows


async def test_slow_consumer_bounds_what_the_source_produces(autojump_clock: trio.abc.Clock) -> None:
    pulled = 0

    def source():  # an endless source that counts what is taken from it
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield i

    async def io(x: int) -> int:
        await trio.sleep(0.001)
        return x

    stream = snake.from_iterable(source()).par_then(io, limit=8).prefetch(16)
    bound = pipeline_bound(n_task_stages=2, windows=8 + 16)
    seen_after: dict[int, int] = {}
    async with stream.open() as items:
        consumed = 0
        async for _ in items:
            consumed += 1
            await trio.sleep(1)  # a slow training step
            if consumed in (100, 2000, 6000):
                seen_after[consumed] = pulled
            if consumed == 6000:
                break
            assert pulled - consumed <= bound, (pulled, consumed, bound)
    # Steady state: the lead over the consumer does not grow with time.
    assert seen_after[6000] - 6000 <= bound
    assert pulled < 6000 + bound


async def test_take_stops_the_source_early() -> None:
    pulled = 0

    def source():
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield i

    assert await snake.from_iterable(source()).map(lambda x: x * 2).take(10).collect() == list(range(0, 20, 2))
    # take() right after the source limits how much the source is asked for.
    assert pulled == 10


async def test_par_then_concurrency_never_exceeds_limit(autojump_clock: trio.abc.Clock) -> None:
    running = 0
    peak = 0

    async def io(x: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(0.01 * (x % 5))
        running -= 1
        return x

    for ordered in (True, False):
        peak = 0
        got = await snake.from_iterable(range(300)).par_then(io, limit=7, ordered=ordered).collect()
        assert sorted(got) == list(range(300))
        # Ordered: finished items waiting for a slow one still occupy the window.
        assert peak == 7 if not ordered else 2 <= peak <= 7


async def test_ordered_window_holds_back_at_most_limit_items(autojump_clock: trio.abc.Clock) -> None:
    started: list[int] = []

    async def io(x: int) -> int:
        started.append(x)
        await trio.sleep(100 if x == 0 else 0.001)  # item 0 is very slow
        return x

    async with snake.from_iterable(range(1000)).par_then(io, limit=5).open() as items:
        with trio.move_on_after(50):
            await items.receive()
        # While item 0 is stuck, only the window of `limit` items has been admitted.
        assert started == [0, 1, 2, 3, 4]
        assert await items.receive() == 0
