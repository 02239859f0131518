"""Shared fixtures: resource accounting for leak checks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import trio


def child_processes() -> list[psutil.Process]:
    """Live (non-zombie) descendant processes of this test process, except those snake
    keeps on purpose (its worker launcher and the idle workers of its process-wide cache)."""
    from snake._workers.procs import kept_pids

    kept = kept_pids()
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.pid not in kept and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def busy_threads(baseline: set[int]) -> list[threading.Thread]:
    """Threads that are new since ``baseline`` and not idle in trio's thread cache."""
    return [
        t
        for t in threading.enumerate()
        if t.ident not in baseline and t.is_alive() and not t.name.startswith("Trio thread")
    ]


class Resources:
    """Snapshot of threads and child processes; ``check()`` fails on anything new."""

    def __init__(self) -> None:
        self.threads = {t.ident for t in threading.enumerate() if t.ident is not None}
        self.children = {p.pid for p in child_processes()}

    def leaked(self) -> tuple[list[str], list[int]]:
        threads = [t.name for t in busy_threads(self.threads)]
        procs = [p.pid for p in child_processes() if p.pid not in self.children]
        return threads, procs

    def check(self, within: float = 2.0) -> None:
        """Everything started since the snapshot must be gone within ``within`` s."""
        deadline = time.monotonic() + within
        while True:
            threads, procs = self.leaked()
            if not threads and not procs:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"leaked threads {threads} and child processes {procs}")
            time.sleep(0.02)


@pytest.fixture
def resources() -> Iterator[Resources]:
    res = Resources()
    yield res
    res.check()


def count_tasks() -> int:
    """Number of trio tasks alive in the current run."""
    root = trio.lowlevel.current_root_task()
    seen = 0
    stack = [root]
    while stack:
        task = stack.pop()
        seen += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return seen


def run_async(stream: Any) -> list[Any]:
    """Every item of ``stream``, through ``async with stream.open()``."""

    async def main() -> list[Any]:
        out = []
        async with stream.open() as items:
            async for x in items:
                out.append(x)
        return out

    return trio.run(main)


def run_sync(stream: Any) -> list[Any]:
    """Every item of ``stream``, through ``with stream.open_sync()``."""
    with stream.open_sync() as items:
        return list(items)
