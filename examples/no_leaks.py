"""snake.testing.assert_no_leaks(): fails if a thread, process, shared-memory file or
trio task started in the block outlives it."""

import threading

import trio

import snake
from snake.testing import assert_no_leaks


def double(x):
    return 2 * x


async def in_trio(stream):
    async with assert_no_leaks():              # inside trio: async with
        print("trio:", await stream.collect())


if __name__ == "__main__":
    stream = snake.from_iterable(range(5)).par_map(double, workers=2)
    with assert_no_leaks():                    # worker processes, back in their cache after
        print("sync:", stream.to_list())
    trio.run(in_trio, stream)

    stop = threading.Event()
    try:
        with assert_no_leaks(grace=0.5):
            threading.Thread(target=stop.wait, name="left-behind", daemon=True).start()
    except AssertionError as exc:
        print(exc)
    finally:
        stop.set()
