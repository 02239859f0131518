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


def _tree_cpu() -> float:
    """CPU seconds of this process and of every live process descended from it (snake's
    launcher and its workers are grandchildren, which ``RUSAGE_CHILDREN`` never sees),
    plus the reaped children ``RUSAGE_CHILDREN`` counts."""
    import resource

    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        parent[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    mine, total = {os.getpid()}, 0.0
    changed = True
    while changed:
        changed = False
        for pid, ppid in parent.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                changed = True
    total = sum(cpu.get(pid, 0.0) for pid in mine)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return total + ru.ru_utime + ru.ru_stime


def cpu_snapshot() -> tuple[float, float, float] | None:
    """(CPU seconds used by the whole machine, by this process and its descendants, wall
    time), or None where /proc/stat is missing."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except OSError:
        return None
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    return busy, _tree_cpu(), time.perf_counter()


def other_cpu(a: tuple[float, float, float] | None, b: tuple[float, float, float] | None) -> float | None:
    """Cores used on average, between two snapshots, by processes other than this one and
    its descendants (another job on the machine)."""
    if a is None or b is None:
        return None
    return max(0.0, (b[0] - a[0]) - (b[1] - a[1])) / (b[2] - a[2])
