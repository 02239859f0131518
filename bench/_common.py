"""Shared by the benchmarks: argument parsing, timing, and the JSON results file."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a small, fast run (used by the tests)")
    p.add_argument("--json", default=None, help="where to write results (default bench/results/NAME.json)")
    return p


def best_of(repeats: int, fn: Callable[[], Any]) -> float:
    """The shortest of ``repeats`` timings of ``fn()``, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def machine() -> dict[str, Any]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": cpus}


def write(name: str, results: dict[str, Any], path: str | None) -> None:
    path = path or os.path.join(RESULTS_DIR, f"{name}.json")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump({"bench": name, "machine": machine(), "results": results}, f, indent=2)
    print(f"results written to {path}")


def check(label: str, value: float, floor: str, ok: bool) -> str:
    line = f"{label}: {value:.3g} (floor {floor}) {'OK' if ok else 'BELOW FLOOR'}"
    print(line)
    return line
