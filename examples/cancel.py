"""Stopping early: break out of the loop, or let a trio deadline expire.

Either way, leaving the ``async with`` block cancels every stage and waits for
them. A worker process busy with an item is killed rather than waited for: here
item 7 would take a minute, yet each stop takes a fraction of a second, and the
worker that was stuck on it is gone afterwards.
"""

import functools
import os
import tempfile
import time

import trio

import snake


def slow_square(pid_file, x):
    if x == 7:                                # stuck: a minute on one item
        with open(pid_file, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)
    time.sleep(0.05)                          # stands for 50 ms of CPU work
    return x * x


def running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def main(stream):
    # 1. break after k items, while another item is stuck in a worker.
    taken = []
    async with stream.open() as items:
        async for x in items:
            taken.append(x)
            if len(taken) == 5:
                t0 = time.monotonic()
                break
    print(f"break: stopped after {len(taken)} items: {taken}, in {time.monotonic() - t0:.1f} s")

    # 2. a deadline around open(): the cancel scope stops the whole pipeline.
    count = 0
    t0 = time.monotonic()
    with trio.move_on_after(1.0) as scope:
        async with stream.open() as items:
            async for x in items:
                count += 1
    print(f"deadline: cancelled={scope.cancelled_caught}, {count} items, {time.monotonic() - t0:.1f} s")


def sync_break(stream):
    # 3. the same from a plain for loop (trio runs in a helper thread).
    for x in stream:
        if x >= 16:
            t0 = time.monotonic()
            break
    print(f"sync break: stopped at {x}, in {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":   # worker processes may re-import this file
    with tempfile.TemporaryDirectory() as tmp:
        pid_file = os.path.join(tmp, "stuck.pid")
        stream = snake.from_iterable(range(1_000_000)).par_map(
            functools.partial(slow_square, pid_file), workers=2
        )
        trio.run(main, stream)
        with open(pid_file) as f:
            print(f"the worker stuck on item 7 still runs: {running(int(f.read()))}")
        sync_break(stream)
