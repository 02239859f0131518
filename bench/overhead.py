"""Per-item framework cost, against a plain Python generator chain in the same run.

    python bench/overhead.py           # 1,000,000 items
    python bench/overhead.py --quick   # 20,000 items (the tests run this)

Floors: 3 fused maps with sync iteration >= 0.5x the generator chain's
items/s; par_then with a trivial async function >= 300,000 items/s.
"""

from __future__ import annotations

import sys
import time

import trio
from _common import best_of, check, parser, write

import snake


def inc(x: int) -> int:
    return x + 1


async def trivial(x: int) -> int:
    return x


def gmap(fn, it):  # type: ignore[no-untyped-def]
    for x in it:
        yield fn(x)


def generator_chain(n: int) -> int:
    total = 0
    for x in gmap(inc, gmap(inc, gmap(inc, range(n)))):
        total += x
    return total


def snake_sync(n: int) -> int:
    total = 0
    for x in snake.from_iterable(range(n)).map(inc).map(inc).map(inc):
        total += x
    return total


def snake_async(n: int) -> int:
    async def main() -> int:
        total = 0
        async with snake.from_iterable(range(n)).map(inc).map(inc).map(inc).open() as items:
            async for x in items:
                total += x
        return total

    return trio.run(main)


def snake_par_then(n: int) -> int:
    total = 0
    for x in snake.from_iterable(range(n)).par_then(trivial, limit=16):
        total += x
    return total


def main() -> int:
    args = parser(__doc__ or "").parse_args()
    n = 20_000 if args.quick else 1_000_000
    repeats = 1 if args.quick else 3
    expected = sum(range(n)) + 3 * n
    assert generator_chain(n) == snake_sync(n) == snake_async(n) == expected
    assert snake_par_then(n) == sum(range(n))

    t_gen = best_of(repeats, lambda: generator_chain(n))
    t_sync = best_of(repeats, lambda: snake_sync(n))
    t_async = best_of(repeats, lambda: snake_async(n))
    t_then = best_of(repeats, lambda: snake_par_then(n))
    results = {
        "items": n,
        "generator_chain_items_per_s": n / t_gen,
        "sync_3_maps_items_per_s": n / t_sync,
        "async_open_3_maps_items_per_s": n / t_async,
        "par_then_trivial_items_per_s": n / t_then,
        "sync_ratio_to_generator_chain": t_gen / t_sync,
        "async_ratio_to_generator_chain": t_gen / t_async,
    }
    print(f"items: {n:,}")
    print(f"generator chain (3 maps):      {n / t_gen:12,.0f} items/s")
    print(f"snake sync for, 3 fused maps:  {n / t_sync:12,.0f} items/s")
    print(f"snake open() async for:        {n / t_async:12,.0f} items/s")
    print(f"snake par_then(trivial, 16):   {n / t_then:12,.0f} items/s")
    ok1 = t_gen / t_sync >= 0.5
    ok2 = n / t_then >= 300_000
    check("sync 3 maps / generator chain", t_gen / t_sync, ">= 0.5", ok1)
    check("par_then trivial items/s", n / t_then, ">= 300,000", ok2)
    write("overhead", results, args.json)
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    print(f"({time.perf_counter() - t0:.1f} s)")
    sys.exit(rc)
