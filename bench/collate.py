"""Batching speed: ``batch()`` through a real pipeline against ``np.stack`` and a memcpy.

    python bench/collate.py           # 256 x (3, 224, 224), uint8 and float32
    python bench/collate.py --quick   # 32 x (3, 224, 224) (the tests run this)

Every line is measured in the same run, on the same items:

- ``memcpy``: ``np.copyto`` of the batch's bytes into a preallocated array (the line to reach);
- ``np.stack``: a fresh output each call (what a plain collate does);
- ``np.stack(out=)``, ``kernels.stack(out=)``: into one reused output, no pipeline;
- ``batch()``: steady state of ``from_iterable(items).batch(n)`` consumed by a plain ``for``
  (``open_sync``) and by ``async for`` (``open``); the items are already in memory and the
  consumer drops each batch at once. The first batches (the pool filling up) are left out;
- ``torch default_collate``, if torch is importable.

Floors: ``batch()`` >= 0.8x memcpy and >= 4x ``np.stack``. A variable-length case
follows: 256 int64 sequences of 1-512 tokens, ``pad_batch()`` against a NumPy loop.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import trio
from _common import check, parser, write

import snake


def timed(repeats: int, fn: Callable[[], Any]) -> float:
    """The median of ``repeats`` timings of ``fn()``, in seconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def per_batch(stamps: list[float], warm: int) -> float:
    """Seconds per batch in steady state: the slope of arrival time against batch number,
    after the first ``warm`` batches. (Batches can arrive in bursts, several in one chunk:
    a fitted slope is not thrown off by where a burst starts, as a difference would be.)"""
    slope, _ = np.polyfit(np.arange(len(stamps) - warm), np.array(stamps[warm:]), 1)
    return float(slope)


