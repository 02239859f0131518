"""Tuned concurrency against the best hand-picked setting, swept in the same run.

Two workloads, each run with every setting of a sweep and with ``"auto"``, rounds
interleaved (median of 3 rounds; 1 with ``--quick``), workers warm (a first untimed run
starts them, as a second epoch finds them):

- seed: ``from_iterable(range(200)).par_then(read, limit=L).par_map(fib, workers=W)``
  (item i waits (i % 3) * 10 ms, then pure-Python fib(24)); the sweep is W in 1-4 x L
  in (4, 16, 64), against ``workers="auto", limit="auto"``; wall seconds;
- images: the Parquet PNG shards of ``bench/peers/images.py`` (Hugging Face layout),
  ``from_parquet(shards).par_map(decode_row, workers=W).batch(64)``; the sweep is W in
  1-4, against ``workers="auto"``, and ``"auto"`` with a ``memory_budget`` of 64 MB;
  images/s.

Printed: each setting's figure, the best of the sweep, and auto / best (>= 0.95 is the
aim); then each tuned stage's ``tuning`` line from the last auto run, which says what it
chose and why.

    python bench/autotune.py            # 200 items, fib(24); 2,048 images
    python bench/autotune.py --quick    # 40 items, fib(20); 256 images
"""

from __future__ import annotations

import functools
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import trio
from _common import check, parser, write

import snake

HERE = os.path.dirname(os.path.abspath(__file__))


def peers_module(name: str) -> Any:
    """``bench/peers/NAME.py``; bench/peers goes on sys.path (its functions run in workers)."""
    peers = os.path.join(HERE, "peers")
    if peers not in sys.path:
        sys.path.insert(0, peers)
    return importlib.import_module(name)


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def cpu(fib_n: int, i: int) -> int:
    return fib(fib_n) + i


async def read(i: int) -> int:
    await trio.sleep(i % 3 * 0.01)
    return i


def consume(stream: snake.Stream[Any]) -> tuple[float, str]:
    """(seconds from open() to the end, the tuning lines of the run)."""

    async def main() -> tuple[float, str]:
        t0 = time.perf_counter()
        async with stream.open() as items:
            async for _ in items:
                pass
            took = time.perf_counter() - t0
            stats = items.statistics()
        lines = [f"{st.name}: {st.tuning}" for st in stats.stages if st.tuning is not None]
        return took, "\n".join(lines)

    return trio.run(main)


def sweep(
    settings: dict[str, Callable[[], snake.Stream[Any]]], rounds: int, figure: Callable[[float], float]
) -> tuple[dict[str, float], dict[str, str]]:
    """Median figure of each setting over ``rounds`` interleaved rounds, after one warm-up
    run each; and the last tuning lines of each."""
    for make in settings.values():
        consume(make())
    got: dict[str, list[float]] = {k: [] for k in settings}
    tuning: dict[str, str] = {}
    for _ in range(rounds):
        for name, make in settings.items():
            took, lines = consume(make())
            got[name].append(figure(took))
            if lines:
                tuning[name] = lines
    return {k: statistics.median(v) for k, v in got.items()}, tuning


def report(
    title: str, unit: str, figures: dict[str, float], higher: bool, tuning: dict[str, str]
) -> dict[str, Any]:
    print(f"\n== {title}")
    autos = [k for k in figures if "auto" in k]
    hand = {k: v for k, v in figures.items() if k not in autos}
    best = (max if higher else min)(hand, key=lambda k: hand[k])
    for name, v in sorted(figures.items(), key=lambda kv: -kv[1] if higher else kv[1]):
        mark = "  (best hand-picked)" if name == best else ""
        print(f"  {name:<44} {v:10.4g} {unit}{mark}")
    out: dict[str, Any] = {"figures": figures, "best": best, "ratios": {}}
    for name in autos:
        ratio = figures[name] / hand[best] if higher else hand[best] / figures[name]
        out["ratios"][name] = ratio
        check(f"{title}: {name} / best hand-picked ({best})", ratio, ">= 0.95", ratio >= 0.95)
        for line in tuning.get(name, "").splitlines():
            print(f"    tuned: {line}")
    return out


def main() -> int:
    args = parser(__doc__ or "").parse_args()
    rounds = 1 if args.quick else 3
    n, fib_n = (40, 20) if args.quick else (200, 24)
    work = functools.partial(cpu, fib_n)

    def seed(workers: int | str, limit: int | str) -> Callable[[], snake.Stream[Any]]:
        return lambda: (
            snake.from_iterable(range(n)).par_then(read, limit=limit).par_map(work, workers=workers)
        )

    seed_settings = {f"workers={w}, limit={lim}": seed(w, lim) for w in (1, 2, 3, 4) for lim in (4, 16, 64)}
    seed_settings["workers='auto', limit='auto'"] = seed("auto", "auto")
    figures, tuning = sweep(seed_settings, rounds, lambda s: s)
    results = {"seed": report(f"seed: {n} items, fib({fib_n})", "s", figures, False, tuning)}

    images = peers_module("images")
    _, paths, expected = images.dataset(args.quick)
    rows = len(expected)

    def image_path(workers: int | str, memory: int | None = None) -> Callable[[], snake.Stream[Any]]:
        def make() -> snake.Stream[Any]:
            s = snake.from_parquet(paths).par_map(images.decode_row, workers=workers).batch(images.BATCH)
            return s.autotune(memory_budget=memory) if memory is not None else s

        return make

    image_settings = {f"workers={w}": image_path(w) for w in (1, 2, 3, 4)}
    image_settings["workers='auto'"] = image_path("auto")
    image_settings["workers='auto', memory_budget=64 MB"] = image_path("auto", 64 << 20)
    figures, tuning = sweep(image_settings, rounds, lambda s: rows / s)
    results["images"] = report(
        f"images: {rows} PNGs, decode+augment, batch {images.BATCH}", "images/s", figures, True, tuning
    )
    write("autotune", results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
