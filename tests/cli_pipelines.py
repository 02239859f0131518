"""Pipelines for the ``snake run`` tests (run as ``tests/cli_pipelines.py:NAME``)."""

from __future__ import annotations

import trio

import snake


async def nap(x: int) -> int:
    await trio.sleep(0.001)
    return x


def user_function_that_fails(x: int) -> int:
    if x == 7:
        raise ValueError(f"bad item {x}")
    return x


stream = snake.from_iterable(range(50)).par_then(nap, limit=4).map(str)


def make() -> snake.Stream[int]:
    return snake.from_iterable(range(20)).map(abs)


failing = snake.from_iterable(range(20)).map(user_function_that_fails)

not_a_stream = 42
