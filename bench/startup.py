"""Worker start-up of a process par_map stage: time to the first item, cold and warm.

The pipeline: from_iterable(range(8)).par_map(operator.neg, workers=2), iterated with
``for x in stream``.

cold: a fresh interpreter each run (``sys.executable -c CODE``), timed by this process
from just before the launch to the moment the child's first item line arrives on its
stdout. The child also reports, on its own clock from the top of CODE, when
``import snake`` was done and when the first item came; "interpreter start" is the
launch-to-first-item time less the child's own top-of-CODE-to-first-item time. A bare
``python -c "print(0)"`` is timed the same way, for scale. One run first is discarded
(bytecode and page caches).

warm: in this process, the pipeline is run once, then each run times a new
``open_sync()`` of it: to the first item, and to the end of the ``with`` block (the
workers shut down). The interpreter and its imports are warm; the workers are not
(each opening starts its own).

    python bench/startup.py                      # 5 runs of each
    python bench/startup.py --runs 20 --worker-type spawn
    python bench/startup.py --quick              # 2 runs of each
"""

from __future__ import annotations

import json
import operator
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from _common import parser, write

import snake

ITEMS = 8
WORKERS = 2
EXPECTED = [-i for i in range(ITEMS)]

# Runs in the child. {kwargs} is the par_map keyword arguments beyond workers=.
CHILD = """\
import time
_t_top = time.perf_counter()
import operator, json, sys
import snake
_t_import = time.perf_counter()
stream = snake.from_iterable(range({items})).par_map(operator.neg, workers={workers}{kwargs})
_first = None
_out = []
for x in stream:
    if _first is None:
        _first = time.perf_counter()
        print("first", x, flush=True)
    _out.append(x)
_t_end = time.perf_counter()
print(json.dumps({{"import_s": _t_import - _t_top, "first_s": _first - _t_top,
                  "end_s": _t_end - _t_top, "items": _out, "snake": snake.__file__}}), flush=True)
"""

BARE = 'print("first", 0, flush=True)'


