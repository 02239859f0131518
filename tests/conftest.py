"""Shared fixtures and helpers: the leak check, counting processes and tasks, running a stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio

from snake._engine import tasks
from snake.testing import assert_no_leaks


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


#: The repository's root, and this directory (which holds the helper modules that tests
#: and their worker processes import: funcs, chaos_funcs, cli_pipelines, ...).
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fails the test if a thread, process, descriptor, shared-memory file or mapping it
    started outlives it by more than 2 s (``snake.testing.assert_no_leaks``)."""
    with assert_no_leaks(grace=2.0):
        yield


def count_tasks() -> int:
    """Number of trio tasks alive in the current run."""
    return sum(1 for _ in tasks.walk([trio.lowlevel.current_root_task()]))


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
