"""The seed pipeline against its bound, measured in the same run.

200 items; item i waits (i % 3) * 10 ms (par_then, limit 16), then pure-Python
fib(24) in par_map(workers=2). bound = 200 * t_fib / 2, where t_fib is fib(24)
timed here. Reported: wall time (from open() to the last item) / bound, with the
workers started by open() (cold, as the demo runs) and with a WorkerPool's warm
workers (as a second epoch runs).

    python bench/seed.py            # floors: wall / bound <= 1.10; <= 1.05 with warm workers
    python bench/seed.py --quick    # 40 items, fib(20)
"""

from __future__ import annotations

import functools
import statistics
import sys
import time

import trio
from _common import check, parser, write

import snake


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


async def slow_read(i: int) -> int:
    await trio.sleep(i % 3 * 0.01)
    return i


def main() -> int:
    args = parser(__doc__ or "").parse_args()
    n_items, fib_n, workers = (40, 20, 2) if args.quick else (200, 24, 2)

    samples: list[float] = []

    def sample_fib() -> None:
        for _ in range(5 if args.quick else 25):
            t0 = time.perf_counter()
            fib(fib_n)
            samples.append(time.perf_counter() - t0)

    sample_fib()

    stream = (
        snake.from_iterable(range(n_items))
        .par_then(slow_read, limit=16)
        .par_map(functools.partial(cpu, fib_n), workers=workers)
    )

    async def run() -> tuple[float, float, int, float]:
        """(open() to the last item, open() to the first item, checksum, closing time)."""
        t0 = time.perf_counter()
        first = last = 0.0
        total = 0
        async with stream.open() as items:
            async for x in items:
                last = time.perf_counter() - t0
                if not first:
                    first = last
                total += x
        return last, first, total, time.perf_counter() - t0 - last

    # This machine's speed drifts by several % between seconds: take the median of
    # three runs, and time fib before and after them.
    runs = [trio.run(run) for _ in range(1 if args.quick else 3)]
    wall, first, total, closing = sorted(runs)[len(runs) // 2]
    assert total == n_items * fib(fib_n) + sum(range(n_items))
    sample_fib()
    t_fib = statistics.median(samples)
    bound = n_items * t_fib / workers
    ratio = wall / bound

    # The same with warm workers (a WorkerPool kept across runs, as across epochs).
    with snake.WorkerPool(workers) as pool:
        stream = (
            snake.from_iterable(range(n_items))
            .par_then(slow_read, limit=16)
            .par_map(functools.partial(cpu, fib_n), pool=pool)
        )
        trio.run(run)  # starts the workers
        warm_runs = [trio.run(run) for _ in range(1 if args.quick else 3)]
        warm_wall, warm_first, _, _ = sorted(warm_runs)[len(warm_runs) // 2]
        # fib's time when both workers run it at once: 2 busy cores slow each other down.
        timed = snake.from_iterable(range(20 * workers)).par_map(functools.partial(timed_fib, fib_n), pool=pool)
        t_fib_parallel = statistics.median(timed.to_list())
    warm_ratio = warm_wall / bound
    print(f"{stream!r}")
    print(f"t_fib({fib_n}) = {t_fib * 1e3:.2f} ms; bound = {n_items} x t_fib / {workers} = {bound:.3f} s")
    print(
        f"wall = {wall:.3f} s; first item after {first * 1e3:.1f} ms (workers started by open()); "
        f"closing (workers shut down) {closing * 1e3:.1f} ms more"
    )
    print(f"warm: wall = {warm_wall:.3f} s; first item after {warm_first * 1e3:.1f} ms (WorkerPool)")
    print(
        f"fib({fib_n}) with both workers busy = {t_fib_parallel * 1e3:.2f} ms "
        f"({t_fib_parallel / t_fib:.3f} x t_fib): the best a 2-worker run can do is "
        f"{t_fib_parallel / t_fib:.3f} x bound"
    )
    check("wall / bound", ratio, "<= 1.10", ratio <= 1.10)
    check("wall / bound, warm workers", warm_ratio, "<= 1.05", warm_ratio <= 1.05)
    results = {
        "items": n_items,
        "fib_n": fib_n,
        "t_fib_s": t_fib,
        "bound_s": bound,
        "wall_s": wall,
        "first_item_s": first,
        "closing_s": closing,
        "wall_over_bound": ratio,
        "warm_wall_s": warm_wall,
        "warm_first_item_s": warm_first,
        "warm_wall_over_bound": warm_ratio,
        "t_fib_both_workers_busy_s": t_fib_parallel,
    }
    write("seed", results, args.json)
    return 0


def timed_fib(fib_n: int, i: int) -> float:
    t0 = time.perf_counter()
    fib(fib_n)
    return time.perf_counter() - t0


def cpu(fib_n: int, i: int) -> int:
    """Runs in a worker process: the CPU work of item i."""
    return fib(fib_n) + i


if __name__ == "__main__":
    sys.exit(main())
