"""snake and the loaders users would pick instead, side by side, in the same run.

    bash bench/peers/setup.sh                       # once: .venv-bench with the peers
    .venv-bench/bin/python bench/peers/run.py       # every workload, medians of 3 rounds
    .venv-bench/bin/python bench/peers/run.py seed arrays --repeats 5
    python bench/peers/run.py --quick               # small; peers not installed are listed

Each workload (a module in this folder) runs all its runners interleaved, round after
round, and prints a table: the median figure of each runner and how many times faster
snake is than each (> 1: snake is faster). The JSON record goes to
``bench/results/peers.json`` (or ``--json``). Peers that are not installed show as
"not installed"; snake's own rows always run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Only this folder: bench/ray.py would hide the ray package.
sys.path.insert(0, str(HERE))
# The driver is imported in main(): snake's launcher imports this module (the main
# module) before it forks workers, and a user's script would not carry a benchmark
# driver's imports.

#: The workloads, in the order they run.
WORKLOADS = ["seed", "maps", "async_maps", "arrays", "batching", "images"]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    """The installed version of snake and of each peer (read without importing them)."""
    from importlib import metadata

    out = {}
    for name, dist in [
        ("snake", "snake"),
        ("trio", "trio"),
        ("numpy", "numpy"),
        ("torch", "torch"),
        ("squirrel", "squirrel-core"),
        ("tinypl", "tinypl"),
        ("spdl", "spdl"),
        ("aiostream", "aiostream"),
        ("ray", "ray"),
        ("datasets", "datasets"),
        ("pyarrow", "pyarrow"),
    ]:
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def main(argv: list[str] | None = None) -> int:
    import _driver

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help=f"workloads to run (default: all): {', '.join(WORKLOADS)}")
    p.add_argument("--quick", action="store_true", help="small, fast runs (as the tests use)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 3; 1 with --quick)")
    p.add_argument("--json", default=None, help="where to write results (default bench/results/peers.json)")
    args = p.parse_args(argv)
    names = args.names or WORKLOADS
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown:
        p.error(f"no workload {unknown}; there are: {', '.join(WORKLOADS)}")
    repeats = args.repeats or (1 if args.quick else 3)
    cpus = len(os.sched_getaffinity(0))
    print(f"{cpu_model()}, {cpus} CPUs, Python {platform.python_version()}")
    vers = versions()
    print("  ".join(f"{k} {v}" for k, v in vers.items()))
    record: dict[str, object] = {
        "machine": {"cpu": cpu_model(), "cpus": cpus, "python": platform.python_version()},
        "versions": vers,
        "repeats": repeats,
        "quick": args.quick,
        "workloads": {},
    }
    t0 = time.perf_counter()
    for name in names:
        module = importlib.import_module(name)
        parts = getattr(module, "WORKLOADS", None) or [module]
        for i, part in enumerate(parts):
            key = name if len(parts) == 1 else f"{name}.{getattr(part, 'KEY', i)}"
            record["workloads"][key] = _driver.run_workload(part, args.quick, repeats)  # type: ignore[index]
    path = args.json or str(HERE.parent / "results" / "peers.json")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    print(f"\n{time.perf_counter() - t0:.0f} s; results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
