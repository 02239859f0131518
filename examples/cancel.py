"""Stopping early: break out of the loop, or let a trio deadline expire.

Either way, leaving the ``async with`` block cancels every stage and waits for
them; the worker processes busy with items are killed, so nothing is left
running afterwards.
"""

import multiprocessing
import time

import trio

import snake


def slow_square(x):
    time.sleep(0.05)          # stands for 50 ms of CPU work
    return x * x


stream = snake.from_iterable(range(1_000_000)).par_map(slow_square, workers=2)


async def main():
    # 1. break after k items.
    taken = []
    async with stream.open() as items:
        async for x in items:
            taken.append(x)
            if len(taken) == 5:
                break
    print(f"break: stopped after {len(taken)} items: {taken}")

    # 2. a deadline around open(): the cancel scope stops the whole pipeline.
    count = 0
    t0 = time.monotonic()
    with trio.move_on_after(0.5) as scope:
        async with stream.open() as items:
            async for x in items:
                count += 1
    elapsed = time.monotonic() - t0
    print(f"deadline: cancelled={scope.cancelled_caught}, {count} items, {elapsed:.1f} s")


def sync_break():
    # 3. the same from a plain for loop (trio runs in a helper thread).
    for x in stream:
        if x >= 100:
            break
    print(f"sync break: stopped at {x}")


if __name__ == "__main__":   # worker processes may re-import this file
    trio.run(main)
    sync_break()
    print("worker processes left:", len(multiprocessing.active_children()))
