"""Module-level functions the tests send to worker processes (they must pickle)."""

from __future__ import annotations

import os
import time

import trio


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


def die_on_3(x: int) -> int:
    if x == 3:
        os._exit(17)
    return x


def sleep_long(x: int) -> int:
    time.sleep(60)
    return x


async def ainc(x: int) -> int:
    await trio.sleep(0)
    return x + 1


async def ajitter(x: int) -> int:
    # A deterministic, item-dependent delay so completion order differs from input order.
    await trio.sleep((x * 7919 % 13) / 10000)
    return x + 1


async def afail_on_7(x: int) -> int:
    await trio.sleep(0)
    if x == 7:
        raise Boom(f"item {x} is bad")
    return x
