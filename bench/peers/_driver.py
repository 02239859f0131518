"""The peers' driver: runs every runner of a workload interleaved, takes medians, and
prints one side-by-side table.

A workload module (``bench/peers/<name>.py``) defines::

    TITLE = "seed: 200 x (IO (i%3)*10 ms -> fib(24)), 2 processes"
    UNIT = "s"            # what a runner's figure is in
    BETTER = "lower"      # or "higher"
    def runners(quick: bool) -> dict[str, Callable[[], Figure]]: ...

where ``Figure`` is a float, or ``(float, {"extra": float, ...})`` for extra columns
(main-process CPU time, for example). Runner names starting with ``snake`` are snake's,
names starting with ``baseline`` are reference lines (a memcpy) shown but never taken
as the best peer; the others are peers. A module with several workloads defines
``WORKLOADS``, a list of objects with those four attributes, instead. A runner factory that cannot import its peer raises ``Missing``
(caught per runner: the table then says "not installed"); any other exception in a run
is printed and that runner's figure is left out, never silently replaced.
"""

from __future__ import annotations

import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Figure = float | tuple[float, dict[str, float]]


class Missing(Exception):
    """A peer that is not installed in this environment (the message says which package)."""


def need(module: str, package: str | None = None) -> Any:
    """Import ``module`` or raise ``Missing`` naming the package to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise Missing(f"not installed ({package or module}: {e})") from None


def rate(n: int, expected: int, run: Callable[[], int]) -> float:
    """Items/s of ``run()``, which handles ``n`` items and returns their checksum: it
    must be ``expected`` (a runner that skipped work fails instead of winning)."""
    t0 = time.perf_counter()
    total = run()
    dt = time.perf_counter() - t0
    if total != expected:
        raise AssertionError(f"sum {total}, expected {expected}")
    return n / dt


@dataclass
class Row:
    runner: str
    values: list[float] = field(default_factory=list)
    extras: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def extra(self, key: str) -> float | None:
        v = self.extras.get(key)
        return statistics.median(v) if v else None


def lazy(factory: Callable[[], Callable[[], Figure]]) -> Callable[[], Callable[[], Figure]]:
    """Mark a runner as built on first use (so a missing peer is found when it runs)."""
    factory.__lazy__ = True  # type: ignore[attr-defined]
    return factory


def run_workload(module: Any, quick: bool, repeats: int) -> dict[str, Any]:
    """Runs ``module``'s runners ``repeats`` rounds, interleaved; returns the JSON record."""
    print(f"\n== {module.TITLE}", flush=True)
    t0 = time.perf_counter()
    fns = module.runners(quick)
    rows = {name: Row(name) for name in fns}
    built: dict[str, Callable[[], Figure] | None] = {}
    for name, fn in fns.items():
        if getattr(fn, "__lazy__", False):
            try:
                built[name] = fn()
            except Missing as e:
                rows[name].note = str(e)
                built[name] = None
        else:
            built[name] = fn
    for _ in range(repeats):
        for name, fn in built.items():
            if fn is None or rows[name].note.startswith("failed"):
                continue
            try:
                figure = fn()
            except Missing as e:
                rows[name].note = str(e)
                built[name] = None
                continue
            except Exception as e:  # a peer's failure is reported, not hidden
                traceback.print_exc()
                rows[name].note = f"failed: {type(e).__name__}: {e}"[:120]
                continue
            value, extras = figure if isinstance(figure, tuple) else (figure, {})
            rows[name].values.append(float(value))
            for k, v in extras.items():
                rows[name].extras.setdefault(k, []).append(float(v))
    table(module, list(rows.values()))
    return {
        "title": module.TITLE,
        "unit": module.UNIT,
        "better": module.BETTER,
        "seconds": time.perf_counter() - t0,
        "runners": {
            r.runner: {
                "median": r.median,
                "values": r.values,
                "extras": {k: r.extra(k) for k in r.extras},
                "note": r.note,
            }
            for r in rows.values()
        },
        **ratios(module, list(rows.values())),
    }


def _better(module: Any, a: float, b: float) -> bool:
    return a < b if module.BETTER == "lower" else a > b


def ratios(module: Any, rows: list[Row]) -> dict[str, Any]:
    """Each snake runner against the best peer: a speed ratio (> 1 means snake is faster)."""
    peers = [r for r in rows if not r.runner.startswith(("snake", "baseline")) and r.median is not None]
    if not peers:
        return {"best_peer": None, "speedup_vs_best_peer": {}}
    best = peers[0]
    for r in peers[1:]:
        if _better(module, r.median, best.median):  # type: ignore[arg-type]
            best = r
    out: dict[str, float] = {}
    for r in rows:
        if r.runner.startswith("snake") and r.median is not None:
            out[r.runner] = speedup(module, r.median, best.median)  # type: ignore[arg-type]
    return {"best_peer": best.runner, "speedup_vs_best_peer": out}


def speedup(module: Any, snake: float, peer: float) -> float:
    """How many times faster snake is than ``peer`` (> 1: faster)."""
    return peer / snake if module.BETTER == "lower" else snake / peer


def table(module: Any, rows: list[Row]) -> None:
    keys = sorted({k for r in rows for k in r.extras})
    best = ratios(module, rows)["best_peer"]
    best_value = next((r.median for r in rows if r.runner == best), None)
    width = max(len(r.runner) for r in rows) + 2
    head = f"{'runner':<{width}}{module.UNIT:>12}" + "".join(f"{k:>16}" for k in keys) + "   vs best peer"
    print(head)
    for r in sorted(
        rows, key=lambda r: (r.median is None, (r.median or 0) * (1 if module.BETTER == "lower" else -1))
    ):
        if r.median is None:
            print(f"{r.runner:<{width}}{'-':>12}   {r.note}")
            continue
        line = f"{r.runner:<{width}}{fmt(r.median):>12}" + "".join(f"{fmt(r.extra(k)):>16}" for k in keys)
        if best_value is not None:
            line += f"   {speedup(module, r.median, best_value):.2f}x" + (
                "  (best peer)" if r.runner == best else ""
            )
        print(line, flush=True)
    sys.stdout.flush()


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1e5:
        return f"{v:,.0f}"
    return f"{v:.4g}"
