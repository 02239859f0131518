"""The seed pipeline against its peers: overlapped IO, then pure-Python CPU work on 2
worker processes.

Item i waits (i % 3) * 10 ms (the IO, up to 16 at once), then ``fib(FIB)`` runs on one of
2 worker processes; the result is ``fib(FIB) + i``, and every runner checks the sum. The
figure is the wall time from the start (building the pipeline, starting its workers, as
a user pays it) to the last item. Extra columns: the main process's CPU time over the same
span (it should not steal the workers' cores), the time to the first item, and the time
from the last item until the runner has shut everything down.

snake's rows are measured cold every round: after each run the process-wide worker cache
and the launcher are shut down, so each round pays what a fresh process pays (the launcher
start and the workers' start). The peers' worker processes are forks of this process.

This module imports only the standard library at the top: snake's workers import it to
unpickle ``cpu``, and a user's script would have its functions imported by snake's
launcher already; heavy imports here would charge snake's workers for them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

TITLE = "seed: 200 x (IO (i%3)*10 ms -> fib(24)), 2 processes"
UNIT = "s"
BETTER = "lower"

WORKERS = 2
IO_LIMIT = 16


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def cpu(fib_n: int, i: int) -> int:
    """Runs in a worker process: the CPU work of item i."""
    return fib(fib_n) + i


async def trio_read(i: int) -> int:
    import trio

    await trio.sleep(i % 3 * 0.01)
    return i


async def asyncio_read(i: int) -> int:
    import asyncio

    await asyncio.sleep(i % 3 * 0.01)
    return i


def blocking_read(i: int) -> int:
    time.sleep(i % 3 * 0.01)
    return i


class Clock:
    """Wall and main-process CPU time from its creation to the last item seen."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.c0 = time.process_time()
        self.first = self.last = self.t0
        self.cpu = 0.0
        self.items = 0
        self.total = 0

    def tick(self, x: int) -> None:
        self.last = time.perf_counter()
        self.cpu = time.process_time() - self.c0
        if not self.items:
            self.first = self.last
        self.items += 1
        self.total += x

    def figure(self, n: int, expected: int) -> tuple[float, dict[str, float]]:
        """Call once everything is shut down."""
        done = time.perf_counter()
        if self.items != n or self.total != expected:
            raise AssertionError(
                f"got {self.items} items summing to {self.total}; expected {n} summing to {expected}"
            )
        return self.last - self.t0, {
            "main CPU s": self.cpu,
            "first item s": self.first - self.t0,
            "close s": done - self.last,
        }


def _fork_context() -> Any:
    import multiprocessing

    return multiprocessing.get_context("fork")


