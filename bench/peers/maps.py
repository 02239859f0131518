"""Per-item framework cost: three fused maps of trivial functions over a range of ints.

Every runner computes ``((x + 1) * 2) - 3`` for each x of ``range(n)`` in three separate
map steps and sums the results in the consuming loop (the sum is checked). The figure is
items per second over the whole run: building the pipeline, iterating it, closing it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from _driver import lazy, need
from _driver import rate as driver_rate

TITLE = "3 fused maps over 1M ints"
UNIT = "items/s"
BETTER = "higher"


def f(x: int) -> int:
    return x + 1


def g(x: int) -> int:
    return x * 2


def h(x: int) -> int:
    return x - 3


def gmap(fn: Callable[[int], int], it: Iterable[int]) -> Iterator[int]:
    for x in it:
        yield fn(x)


def runners(quick: bool) -> dict[str, Callable[[], Any]]:
    n = 100_000 if quick else 1_000_000
    expected = 2 * sum(range(n)) - n

    def rate(run: Callable[[], int]) -> float:
        return driver_rate(n, expected, run)

    def snake_for() -> float:
        import snake

        def run() -> int:
            total = 0
            with snake.from_iterable(range(n)).map(f).map(g).map(h).open_sync() as items:
                for x in items:
                    total += x
            return total

        return rate(run)

    def snake_trio() -> float:
        import trio

        import snake

        async def main() -> int:
            total = 0
            async with snake.from_iterable(range(n)).map(f).map(g).map(h).open() as items:
                async for x in items:
                    total += x
            return total

        return rate(lambda: trio.run(main))

    def generators() -> float:
        def run() -> int:
            total = 0
            for x in gmap(h, gmap(g, gmap(f, range(n)))):
                total += x
            return total

        return rate(run)

    @lazy
    def squirrel() -> Callable[[], float]:
        source = need("squirrel.iterstream", "squirrel-core")

        def run() -> int:
            total = 0
            for x in source.IterableSource(range(n)).map(f).map(g).map(h):
                total += x
            return total

        return lambda: rate(run)

    @lazy
    def tinypl() -> Callable[[], float]:
        pl = need("tinypl")

        def run() -> int:
            total = 0
            for x in pl.map(pl.map(pl.map(range(n), f), g), h):
                total += x
            return total

        return lambda: rate(run)

    @lazy
    def torch() -> Callable[[], float]:
        """An IterableDataset doing the three maps, in a DataLoader in this process
        (num_workers=0), one item at a time (batch_size=None)."""
        need("torch")
        from torch.utils.data import DataLoader, IterableDataset

        class Maps(IterableDataset):  # type: ignore[misc]
            def __iter__(self) -> Iterator[int]:
                return gmap(h, gmap(g, gmap(f, range(n))))

        def run() -> int:
            total = 0
            for x in DataLoader(Maps(), batch_size=None, num_workers=0):
                total += x
            return total

        return lambda: rate(run)

    return {
        "snake (for)": snake_for,
        "snake (trio.run)": snake_trio,
        "generator chain": generators,
        "squirrel": squirrel,
        "tinypl": tinypl,
        "torch DataLoader": torch,
    }
