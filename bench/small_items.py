"""Many small items through worker processes, and the time to the first item.

200,000 ints through par_map(workers=2) with a trivial function: items/s
(items are shipped in chunks sized from the measured per-item time). Also the
time from open() to the first item of a par_map pipeline (workers start while
the source produces), cold (new workers) and warm (a WorkerPool).

    python bench/small_items.py           # floor: >= 200,000 items/s
    python bench/small_items.py --quick   # 20,000 items
"""

from __future__ import annotations

import statistics
import sys
import time

import trio
from _common import check, parser, write

import snake


def inc(x: int) -> int:
    return x + 1


def throughput(n: int) -> float:
    t0 = time.perf_counter()
    total = 0
    for x in snake.from_iterable(range(n)).par_map(inc, workers=2):
        total += x
    elapsed = time.perf_counter() - t0
    assert total == n * (n + 1) // 2
    return n / elapsed


def first_item(stream: snake.Stream[int]) -> float:
    async def main() -> float:
        t0 = time.perf_counter()
        async with stream.open() as items:
            await items.receive()
            return time.perf_counter() - t0

    return trio.run(main)


def main() -> int:
    args = parser(__doc__ or "").parse_args()
    n = 20_000 if args.quick else 200_000
    rate = max(throughput(n) for _ in range(1 if args.quick else 3))
    stream = snake.from_iterable(range(1000)).par_map(inc, workers=2)
    cold = statistics.median(first_item(stream) for _ in range(5))
    with snake.WorkerPool(2) as pool:
        warm_stream = snake.from_iterable(range(1000)).par_map(inc, pool=pool)
        first_item(warm_stream)
        warm = statistics.median(first_item(warm_stream) for _ in range(5))
    print(f"{n:,} ints through par_map(inc, workers=2): {rate:,.0f} items/s")
    print(f"time to first item from open(): {cold * 1e3:.1f} ms (new workers), {warm * 1e3:.1f} ms (WorkerPool)")
    check("par_map small items/s", rate, ">= 200,000", rate >= 200_000)
    write(
        "small_items",
        {"items": n, "items_per_s": rate, "first_item_cold_s": cold, "first_item_warm_s": warm},
        args.json,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
