"""snake from an asyncio program: iterate, stop early, time out, and see errors."""

import asyncio

import trio

import snake
import snake.aio


def fib(n):  # CPU: pure Python, so it runs on worker processes
    return n if n < 2 else fib(n - 1) + fib(n - 2)


async def slow_read(i):  # stage functions are trio code: trio.sleep, not asyncio.sleep
    await trio.sleep(0.01)
    return 20 + i % 5


def parse(text):
    return int(text)


async def main():
    stream = snake.from_iterable(range(20)).par_then(slow_read, limit=8).par_map(fib, workers=2)
    async with snake.aio.open(stream) as items:
        print("first:", [x async for x in items][:5])

    # break: the pipeline is cancelled, and every task of it ended, before the block ends
    async with snake.aio.open(snake.from_iterable(range(10**9)).par_map(fib, workers=2)) as items:
        async for x in items:
            if x > 1000:
                break
    print(f"break at {x};", snake.aio.statistics())

    # asyncio's own cancellation reaches the pipeline: here a timeout
    endless = snake.from_iterable(range(10**9)).par_then(slow_read, limit=2)
    try:
        async with asyncio.timeout(0.3), snake.aio.open(endless) as items:
            async for _ in items:
                pass
    except TimeoutError:
        print("timed out;", snake.aio.statistics())

    # a stage's exception comes out as itself, with snake's note
    try:
        async with snake.aio.open(snake.from_iterable(["1", "2", "three"]).map(parse)) as items:
            async for _ in items:
                pass
    except ValueError as exc:
        print(f"caught {type(exc).__name__}: {exc}")
        print("  note:", exc.__notes__[0])


if __name__ == "__main__":
    asyncio.run(main())
