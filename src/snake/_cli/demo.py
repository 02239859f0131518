"""The seed pipeline from the README, runnable as ``snake demo``."""

from __future__ import annotations

import time
from typing import Literal

import attrs
import trio

from .._stream import Stream, from_iterable


def fib(n: int) -> int:
    """Recursive Fibonacci in pure Python: CPU work that needs processes."""
    return n if n < 2 else fib(n - 1) + fib(n - 2)


async def slow_read(i: int) -> int:
    """Simulated IO: waits 0, 10 or 20 ms, then returns the fib argument for item i."""
    await trio.sleep(i % 3 * 0.01)
    return 20 + i % 10


def seed_stream(
    n: int = 100, *, workers: int = 2, backend: Literal["process", "thread", "ray"] = "process"
) -> Stream[int]:
    """The seed pipeline: overlapped reads, then fib in parallel workers."""
    if backend == "ray":
        return from_iterable(range(n)).par_then(slow_read, limit=16).par_map(fib, workers=workers, backend="ray")
    if backend == "thread":
        from ..kernels import fib as rust_fib

        return from_iterable(range(n)).par_then(slow_read, limit=16).par_map(rust_fib, workers=workers, backend="thread")
    return from_iterable(range(n)).par_then(slow_read, limit=16).par_map(fib, workers=workers)


@attrs.frozen
class DemoResult:
    """What ``snake demo`` measured."""

    #: Number of items.
    items: int
    #: Sum of the results (the same for every backend and order).
    checksum: int
    #: Seconds the pipeline took, from ``open()`` to the last item.
    pipeline_s: float
    #: Seconds the same reads and fibs took one after the other.
    sequential_s: float


def start_ray() -> str:
    """Connect to Ray, or start a local cluster, before the demo is timed: what it did.

    On the main thread, unlike a stage (which starts Ray in a thread so that its trio
    run goes on): only there does Ray install its SIGTERM handler (and say so on
    stderr when it cannot)."""
    import ray

    from .._workers.ray import init_ray

    started = not ray.is_initialized()
    t0 = time.perf_counter()
    init_ray()
    cpus = ray.cluster_resources().get("CPU", 0)
    how = f"started a local cluster in {time.perf_counter() - t0:.1f} s" if started else "connected"
    return f"{how}, {cpus:g} CPUs (not in the pipeline's time)"


async def run_demo(
    n: int = 100, *, workers: int = 2, backend: Literal["process", "thread", "ray"] = "process"
) -> DemoResult:
    stream = seed_stream(n, workers=workers, backend=backend)
    t0 = time.perf_counter()
    checksum = 0
    count = 0
    async with stream.open() as items:
        async for x in items:
            checksum += x
            count += 1
    pipeline_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    expected = 0
    for i in range(n):
        expected += fib(await slow_read(i))
    sequential_s = time.perf_counter() - t0
    if count != n or checksum != expected:
        raise AssertionError(f"demo: got {count} items with checksum {checksum}; expected {n} and {expected}")
    return DemoResult(count, checksum, pipeline_s, sequential_s)
