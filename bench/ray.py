"""par_map on Ray actors against worker processes, on this machine, in the same run.

The process backend is measured first, then Ray starts (its daemons take a
share of this machine's CPUs from then on). Both backends run with warm workers (a ``WorkerPool`` of 2, started before the
timing; ``backend="ray"`` for the actors, on the local Ray cluster snake starts),
over three workloads:

- seed: 200 items; item i waits (i % 3) * 10 ms (par_then, limit 16), then
  pure-Python fib(24) in par_map. bound = 200 * t_fib / 2, with t_fib timed here.
- arrays: 256 items; each worker builds a float32 (3, 512, 512) array (3 MiB),
  the main process stacks batches of 32. GB/s delivered.
- trivial: 20,000 items of x + 1: what one item costs the framework, per backend.

Reported: each wall time, Ray over processes, and the per-item overhead
((wall - bound) / items for the seed; wall / items for the trivial items). Ray is
expected to be slower on one machine (see the summary it prints); the floors say
how much slower it may be.

    python bench/ray.py            # floors: seed <= 2 x processes; arrays >= 0.5 GB/s
    python bench/ray.py --quick    # 40 seed items of fib(20), 64 arrays, 2,000 trivial items
"""

from __future__ import annotations

import functools
import os
import pickle
import statistics
import sys
import time
from typing import Any

import numpy as np
import trio
from _common import check, parser, write

import snake


def import_ray() -> Any:
    """Ray itself: this file is named ray.py, and its folder is first on the path."""
    here = os.path.dirname(os.path.abspath(__file__))
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    try:
        import ray
    finally:
        sys.path[:] = saved
    return ray


SHAPE = (3, 512, 512)
BATCH = 32


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


async def slow_read(i: int) -> int:
    await trio.sleep(i % 3 * 0.01)
    return i


def cpu(fib_n: int, i: int) -> int:
    return fib(fib_n) + i


def build(i: int) -> np.ndarray[Any, Any]:
    return np.full(SHAPE, i, dtype=np.float32)


def inc(x: int) -> int:
    return x + 1


def timed(stream: snake.Stream[Any], check_item: Any = None) -> float:
    """Seconds from open() to the last item."""

    async def main() -> float:
        t0 = time.perf_counter()
        seen = 0
        async with stream.open() as items:
            async for x in items:
                if check_item is not None:
                    check_item(seen, x)
                seen += 1
        return time.perf_counter() - t0

    return trio.run(main)


def check_batch(i: int, b: np.ndarray[Any, Any]) -> None:
    assert b.shape[1:] == SHAPE and b[0, 0, 0, 0] == i * BATCH


def measure(
    backend: str, pool: snake.WorkerPool, n_seed: int, fib_n: int, n_arrays: int, n_trivial: int, repeats: int
) -> dict[str, float]:
    on = {"backend": backend, "pool": pool}
    seed = (
        snake.from_iterable(range(n_seed))
        .par_then(slow_read, limit=16)
        .par_map(
            functools.partial(cpu, fib_n),
            **on,  # type: ignore[arg-type]
        )
    )
    arrays = snake.from_iterable(range(n_arrays)).par_map(build, **on).batch(BATCH)  # type: ignore[arg-type]
    trivial = snake.from_iterable(range(n_trivial)).par_map(inc, **on)  # type: ignore[arg-type]
    timed(seed)  # the pool's workers start, and get the functions
    timed(arrays)
    timed(trivial)
    return {
        "seed_s": statistics.median(timed(seed) for _ in range(repeats)),
        "arrays_s": statistics.median(timed(arrays, check_batch) for _ in range(repeats)),
        "trivial_s": statistics.median(timed(trivial) for _ in range(repeats)),
    }