def warm_up(buffers: list[int | None], warm: int) -> int:
    """The first batch of the steady state: at least ``warm``, and after the last batch
    written into a buffer not seen before (the pool growing: a fresh buffer's first touch
    costs page faults, and THP compaction on this kind of machine, once per run)."""
    seen: set[int | None] = set()
    last_new = 0
    for i, b in enumerate(buffers):
        if b not in seen:
            seen.add(b)
            last_new = i
    return max(warm, min(last_new + 1, len(buffers) // 2))


def consume(stamps: list[float], buffers: list[int | None], b: Any) -> None:
    stamps.append(time.perf_counter())
    buffers.append(None if b.base is None else id(b.base))


def steady_sync(stream: snake.Stream[Any], warm: int) -> tuple[float, list[int | None], int]:
    """Seconds per batch in steady state, the id of each batch's buffer, and where the
    steady state began."""
    stamps: list[float] = []
    buffers: list[int | None] = []
    for b in stream:
        consume(stamps, buffers, b)
        del b  # the consumer lets go of the batch at once
    start = warm_up(buffers, warm)
    return per_batch(stamps, start), buffers, start


def steady_async(stream: snake.Stream[Any], warm: int) -> tuple[float, list[int | None], int]:
    async def main() -> tuple[float, list[int | None], int]:
        stamps: list[float] = []
        buffers: list[int | None] = []
        async with stream.open() as items:
            async for b in items:
                consume(stamps, buffers, b)
                del b
        start = warm_up(buffers, warm)
        return per_batch(stamps, start), buffers, start

    return trio.run(main)


def pooled_buffers(buffers: list[int | None], warm: int) -> str:
    steady = buffers[warm:]
    fresh = sum(1 for b in steady if b is None)
    return f"{len({b for b in steady if b is not None})} pooled buffers, {fresh} fresh arrays"


def torch_collate() -> Callable[[list[Any]], Any] | None:
    try:
        import torch  # noqa: F401
        from torch.utils.data import default_collate
    except Exception:
        return None
    return default_collate  # type: ignore[no-any-return]


def thp() -> str:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().strip()
    except OSError:
        return "n/a"


def small_pages(fn: Callable[[], float]) -> float | None:
    """Run ``fn`` with NumPy's hugepage madvise off (fresh arrays take 4 KiB page faults),
    or return None where NumPy has no such switch."""
    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy < 2
        from numpy.core import multiarray
    setter = getattr(multiarray, "_set_madvise_hugepage", None)
    if setter is None:
        return None
    before = setter(False)
    try:
        return fn()
    finally:
        setter(before)


def dense_case(dtype: Any, n: int, batches: int, warm: int, repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    items = [rng.integers(0, 255, (3, 224, 224)).astype(dtype) for _ in range(n)]
    nbytes = sum(a.nbytes for a in items)
    src = np.stack(items)
    dst = np.empty_like(src)
    out = np.empty_like(src)
    gbs = lambda t: nbytes / t / 1e9

    t_memcpy = timed(repeats, lambda: np.copyto(dst, src))
    dsts = [dst, out]
    t_memcpy2 = timed(repeats, lambda: [np.copyto(d, src) for d in dsts]) / 2
    t_stack = timed(repeats, lambda: np.stack(items))
    t_stack_4k = small_pages(lambda: timed(repeats, lambda: np.stack(items)))
    t_stack_out = timed(repeats, lambda: np.stack(items, out=out))
    t_kernel_out = timed(repeats, lambda: snake.kernels.stack(items, out))
    t_touch = timed(repeats, lambda: np.empty_like(src).fill(0))
    stream = snake.from_iterable(items * (warm + batches)).batch(n)
    t_sync, buffers, start = steady_sync(stream, warm)
    t_async, async_buffers, async_start = steady_async(stream, warm)
    assert np.array_equal(next(iter(snake.from_iterable(items).batch(n))), src)

    lines: dict[str, float] = {
        "memcpy (np.copyto, preallocated)": t_memcpy,
        "memcpy, alternating between 2 preallocated arrays": t_memcpy2,
        "np.stack (fresh output)": t_stack,
        "np.stack(out=reused)": t_stack_out,
        "kernels.stack(out=reused)": t_kernel_out,
        "fresh array, first touch only (np.empty + fill)": t_touch,
        "batch(), for loop (open_sync)": t_sync,
        "batch(), async for (open)": t_async,
    }
    if t_stack_4k is not None:
        lines["np.stack (fresh output, 4 KiB pages: no hugepage madvise)"] = t_stack_4k
    collate = torch_collate()
    if collate is not None:
        import torch

        tensors = [torch.from_numpy(a) for a in items]
        lines["torch default_collate"] = timed(repeats, lambda: collate(tensors))
    name = np.dtype(dtype).name
    print(f"\n{n} x (3, 224, 224) {name}: {nbytes / 1e6:.1f} MB a batch")
    for label, t in lines.items():
        print(f"  {label:<58} {gbs(t):6.2f} GB/s ({t * 1e3:6.2f} ms)")
    if collate is None:
        print(f"  {'torch default_collate':<58} (torch not importable: skipped)")
    print(
        f"  batch() steady state: open_sync used {pooled_buffers(buffers, start)} over "
        f"{len(buffers) - start} batches; open {pooled_buffers(async_buffers, async_start)} "
        f"over {len(async_buffers) - async_start}"
    )
    best = min(t_sync, t_async)
    results = {f"{label} GB/s": gbs(t) for label, t in lines.items()}
    results.update(
        {
            "batch_bytes": nbytes,
            "best_ratio_to_memcpy_alternating": t_memcpy2 / min(t_sync, t_async),
            "sync_ratio_to_memcpy": t_memcpy / t_sync,
            "async_ratio_to_memcpy": t_memcpy / t_async,
            "sync_ratio_to_np_stack": t_stack / t_sync,
            "async_ratio_to_np_stack": t_stack / t_async,
            "np_stack_out_ratio_to_np_stack": t_stack / t_stack_out,
            "best_ratio_to_np_stack_4k_pages": None if t_stack_4k is None else t_stack_4k / best,
            "steady_state_buffers_sync": pooled_buffers(buffers, start),
            "steady_state_buffers_async": pooled_buffers(async_buffers, async_start),
        }
    )
    check(f"{name}: batch() / memcpy (best of sync, async)", t_memcpy / best, ">= 0.8", t_memcpy / best >= 0.8)
    check(f"{name}: batch() / np.stack (best of sync, async)", t_stack / best, ">= 4", t_stack / best >= 4)
    print(f"  (batch() / memcpy alternating between 2 arrays: {t_memcpy2 / best:.2f}", end="")
    if t_stack_4k is not None:
        print(f"; batch() / np.stack with 4 KiB pages: {t_stack_4k / best:.2f}", end="")
    print(")")
    return results


def numpy_pad(seqs: list[np.ndarray[Any, Any]], pad_value: int = 0) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The reference: a padded batch and the lengths, with a NumPy loop."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    out = np.full((len(seqs), int(lengths.max())), pad_value, dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out, lengths


def ragged_case(n: int, batches: int, warm: int, repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    seqs = [rng.integers(0, 50_000, int(k)) for k in rng.integers(1, 513, n * batches)]
    groups = [seqs[i : i + n] for i in range(0, len(seqs), n)]
    ref, ref_len = numpy_pad(groups[0])
    got, got_len = snake.kernels.pad_stack(groups[0])
    assert np.array_equal(ref, got) and np.array_equal(ref_len, got_len)

    def loop_all(fn: Callable[[list[np.ndarray[Any, Any]]], object]) -> None:
        for g in groups:
            fn(g)

    t_numpy = timed(repeats, lambda: loop_all(numpy_pad)) / len(groups)
    t_kernel = timed(repeats, lambda: loop_all(snake.kernels.pad_stack)) / len(groups)
    outs = [np.empty((n, 512), np.int64) for _ in range(2)]

    def into_reused() -> None:
        for i, g in enumerate(groups):
            snake.kernels.pad_stack(g, 0, outs[i % 2], 512)

    t_kernel_out = timed(repeats, into_reused) / len(groups)

    def through_pipeline(items: Iterable[Any]) -> float:
        stamps: list[float] = []
        buffers: list[int | None] = []
        for b in snake.from_iterable(items).pad_batch(n):
            consume(stamps, buffers, b[0])
            del b
        return per_batch(stamps, warm_up(buffers, warm))

    t_pipe = min(through_pipeline(seqs) for _ in range(repeats))
    print(f"\n{n} int64 sequences of 1-512 tokens (padded batch ~{n * 512 * 8 / 1e6:.1f} MB)")
    print(f"  NumPy loop (np.full + slice assignment)   {t_numpy * 1e6:9.1f} us a batch")
    print(f"  kernels.pad_stack (fresh output)           {t_kernel * 1e6:9.1f} us a batch")
    print(f"  kernels.pad_stack (2 reused outputs, L=512) {t_kernel_out * 1e6:8.1f} us a batch")
    print(f"  pad_batch(), for loop (open_sync)          {t_pipe * 1e6:9.1f} us a batch")
    check("pad_batch() speed-up over the NumPy loop", t_numpy / t_pipe, "none (reported)", True)
    return {
        "numpy_loop_us": t_numpy * 1e6,
        "pad_stack_us": t_kernel * 1e6,
        "pad_stack_reused_out_us": t_kernel_out * 1e6,
        "pad_batch_us": t_pipe * 1e6,
        "pad_batch_ratio_to_numpy_loop": t_numpy / t_pipe,
    }


def main() -> int:
    args = parser(__doc__ or "").parse_args()
    if args.quick:
        n, batches, warm, repeats, ragged = 32, 10, 3, 2, 20
    else:
        n, batches, warm, repeats, ragged = 256, 40, 4, 7, 200
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {cpus} CPUs, THP: {thp()}")
    results: dict[str, Any] = {"batch_size": n, "batches": batches, "transparent_hugepage": thp()}
    for dtype in (np.uint8, np.float32):
        results[np.dtype(dtype).name] = dense_case(dtype, n, batches, warm, repeats)
    results["ragged_int64"] = ragged_case(n, ragged, warm, repeats)
    write("collate", results, args.json)
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    print(f"({time.perf_counter() - t0:.1f} s)")
    sys.exit(rc)
