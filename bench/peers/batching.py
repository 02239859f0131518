"""Batching: the collate kernel into a reused buffer, and ``batch()`` over a short run.

Items: 256 arrays of (3, 224, 224), uint8 (38.5 MB a batch) and float32 (154 MB).

- kernel: one batch stacked into one preallocated, reused output, GB/s of output
  (median of 9 calls after a warm-up call): ``kernels.stack(out=)`` with its default
  threads and with ``threads=1``, ``torch.stack(out=)`` with torch's default threads and
  with ``set_num_threads`` at every core, ``np.stack(out=)``, and the
  baseline, ``np.copyto`` of each item into the output.
- run: 10 batches of 256 through a whole run, the first batch included, GB/s: snake's
  ``from_iterable(items).batch(256)`` consumed by ``for`` (``open_sync``) and by
  ``async for``, each dropping the batch at once, each stream kept across rounds as a
  training loop keeps it across epochs (a later run writes into the buffers of the one
  before); the same ``for`` run in a fresh process (nothing faulted in before it); torch's ``DataLoader(batch_size=256)`` over
  the items in memory; ``torch.stack(out=)`` into one reused buffer; and the baseline,
  a memcpy of the 10 batches into one preallocated array. "steady GB/s" is snake's
  rate over the batches after the 4th.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
from _driver import Figure, lazy, need

ITEM = (3, 224, 224)
N = 256
RUN_BATCHES = 10


def items_of(dtype: Any, n: int) -> list[np.ndarray[Any, Any]]:
    return [np.full(ITEM, i % 251, dtype) for i in range(n)]


def gbs(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9


def median_call(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# -- the kernel ------------------------------------------------------------------------


def kernel_workload(dtype: Any) -> SimpleNamespace:
    name = np.dtype(dtype).name

    def runners(quick: bool) -> dict[str, Callable[[], Figure]]:
        n = 32 if quick else N
        reps = 3 if quick else 9
        items = items_of(dtype, n)
        out = np.empty((n, *ITEM), dtype)
        out.fill(1)  # faulted in: the kernel line measures the copy alone
        nbytes = out.nbytes

        def check() -> None:
            assert out[n - 1, 0, 0, 0] == (n - 1) % 251 and out[0, 2, 223, 223] == 0

        def snake_stack(threads: int | None) -> Callable[[], Figure]:
            from snake import kernels

            def run() -> Figure:
                t = median_call(lambda: kernels.stack(items, out=out, threads=threads), reps)
                check()
                return gbs(nbytes, t)

            return run

        def memcpy() -> Figure:
            def copy() -> None:
                for j in range(n):
                    np.copyto(out[j], items[j])

            t = median_call(copy, reps)
            check()
            return gbs(nbytes, t)

        def np_stack() -> Figure:
            t = median_call(lambda: np.stack(items, out=out), reps)
            check()
            return gbs(nbytes, t)

        @lazy
        def torch_stack() -> Callable[[], Figure]:
            torch = need("torch", "torch (Debian: python3-torch)")
            titems = [torch.from_numpy(a) for a in items]
            tout = torch.from_numpy(out)

            def run() -> Figure:
                t = median_call(lambda: torch.stack(titems, out=tout), reps)
                check()
                return gbs(nbytes, t), {"torch threads": torch.get_num_threads()}

            return run

        @lazy
        def torch_stack_all_cores() -> Callable[[], Figure]:
            torch = need("torch", "torch (Debian: python3-torch)")
            titems = [torch.from_numpy(a) for a in items]
            tout = torch.from_numpy(out)
            cores = len(os.sched_getaffinity(0))

            def run() -> Figure:
                before = torch.get_num_threads()
                torch.set_num_threads(cores)
                try:
                    t = median_call(lambda: torch.stack(titems, out=tout), reps)
                finally:
                    torch.set_num_threads(before)
                check()
                return gbs(nbytes, t), {"torch threads": cores}

            return run

        return {
            "snake kernels.stack(out=)": snake_stack(None),
            "snake kernels.stack(out=, threads=1)": snake_stack(1),
            "torch.stack(out=)": torch_stack,
            "torch.stack(out=), set_num_threads(all cores)": torch_stack_all_cores,
            "np.stack(out=)": np_stack,
            "baseline memcpy (np.copyto per item)": memcpy,
        }

    return SimpleNamespace(
        KEY=f"kernel_{name}",
        TITLE=f"collate kernel: {N} x {ITEM} {name} into a reused buffer",
        UNIT="GB/s",
        BETTER="higher",
        runners=runners,
    )


# -- a run of batches --------------------------------------------------------------------


def snake_stream(items: list[Any], n: int) -> Any:
    import snake

    return snake.from_iterable(items).batch(n)


def snake_run_sync(stream: Any, n: int, count: int) -> tuple[float, float]:
    """(whole-run seconds, steady seconds per batch after the 4th) of a ``for`` over
    ``stream`` (``batch(n)`` of ``count`` items). The runners keep their stream across
    rounds, as a training loop keeps it across epochs: a later run writes into the
    buffers of the one before."""
    stamps = []
    t0 = time.perf_counter()
    with stream.open_sync() as batches:
        for b in batches:
            stamps.append(time.perf_counter())
            assert b.shape == (n, *ITEM)
            del b
    total = time.perf_counter() - t0
    assert len(stamps) == count // n
    return total, (stamps[-1] - stamps[3]) / (len(stamps) - 4)


def snake_run_async(stream: Any, n: int, count: int) -> float:
    import trio

    async def main() -> float:
        count = 0
        t0 = time.perf_counter()
        async with stream.open() as batches:
            async for b in batches:
                assert b.shape == (n, *ITEM)
                count += 1
                del b
        assert count == want // n
        return time.perf_counter() - t0

    want = count

    return trio.run(main)


def fresh_process_main(dtype_name: str, n: int) -> None:
    """Run in a fresh interpreter: build the items, time one ``for`` run, print JSON."""
    items = items_of(np.dtype(dtype_name), n)
    run = [items[k % n] for k in range(RUN_BATCHES * n)]
    total, steady = snake_run_sync(snake_stream(run, n), n, len(run))
    print(json.dumps({"total": total, "steady": steady}))


def run_workload(dtype: Any) -> SimpleNamespace:
    name = np.dtype(dtype).name

    def runners(quick: bool) -> dict[str, Callable[[], Figure]]:
        n = 32 if quick else N
        items = items_of(dtype, n)
        run_items = [items[k % n] for k in range(RUN_BATCHES * n)]
        batch_bytes = n * int(np.prod(ITEM)) * np.dtype(dtype).itemsize
        total_bytes = RUN_BATCHES * batch_bytes

        for_stream = snake_stream(run_items, n)
        async_stream = snake_stream(run_items, n)

        def snake_for() -> Figure:
            total, steady = snake_run_sync(for_stream, n, len(run_items))
            return gbs(total_bytes, total), {"steady GB/s": gbs(batch_bytes, steady)}

        def snake_async() -> Figure:
            return gbs(total_bytes, snake_run_async(async_stream, n, len(run_items)))

        def snake_fresh() -> Figure:
            here = os.path.dirname(os.path.abspath(__file__))
            code = f"import sys; sys.path.insert(0, {here!r}); import batching; batching.fresh_process_main({name!r}, {n})"
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            return gbs(total_bytes, got["total"]), {"steady GB/s": gbs(batch_bytes, got["steady"])}

        def memcpy() -> Figure:
            out = np.empty((n, *ITEM), dtype)
            out.fill(1)
            t0 = time.perf_counter()
            for _ in range(RUN_BATCHES):
                for j in range(n):
                    np.copyto(out[j], items[j])
            return gbs(total_bytes, time.perf_counter() - t0)

        @lazy
        def torch_stack_loop() -> Callable[[], Figure]:
            torch = need("torch", "torch (Debian: python3-torch)")
            titems = [torch.from_numpy(a) for a in items]

            def run() -> Figure:
                t0 = time.perf_counter()
                out = torch.empty((n, *ITEM), dtype=titems[0].dtype)  # one buffer, reused
                for _ in range(RUN_BATCHES):
                    torch.stack(titems, out=out)
                return gbs(total_bytes, time.perf_counter() - t0)

            return run

        @lazy
        def torch_loader() -> Callable[[], Figure]:
            need("torch", "torch (Debian: python3-torch)")
            from torch.utils.data import DataLoader

            def run() -> Figure:
                t0 = time.perf_counter()
                count = 0
                for b in DataLoader(run_items, batch_size=n):
                    assert tuple(b.shape) == (n, *ITEM)
                    count += 1
                    del b
                assert count == RUN_BATCHES
                return gbs(total_bytes, time.perf_counter() - t0)

            return run

        return {
            "snake batch() (for)": snake_for,
            "snake batch() (trio.run)": snake_async,
            "snake batch() (for), fresh process": snake_fresh,
            "torch DataLoader(batch_size)": torch_loader,
            "torch.stack(out=), one reused buffer": torch_stack_loop,
            "baseline memcpy into one buffer": memcpy,
        }

    return SimpleNamespace(
        KEY=f"run_{name}",
        TITLE=f"batch() over a run of {RUN_BATCHES} batches of {N} x {ITEM} {name}, first batch included",
        UNIT="GB/s",
        BETTER="higher",
        runners=runners,
    )


WORKLOADS = [
    kernel_workload(np.uint8),
    kernel_workload(np.float32),
    run_workload(np.uint8),
    run_workload(np.float32),
]