def main() -> int:
    args = parser(__doc__ or "").parse_args()
    n_seed, fib_n, n_arrays, n_trivial, repeats = (
        (40, 20, 64, 2000, 1) if args.quick else (200, 24, 256, 20000, 3)
    )
    workers = 2

    samples = []
    for _ in range(5 if args.quick else 25):
        t1 = time.perf_counter()
        fib(fib_n)
        samples.append(time.perf_counter() - t1)
    t_fib = statistics.median(samples)
    bound = n_seed * t_fib / workers

    sizes = (n_seed, fib_n, n_arrays, n_trivial, repeats)
    with snake.WorkerPool(workers) as pool:
        proc = measure("process", pool, *sizes)
    # Ray's daemons start now: the process backend was measured without them.
    ray = import_ray()
    t0 = time.perf_counter()
    ray.init(log_to_driver=False)
    ray_start = time.perf_counter() - t0
    cpus = ray.cluster_resources().get("CPU", 0)

    with snake.WorkerPool(workers, backend="ray") as pool:
        t1 = time.perf_counter()
        timed(snake.from_iterable(range(workers)).par_map(inc, backend="ray", pool=pool))
        actors_start = time.perf_counter() - t1
        on_ray = measure("ray", pool, *sizes)

        # What receiving one 3 MiB result costs: Ray maps it from its object store (no
        # copy), against unpickling it as it would cross a pipe (one copy).
        arr = build(1)
        ref = ray.put(arr)
        n_get = 20 if args.quick else 200
        t1 = time.perf_counter()
        for _ in range(n_get):
            got = ray.get(ref)
        get_s = (time.perf_counter() - t1) / n_get
        assert not got.flags.writeable and np.array_equal(got, arr)
        blob = pickle.dumps(arr, protocol=pickle.HIGHEST_PROTOCOL)
        t1 = time.perf_counter()
        for _ in range(n_get):
            pickle.loads(blob)
        unpickle_s = (time.perf_counter() - t1) / n_get
        del got, ref

    nbytes = n_arrays * int(np.prod(SHAPE)) * 4
    seed_ratio = on_ray["seed_s"] / proc["seed_s"]
    gbs = {k: nbytes / r["arrays_s"] / 1e9 for k, r in (("process", proc), ("ray", on_ray))}
    over = {k: (r["seed_s"] - bound) / n_seed for k, r in (("process", proc), ("ray", on_ray))}
    per_item = {k: r["trivial_s"] / n_trivial for k, r in (("process", proc), ("ray", on_ray))}
    print(
        f"local Ray cluster: {cpus:g} CPUs, started in {ray_start:.1f} s; 2 actors ready in {actors_start:.2f} s"
    )
    print(f"seed: {n_seed} items, fib({fib_n}) = {t_fib * 1e3:.2f} ms, bound {bound:.3f} s")
    for k, r in (("process", proc), ("ray", on_ray)):
        print(
            f"  {k:8s} wall {r['seed_s']:.3f} s = {r['seed_s'] / bound:.2f} x bound; "
            f"overhead {over[k] * 1e3:.2f} ms per item"
        )
    print(f"arrays: {n_arrays} x {SHAPE} float32 = {nbytes / 1e6:.0f} MB, batches of {BATCH}")
    for k in ("process", "ray"):
        print(f"  {k:8s} {gbs[k]:.2f} GB/s")
    print(
        f"  receiving one 3 MiB array: {get_s * 1e6:.0f} us from Ray's object store (a read-only view, "
        f"no copy), {unpickle_s * 1e6:.0f} us to unpickle it"
    )
    print(f"trivial: {n_trivial} items of x + 1")
    for k in ("process", "ray"):
        print(f"  {k:8s} {per_item[k] * 1e6:.1f} us per item")
    print(
        f"Ray over processes: seed {seed_ratio:.2f} x the wall time, arrays {gbs['ray'] / gbs['process']:.2f} x "
        f"the GB/s, trivial items {per_item['ray'] / per_item['process']:.2f} x the time per item"
    )
    check("seed wall, ray / process", seed_ratio, "<= 2", seed_ratio <= 2)
    check("arrays GB/s on ray", gbs["ray"], ">= 0.5", gbs["ray"] >= 0.5)
    write(
        "ray",
        {
            "cpus": cpus,
            "ray_start_s": ray_start,
            "actors_start_s": actors_start,
            "t_fib_s": t_fib,
            "bound_s": bound,
            "process": {
                **proc,
                "arrays_gb_s": gbs["process"],
                "seed_overhead_s_per_item": over["process"],
                "trivial_s_per_item": per_item["process"],
            },
            "ray": {
                **on_ray,
                "arrays_gb_s": gbs["ray"],
                "seed_overhead_s_per_item": over["ray"],
                "trivial_s_per_item": per_item["ray"],
            },
            "seed_ray_over_process": seed_ratio,
            "ray_get_3mib_s": get_s,
            "unpickle_3mib_s": unpickle_s,
        },
        args.json,
    )
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
