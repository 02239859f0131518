"""Per-item cost of concurrent async stages: three stages, each awaiting an async
identity function with up to 16 calls at once.

Every runner passes ``range(n)`` through the three stages and sums what comes out (the sum
is checked). The figure is items per second over the whole run, event loop start and
shutdown included. Order: snake's ``par_then`` and aiostream's ``map`` keep the input
order (their defaults); the hand-written trio stages and SPDL (its default,
``output_order="completion"``) hand items on as they finish, which is less work.

There is no torch row: torch's DataLoader has no async stages, so there is nothing
meaningful to compare.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from _driver import lazy, need
from _driver import rate as driver_rate

TITLE = "3 x par_then(async identity, limit=16) over 30k ints"
UNIT = "items/s"
BETTER = "higher"

LIMIT = 16
STAGES = 3


async def async_identity(x: int) -> int:
    return x


def runners(quick: bool) -> dict[str, Callable[[], Any]]:
    # 30k, not 100k: at 100k, SPDL (~3.5k items/s here) and aiostream
    # (~6k items/s) alone take over 2 minutes for 3 rounds; 30k keeps the workload near a
    # minute, and every runner's start-up is still well amortized.
    n = 10_000 if quick else 30_000
    expected = sum(range(n))

    def rate(run: Callable[[], int]) -> float:
        return driver_rate(n, expected, run)

    def snake_trio() -> float:
        import trio

        import snake

        async def main() -> int:
            stream = snake.from_iterable(range(n))
            for _ in range(STAGES):
                stream = stream.par_then(async_identity, limit=LIMIT)
            total = 0
            async with stream.open() as items:
                async for x in items:
                    total += x
            return total

        return rate(lambda: trio.run(main))

    @lazy
    def trio_channels() -> Callable[[], float]:
        """What a trio user writes by hand: memory channels between the stages, 16 tasks
        per stage sharing clones of the stage's channels."""
        trio = need("trio")

        async def main() -> int:
            total = 0
            async with trio.open_nursery() as nursery:
                send, recv = trio.open_memory_channel(0)

                async def feed(send: Any) -> None:
                    async with send:
                        for i in range(n):
                            await send.send(i)

                async def worker(recv: Any, send: Any) -> None:
                    async with recv, send:
                        async for x in recv:
                            await send.send(await async_identity(x))

                nursery.start_soon(feed, send)
                for _ in range(STAGES):
                    next_send, next_recv = trio.open_memory_channel(0)
                    async with recv, next_send:
                        for _ in range(LIMIT):
                            nursery.start_soon(worker, recv.clone(), next_send.clone())
                    recv = next_recv
                async with recv:
                    async for x in recv:
                        total += x
            return total

        return lambda: rate(lambda: trio.run(main))

    @lazy
    def aiostream() -> Callable[[], float]:
        """stream.map(xs, async_identity, task_limit=16) three times, under asyncio.run."""
        aiostream = need("aiostream")
        import asyncio

        async def main() -> int:
            xs = aiostream.stream.iterate(range(n))
            for _ in range(STAGES):
                xs = aiostream.stream.map(xs, async_identity, task_limit=LIMIT)
            total = 0
            async with xs.stream() as items:
                async for x in items:
                    total += x
            return total

        return lambda: rate(lambda: asyncio.run(main()))

    @lazy
    def spdl() -> Callable[[], float]:
        """Three async pipes with concurrency=16 (SPDL runs its asyncio loop in a thread)."""
        pipeline = need("spdl.pipeline", "spdl")

        def run() -> int:
            builder = pipeline.PipelineBuilder().add_source(range(n))
            for _ in range(STAGES):
                builder = builder.pipe(async_identity, concurrency=LIMIT)
            p = builder.add_sink(LIMIT).build(num_threads=1)
            total = 0
            with p.auto_stop():
                for x in p:
                    total += x
            return total

        return lambda: rate(run)

    return {
        "snake (trio.run)": snake_trio,
        "trio channels": trio_channels,
        "aiostream": aiostream,
        "spdl": spdl,
    }
