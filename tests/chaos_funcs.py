"""Functions for test_chaos.py, at module level so that worker processes can import them.

``work(fault, x)`` is the ``par_map`` function: ``10 * x``, except on the one item
``fault.at``, where it does what ``fault.kind`` says. With ``fault.big`` it returns
``10 * x`` as a NumPy array large enough to come back through shared memory.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from typing import Any, NamedTuple

import numpy as np
import trio

#: What ``work`` does on the item ``at``.
KINDS = (
    "none",  # nothing: 10 * x
    "exit",  # os._exit(1), every time
    "exit_once",  # os._exit(1) the first time only (a retry then succeeds)
    "sigkill",  # SIGKILL to itself
    "segfault",  # reads address 0
    "raise",  # ValueError
    "hang",  # time.sleep(60)
)


class Fault(NamedTuple):
    kind: str
    #: The item it hits (an input value of the par_map stage).
    at: int
    #: For "exit_once": a file that exists once the fault has fired.
    marker: str = ""
    #: Return an array of ``BIG`` int64s (64 KiB: the shared-memory transport's threshold).
    big: bool = False


BIG = 8192


def value(item: Any) -> int:
    """The number an item stands for: itself, or an array's first element."""
    return item if isinstance(item, int) else int(item[0])


def work(fault: Fault, x: int) -> Any:
    if x == fault.at and fault.kind != "none":
        kind = fault.kind
        if kind == "exit":
            os._exit(1)
        elif kind == "exit_once":
            try:
                os.close(os.open(fault.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass  # fired before: this is the retry
            else:
                os._exit(1)
        elif kind == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif kind == "segfault":
            ctypes.string_at(0)
        elif kind == "raise":
            raise ValueError(f"item {x} is bad")
        elif kind == "hang":
            time.sleep(60)
        else:
            raise AssertionError(f"unknown fault {kind!r}")
    if fault.big:
        return np.full(BIG, 10 * x, dtype=np.int64)
    return 10 * x


def double_plus_one(x: int) -> int:
    return 2 * x + 1


def not_div3(x: int) -> bool:
    return x % 3 != 0


def plus_one(x: Any) -> Any:
    return x + 1


async def aplus_one(x: Any) -> Any:
    await trio.lowlevel.checkpoint()
    return x + 1
