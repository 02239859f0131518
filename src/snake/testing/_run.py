"""Running a stream the ways a user does, each under a leak check, for the laws."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from .._stream import Stream
from ._leaks import LeakCheck
from ._model import LAW_RELEASE

T = TypeVar("T")

#: Seconds the laws give the OS to reap threads and processes after a pipeline ends.
LAW_GRACE_S = 1.0


def in_trio_task() -> bool:
    """Whether this code runs in a trio task (an async test, a trio program).

    Not ``current_trio_token()``: a trio *guest* run (``snake.aio`` on asyncio) stays
    registered in its thread between its ticks, while the asyncio code around it runs
    outside any trio task and may block or start a ``trio.run`` of its own in a thread.
    """
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def _trio_run_in_thread() -> bool:
    """Whether a trio run, guest or not, is registered in this thread (no ``trio.run`` here)."""
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


def refuse_trio(call: str, instead: str) -> None:
    """``call`` blocks until it is done: inside a trio task that would freeze the trio loop."""
    if in_trio_task():
        raise RuntimeError(
            f"{call} runs its own trio.run, which cannot run inside trio (an async test); use {instead} there"
        )


def run_coroutines(fn: Callable[[], Awaitable[T]]) -> T:
    """``trio.run(fn)``, in a helper thread if this thread already has a trio run (a trio
    task that waits, or the guest run of ``snake.aio`` on an asyncio loop)."""
    if not _trio_run_in_thread():
        return trio.run(fn)
    out: list[T] = []
    error: list[BaseException] = []

    def main() -> None:
        try:
            out.append(trio.run(fn))
        except BaseException as exc:
            error.append(exc)

    import threading

    thread = threading.Thread(target=main, name="snake.testing reference")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return out[0]


def release_check(header: str) -> LeakCheck:
    return LeakCheck(LAW_GRACE_S, f"{header}\n  law broken: {LAW_RELEASE}")


async def collect_open(stream: Stream[Any], stop: int | None = None) -> list[Any]:
    """The items of ``stream`` through ``async with stream.open()``; with ``stop``, break after
    that many (leaving the block at once for 0)."""
    out: list[Any] = []
    async with stream.open() as items:
        if stop == 0:
            return out
        async for x in items:
            out.append(x)
            if stop is not None and len(out) >= stop:
                break
    return out


def run_open(stream: Stream[Any], stop: int | None = None) -> list[Any]:
    """:func:`collect_open` under a ``trio.run`` of its own (see :func:`run_coroutines`)."""
    return run_coroutines(functools.partial(collect_open, stream, stop))


def collect_sync(stream: Stream[Any], stop: int | None = None) -> list[Any]:
    """The items of ``stream`` through ``with stream.open_sync()``; with ``stop``, break after
    that many."""
    out: list[Any] = []
    with stream.open_sync() as items:
        if stop == 0:
            return out
        for x in items:
            out.append(x)
            if stop is not None and len(out) >= stop:
                break
    return out
