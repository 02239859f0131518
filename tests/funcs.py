"""Module-level functions the tests send to worker processes (they must pickle)."""

from __future__ import annotations

import os
import time

import trio
import trio.lowlevel


class Boom(Exception):
    """A user exception type that tests expect to come out unchanged."""


def inc(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return 2 * x


def square(x: int) -> int:
    return x * x


def is_even(x: int) -> bool:
    return x % 2 == 0


def repeat_n(x: int) -> list[int]:
    return [x] * (abs(x) % 3)


def fail_on_7(x: int) -> int:
    if x == 7:
        raise Boom(f"item {x} is bad")
    return x


def sleep_then_return(x: float) -> float:
    time.sleep(x)
    return x


def sleep_then_return_pair(arg: tuple[int, float]) -> int:
    """Sleep arg[1] seconds, then return arg[0]."""
    time.sleep(arg[1])
    return arg[0]


def die_on_3(x: int) -> int:
    if x == 3:
        os._exit(17)
    return x


def sleep_long(x: int) -> int:
    time.sleep(60)
    return x


async def ainc(x: int) -> int:
    await trio.lowlevel.checkpoint()
    return x + 1


async def ajitter(x: int) -> int:
    # A deterministic, item-dependent delay so completion order differs from input order.
    await trio.sleep((x * 7919 % 13) / 10000)
    return x + 1


async def afail_on_7(x: int) -> int:
    await trio.lowlevel.checkpoint()
    if x == 7:
        raise Boom(f"item {x} is bad")
    return x


def segfault_on_3(x: int) -> int:
    if x == 3:
        import ctypes

        ctypes.string_at(0)  # reads address 0: SIGSEGV
    return x


def sigkill_on_3(x: int) -> int:
    if x == 3:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    return x


def crash_once(arg: tuple[str, int]) -> int:
    """Dies the first time it sees an item (a marker file remembers), then succeeds."""
    directory, x = arg
    marker = os.path.join(directory, f"seen-{x}")
    if x % 5 == 2 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(9)
    return x


def stuck_on_4(x: int) -> int:
    if x == 4:
        time.sleep(60)
    return x


def fail_on_multiples_of_10(x: int) -> int:
    if x % 10 == 0:
        raise Boom(f"item {x} is bad")
    return x


async def astuck_on_4(x: int) -> int:
    if x == 4:
        await trio.sleep(60)
    return x


def make_array(i: int) -> object:
    import numpy as np

    return np.full((3, 64, 128), i, dtype=np.float32)


def make_nested(i: int) -> object:
    import numpy as np

    big = np.arange(64 * 1024, dtype=np.int64) + i
    return {"image": big, "label": i, "pair": (big[:10].copy(), np.full(20000, i, np.float64))}


def unpicklable_result(x: int) -> object:
    import threading

    return threading.Lock()


def pid_of(x: int) -> int:
    return os.getpid()


def slow_on_1500(x: int) -> int:
    if x == 1500:
        time.sleep(60)
    return x


def image(i: int) -> object:
    import numpy as np

    return np.full((4, 64, 64), i, dtype=np.float32)  # 64 KiB: large enough for shared memory


def image_or_odd(i: int) -> object:
    import numpy as np

    return np.full((4, 64, 64) if i != 9 else (4, 64, 65), i, dtype=np.float32)


def noisy(item: tuple[int, int, int]) -> float:
    """(epoch, index, x) -> x plus noise from snake.rng keyed by (seed=7, epoch, index)."""
    import snake

    epoch, index, x = item
    return x + float(snake.rng(index, seed=7, epoch=epoch).random())


def stall_on_3(x: int) -> int:
    """Item 3 takes 1.5 s (a stall for a short stall_timeout)."""
    if x == 3:
        time.sleep(1.5)
    return x


def busy_forever(x: int) -> int:
    """Never returns: a worker stuck in a loop."""
    while True:
        time.sleep(0.05)


def getenv(name: str) -> str | None:
    """The worker's value of the environment variable ``name``."""
    return os.environ.get(name)