def launch(code: str, timeout: float) -> dict[str, Any]:
    """Runs ``sys.executable -c code``: the parent's launch-to-first-line and launch-to-exit
    times, and the child's own report (its last stdout line, when JSON)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        t_first = time.perf_counter() - t0
        out, err = proc.communicate(timeout=timeout)
        t_exit = time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise SystemExit(f"startup: the child ran past {timeout} s (a hang?)") from None
    if proc.returncode != 0 or not line.startswith("first "):
        raise SystemExit(f"startup: the child failed (exit {proc.returncode}):\n{line}{out}{err}")
    report: dict[str, Any] = {}
    lines = out.strip().splitlines()
    if lines and lines[-1].startswith("{"):
        report = json.loads(lines[-1])
    return {"launch_to_first_s": t_first, "launch_to_exit_s": t_exit, **report}


def stats(values: list[float]) -> dict[str, float]:
    return {"min_s": min(values), "median_s": statistics.median(values), "max_s": max(values)}


def row(label: str, values: list[float]) -> str:
    return (
        f"  {label:<48} {min(values) * 1e3:8.1f} {statistics.median(values) * 1e3:8.1f} "
        f"{max(values) * 1e3:8.1f}"
    )


def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument(
        "--runs", type=int, default=None, help="runs of each measurement (default 5; 2 with --quick)"
    )
    p.add_argument(
        "--worker-type",
        default=None,
        help="passed to par_map as worker_type= (default: left out, the library's default)",
    )
    args = p.parse_args()
    runs = args.runs if args.runs is not None else (2 if args.quick else 5)
    if runs < 1:
        p.error("--runs must be >= 1")
    par_kwargs: dict[str, Any] = {}
    kwargs_src = ""
    if args.worker_type is not None:
        par_kwargs["worker_type"] = args.worker_type
        kwargs_src = f", worker_type={args.worker_type!r}"
    child = CHILD.format(items=ITEMS, workers=WORKERS, kwargs=kwargs_src)
    timeout = 60.0

    # -- cold: a fresh interpreter each run ---------------------------------------------------
    discarded = launch(child, timeout)
    cold = [launch(child, timeout) for _ in range(runs)]
    for r in [discarded, *cold]:
        if r.get("items") != EXPECTED:
            raise SystemExit(f"startup: the child's items {r.get('items')!r} != {EXPECTED!r}")
        if os.path.realpath(r["snake"]) != os.path.realpath(snake.__file__):
            raise SystemExit(f"startup: the child imported {r['snake']}, not {snake.__file__}")
    bare = [launch(BARE, timeout) for _ in range(runs)]

    cold_first = [r["launch_to_first_s"] for r in cold]
    cold_interp = [r["launch_to_first_s"] - r["first_s"] for r in cold]
    cold_import = [r["import_s"] for r in cold]
    cold_pipe = [r["first_s"] - r["import_s"] for r in cold]
    cold_end = [r["end_s"] - r["first_s"] for r in cold]
    cold_exit = [r["launch_to_exit_s"] for r in cold]
    bare_first = [r["launch_to_first_s"] for r in bare]

    # -- warm: this process, a new open_sync() of the same pipeline each run -----------------
    stream = snake.from_iterable(range(ITEMS)).par_map(operator.neg, workers=WORKERS, **par_kwargs)

    def once() -> tuple[float, float]:
        t0 = time.perf_counter()
        first = 0.0
        out = []
        with stream.open_sync() as items:
            for x in items:
                if not out:
                    first = time.perf_counter() - t0
                out.append(x)
        closed = time.perf_counter() - t0
        assert out == EXPECTED, out
        return first, closed

    once()  # the first opening in this process: imports of the run path, first workers
    warm = [once() for _ in range(runs)]
    warm_first = [w[0] for w in warm]
    warm_closed = [w[1] - w[0] for w in warm]

    wt = args.worker_type or "default"
    print(f"{stream!r}  (worker_type: {wt}; {runs} runs; snake from {os.path.dirname(snake.__file__)})")
    print(f"  {'ms':<48} {'min':>8} {'median':>8} {'max':>8}")
    print("cold (fresh interpreter):")
    print(row("launch -> first item", cold_first))
    print(row("  interpreter start (launch -> top of -c)", cold_interp))
    print(row("  import snake (child's clock)", cold_import))
    print(row("  pipeline open -> first item (child's clock)", cold_pipe))
    print(row("first item -> loop done, closed (child's clock)", cold_end))
    print(row("launch -> exit", cold_exit))
    print(row("bare python -c (launch -> print)", bare_first))
    print(
        f"  (discarded first run: launch -> first item {discarded['launch_to_first_s'] * 1e3:.1f} ms, "
        f"import snake {discarded['import_s'] * 1e3:.1f} ms)"
    )
    print("warm (same process, new open_sync() each run):")
    print(row("open_sync() -> first item", warm_first))
    print(row("first item -> end of with block (closing)", warm_closed))

    results = {
        "items": ITEMS,
        "workers": WORKERS,
        "worker_type": args.worker_type,
        "runs": runs,
        "snake": snake.__file__,
        "cold_launch_to_first": stats(cold_first),
        "cold_interpreter_start": stats(cold_interp),
        "cold_import_snake": stats(cold_import),
        "cold_open_to_first": stats(cold_pipe),
        "cold_first_to_last": stats(cold_end),
        "cold_launch_to_exit": stats(cold_exit),
        "bare_python_launch_to_print": stats(bare_first),
        "cold_discarded_first_run_s": discarded["launch_to_first_s"],
        "warm_open_to_first": stats(warm_first),
        "warm_first_to_closed": stats(warm_closed),
        "cold_launch_to_first_s": cold_first,
        "warm_open_to_first_s": warm_first,
    }
    write("startup", results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
