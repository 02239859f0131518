"""Module-level functions the Ray tests send to Ray actors and tasks.

Ray's workers import this module by name: the tests start Ray with this directory
on the workers' ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np


class Boom(Exception):
    """A user exception type that must come out unchanged."""


def square(x: int) -> int:
    return x * x


def where(x: int) -> tuple[int, int, str]:
    """The item, and the process and Ray node that ran it."""
    import ray

    time.sleep(0.05)
    return x, os.getpid(), ray.get_runtime_context().get_node_id()


def slow_where(x: int) -> tuple[int, int, str]:
    time.sleep(0.2)
    return where(x)


def pid(x: int) -> int:
    return os.getpid()


def boom_on_7(x: int) -> int:
    if x == 7:
        raise Boom(f"item {x} is bad")
    return x


def die_on_3(x: int) -> int:
    """The actor's process exits (no Python error)."""
    if x == 3:
        os._exit(3)
    return x


def sigkill_on_3(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def ray_kill_on_3(x: int) -> int:
    """Ray kills the actor that runs item 3."""
    if x == 3:
        import ray

        ray.kill(ray.get_runtime_context().current_actor)
        time.sleep(60)
    return x


def crash_once(arg: tuple[str, int]) -> tuple[int, int]:
    """Item i with i % 5 == 2 kills its actor the first time it runs (a marker file
    says it ran); returns the item and the process that ran it."""
    folder, i = arg
    marker = Path(folder) / f"ran-{i}"
    if i % 5 == 2 and not marker.exists():
        marker.touch()
        os._exit(1)
    return i, os.getpid()


def sleep_on_3(x: int) -> int:
    if x == 3:
        time.sleep(60)
    return x


def sleep_then_return(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def record(arg: tuple[str, int]) -> int:
    """Leaves a file per item run, then takes 10 ms."""
    folder, i = arg
    (Path(folder) / f"{i}").touch()
    time.sleep(0.01)
    return i


def image(i: int) -> np.ndarray[Any, Any]:
    """A 1 MiB array, as a decoder would make."""
    return np.full((512, 2048), i % 251, np.uint8)


def boom_on_7_of_pair(pair: tuple[int, Any]) -> Any:
    """For a stage after ``enumerate()``: raises on item 7."""
    if pair[0] == 7:
        raise Boom("item 7 is bad")
    return pair


class Unpicklable:
    """A callable that no pickler can send (it holds a lock)."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()

    def __call__(self, x: int) -> int:
        return x


def unpicklable(x: int) -> Any:
    import threading

    return threading.Lock()


class Model:
    """A callable with a costly set-up, done on its first call in each actor."""

    def __init__(self) -> None:
        self.setup: tuple[int, float] | None = None
        self.calls = 0

    def __call__(self, x: int) -> tuple[int, tuple[int, float], int]:
        if self.setup is None:
            self.setup = (os.getpid(), time.time())
        self.calls += 1
        return x, self.setup, self.calls


def env_var(x: int) -> str | None:
    return os.environ.get("SNAKE_RAY_TEST")


def granted(x: int) -> tuple[str | None, dict[str, float], list[Any]]:
    """What Ray gave the actor running the item: an environment variable of its
    runtime_env, its resources, and its GPU ids."""
    import ray

    context = ray.get_runtime_context()
    return os.environ.get("SNAKE_RAY_TEST"), context.get_assigned_resources(), ray.get_gpu_ids()


def shard_rank(rank: int, world_size: int) -> list[int]:
    """What one training rank sees: the stream every rank builds, sharded by rank."""
    import snake

    stream = snake.from_iterable(range(103)).shuffle(32, seed=7).shard(rank=rank, world_size=world_size)
    return stream.to_list()