def runners(quick: bool) -> dict[str, Callable[[], Any]]:
    from _driver import lazy, need  # here: the workers import this module

    n, fib_n = (40, 20) if quick else (200, 24)
    expected = n * fib(fib_n) + sum(range(n))
    work = functools.partial(cpu, fib_n)

    def snake_stream() -> Any:
        import snake

        return (
            snake.from_iterable(range(n)).par_then(trio_read, limit=IO_LIMIT).par_map(work, workers=WORKERS)
        )

    def snake_cold() -> None:
        """Stop snake's idle workers and its launcher, as the end of a process would: the
        next round starts cold, and no worker outlives its runner."""
        from snake._workers import procs

        procs._at_exit()

    def snake_run() -> Clock:
        """One run of snake's pipeline under ``trio.run``, consumed by ``async for``."""
        import trio

        async def main() -> Clock:
            clock = Clock()
            async with snake_stream().open() as items:
                async for x in items:
                    clock.tick(x)
            return clock

        return trio.run(main)

    def snake_trio() -> Any:
        try:
            return snake_run().figure(n, expected)
        finally:
            snake_cold()

    def snake_for() -> Any:
        try:
            clock = Clock()
            with snake_stream().open_sync() as items:
                for x in items:
                    clock.tick(x)
            return clock.figure(n, expected)
        finally:
            snake_cold()

    @lazy
    def trio_fork() -> Callable[[], Any]:
        """What a trio user writes by hand: 16 IO tasks, then the CPU work on a
        ProcessPoolExecutor (fork), 2 calls in flight per worker, each awaited in a thread."""
        trio = need("trio")
        from concurrent.futures import ProcessPoolExecutor

        async def main() -> Clock:
            clock = Clock()
            with ProcessPoolExecutor(WORKERS, mp_context=_fork_context()) as pool:
                async with trio.open_nursery() as nursery:
                    idx_send, idx_recv = trio.open_memory_channel(0)
                    io_send, io_recv = trio.open_memory_channel(0)
                    out_send, out_recv = trio.open_memory_channel(0)

                    async def feed() -> None:
                        async with idx_send:
                            for i in range(n):
                                await idx_send.send(i)

                    async def io_task(recv: Any, send: Any) -> None:
                        async with recv, send:
                            async for i in recv:
                                await send.send(await trio_read(i))

                    async def cpu_task(recv: Any, send: Any) -> None:
                        async with recv, send:
                            async for i in recv:
                                future = pool.submit(work, i)
                                await send.send(await trio.to_thread.run_sync(future.result))

                    nursery.start_soon(feed)
                    async with idx_recv, io_send:
                        for _ in range(IO_LIMIT):
                            nursery.start_soon(io_task, idx_recv.clone(), io_send.clone())
                    async with io_recv, out_send:
                        for _ in range(2 * WORKERS):
                            nursery.start_soon(cpu_task, io_recv.clone(), out_send.clone())
                    async with out_recv:
                        async for x in out_recv:
                            clock.tick(x)
            return clock

        return lambda: trio.run(main).figure(n, expected)

    @lazy
    def squirrel() -> Callable[[], Any]:
        """async_map on a 16-thread pool for the IO, then async_map on a 2-process pool."""
        source = need("squirrel.iterstream", "squirrel-core")
        from concurrent.futures import ProcessPoolExecutor

        def run() -> Any:
            clock = Clock()
            with ProcessPoolExecutor(WORKERS, mp_context=_fork_context()) as pool:
                it = (
                    source.IterableSource(range(n))
                    .async_map(blocking_read, buffer=IO_LIMIT, max_workers=IO_LIMIT)
                    .async_map(work, executor=pool)
                )
                for x in it:
                    clock.tick(x)
            return clock.figure(n, expected)

        return run

    @lazy
    def tinypl() -> Callable[[], Any]:
        """pl.thread.map with 16 threads for the IO, then pl.process.map with 2 processes."""
        pl = need("tinypl")

        def run() -> Any:
            clock = Clock()
            pipe = pl.thread.map(range(n), blocking_read, workers=IO_LIMIT, maxsize=IO_LIMIT)
            pipe = pl.process.map(pipe, work, workers=WORKERS)
            for x in pipe:
                clock.tick(x)
            # The pipe stops its threads and processes when it hands out its end.
            return clock.figure(n, expected)

        return run

    @lazy
    def spdl() -> Callable[[], Any]:
        """pipe(async IO, concurrency=16), then pipe(fib, executor=a 2-process pool) with
        2 calls in flight per worker."""
        pipeline = need("spdl.pipeline", "spdl")
        from concurrent.futures import ProcessPoolExecutor

        def run() -> Any:
            clock = Clock()
            with ProcessPoolExecutor(WORKERS, mp_context=_fork_context()) as pool:
                p = (
                    pipeline.PipelineBuilder()
                    .add_source(range(n))
                    .pipe(asyncio_read, concurrency=IO_LIMIT)
                    .pipe(work, executor=pool, concurrency=2 * WORKERS)
                    .add_sink(IO_LIMIT)
                    .build(num_threads=1)
                )
                with p.auto_stop():
                    for x in p:
                        clock.tick(x)
            return clock.figure(n, expected)

        return run

    @lazy
    def torch() -> Callable[[], Any]:
        """A map-style Dataset whose __getitem__ reads (sleeps) then computes, in a
        DataLoader with num_workers=2, one item at a time (batch_size=None)."""
        need("torch")
        from torch.utils.data import DataLoader, Dataset

        class Seed(Dataset):  # type: ignore[misc]
            def __len__(self) -> int:
                return n

            def __getitem__(self, i: int) -> int:
                return work(blocking_read(i))

        def run() -> Any:
            clock = Clock()
            for x in DataLoader(Seed(), batch_size=None, num_workers=WORKERS):
                clock.tick(int(x))
            return clock.figure(n, expected)

        return run

    def snake_second_epoch() -> Any:
        """A second epoch: one untimed run starts the launcher and the workers, the timed
        run finds them in snake's cache, as a training loop's second epoch does."""
        try:
            snake_run()
            return snake_run().figure(n, expected)
        finally:
            snake_cold()

    def bound() -> Any:
        """The CPU bound: n x t_fib / 2 workers, t_fib the median of 15 timings of
        fib(FIB) in this process."""
        import statistics

        times = []
        for _ in range(15):
            t0 = time.perf_counter()
            fib(fib_n)
            times.append(time.perf_counter() - t0)
        return n * statistics.median(times) / WORKERS

    return {
        "baseline: the CPU bound, n x t_fib / 2": bound,
        "snake (trio.run)": snake_trio,
        "snake (for)": snake_for,
        "snake (trio.run), a second epoch": snake_second_epoch,
        "trio + fork pool": trio_fork,
        "squirrel": squirrel,
        "tinypl": tinypl,
        "spdl": spdl,
        "torch DataLoader": torch,
    }
