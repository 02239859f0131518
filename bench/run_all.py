"""Run the benchmarks (``bench/*.py``, or the named ones) and print each one's ratio lines.

    python bench/run_all.py                    # every benchmark, full size
    python bench/run_all.py --quick overhead   # one, small (as the tests run it)
    tox -e bench                               # the same as the first line

Each benchmark runs as its own process from the repository root; its ratio lines
(the ones that end ``OK`` or ``BELOW FLOOR``) are printed under its name, and its JSON
results go to ``bench/results/`` (or ``--json-dir``). Exits 1 if a benchmark failed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
_RATIO = re.compile(r"\(floor .*\) (OK|BELOW FLOOR)$")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help="benchmarks to run (default: all), e.g. overhead seed")
    p.add_argument("--quick", action="store_true", help="small, fast runs (as the tests use)")
    p.add_argument("--json-dir", default=None, help="write each JSON result here instead of bench/results/")
    args = p.parse_args(argv)
    scripts = sorted(s for s in BENCH.glob("*.py") if not s.name.startswith("_") and s.name != "run_all.py")
    if args.names:
        wanted = {n.removesuffix(".py") for n in args.names}
        unknown = wanted - {s.stem for s in scripts}
        if unknown:
            p.error(f"no benchmark {sorted(unknown)}; there are: {', '.join(s.stem for s in scripts)}")
        scripts = [s for s in scripts if s.stem in wanted]
    failed = 0
    for script in scripts:
        cmd = [sys.executable, str(script)]
        if args.quick:
            cmd.append("--quick")
        if args.json_dir:
            cmd += ["--json", os.path.join(args.json_dir, f"{script.stem}.json")]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=BENCH.parent)
        status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
        print(f"{script.stem} ({time.perf_counter() - t0:.1f} s, {status})", flush=True)
        for line in proc.stdout.splitlines():
            if _RATIO.search(line):
                print(f"  {line}")
        if proc.returncode != 0:
            failed += 1
            sys.stderr.write(proc.stderr[-4000:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
