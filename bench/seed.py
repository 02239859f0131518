"""The seed pipeline against its bound, measured in the same run.

200 items; item i waits (i % 3) * 10 ms (par_then, limit 16), then pure-Python
fib(24) in par_map(workers=2). bound = 200 * t_fib / 2, where t_fib is fib(24)
timed here. Reported: wall time (from open() to the last item) / bound.

    python bench/seed.py            # floor (issue #2): <= 1.10; (issue #3): <= 1.05
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

    samples = []
    for _ in range(5 if args.quick else 15):
        t0 = time.perf_counter()
        fib(fib_n)
        samples.append(time.perf_counter() - t0)
    t_fib = statistics.median(samples)
    bound = n_items * t_fib / workers

    stream = (
        snake.from_iterable(range(n_items))
        .par_then(slow_read, limit=16)
        .par_map(functools.partial(cpu, fib_n), workers=workers)
    )

    async def run() -> tuple[float, float, int]:
        t0 = time.perf_counter()
        first = 0.0
        total = 0
        async with stream.open() as items:
            async for x in items:
                if not first:
                    first = time.perf_counter() - t0
                total += x
        return time.perf_counter() - t0, first, total

    wall, first, total = trio.run(run)
    assert total == n_items * fib(fib_n) + sum(range(n_items))
    ratio = wall / bound
    print(f"{stream!r}")
    print(f"t_fib({fib_n}) = {t_fib * 1e3:.2f} ms; bound = {n_items} x t_fib / {workers} = {bound:.3f} s")
    print(f"wall = {wall:.3f} s; first item after {first * 1e3:.1f} ms")
    check("wall / bound", ratio, "<= 1.10 (issue #2), <= 1.05 (issue #3)", ratio <= 1.10)
    results = {
        "items": n_items,
        "fib_n": fib_n,
        "t_fib_s": t_fib,
        "bound_s": bound,
        "wall_s": wall,
        "first_item_s": first,
        "wall_over_bound": ratio,
    }
    write("seed", results, args.json)
    return 0


def cpu(fib_n: int, i: int) -> int:
    """Runs in a worker process: the CPU work of item i."""
    return fib(fib_n) + i


if __name__ == "__main__":
    sys.exit(main())
