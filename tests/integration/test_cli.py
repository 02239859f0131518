"""The snake command and the benchmarks run (how fast is for bench/, not for tests)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

ROOT = str(REPO)


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout
    )


@pytest.mark.parametrize("backend", ["process", "thread", "ray"])
def test_demo_runs_and_reports(backend: str) -> None:
    proc = run("-m", "snake", "demo", "--backend", backend)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    if backend == "ray":  # a local Ray cluster, started before the pipeline is timed
        assert re.search(r"^ray:\s+started a local cluster in \d+\.\d s, \d+ CPUs", out, re.MULTILINE), out
    assert "from_iterable(<range len=100>).par_then(slow_read, limit=16).par_map(" in out
    assert re.search(r"^items:\s+100$", out, re.MULTILINE)
    # sum of fib(20 + i % 10) over i < 100: the same whichever backend computed it
    assert re.search(r"^checksum:\s+13353230$", out, re.MULTILINE)
    for field in ("pipeline", "sequential"):
        assert re.search(rf"^{field}:\s+\d+\.\d+ s$", out, re.MULTILINE), out
    assert re.search(r"^speed-up:\s+\d+\.\d+x$", out, re.MULTILINE)


def test_help_and_bad_arguments() -> None:
    proc = run("-m", "snake", "--help")
    assert proc.returncode == 0 and "demo" in proc.stdout
    proc = run("-m", "snake", "demo", "--items", "0")
    assert proc.returncode == 2 and "0 must be >= 1" in proc.stderr


@pytest.mark.parametrize(
    "script",
    [
        "overhead.py",
        "seed.py",
        "arrays.py",
        "small_items.py",
        "collate.py",
        "parquet.py",
        "ray.py",
        "pack.py",
        "autotune.py",
    ],
)
def test_benchmark_runs(script: str, tmp_path: object) -> None:
    out_json = os.path.join(str(tmp_path), "r.json")
    proc = run(os.path.join("bench", script), "--quick", "--json", out_json)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out_json) as f:
        data = json.load(f)
    assert data["machine"]["cpus"] >= 1
    assert data["results"], data


def test_the_peers_benchmark_runs_every_workload(tmp_path: object) -> None:
    # The peers are not in the test extra: their rows say "not installed" (Ray Data and
    # Hugging Face datasets are, and run); snake's rows run and none fails.
    out_json = os.path.join(str(tmp_path), "peers.json")
    proc = run(os.path.join("bench", "peers", "run.py"), "--quick", "--json", out_json)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out_json) as f:
        data = json.load(f)
    workloads = data["workloads"]
    assert {k.split(".")[0] for k in workloads} == {"seed", "maps", "async_maps", "arrays", "batching", "images"}
    for name, w in workloads.items():
        runners = w["runners"]
        snake_rows = [r for r in runners if r.startswith("snake")]
        assert snake_rows and all(runners[r]["median"] for r in snake_rows), (name, runners)
        assert not any(r["note"].startswith("failed") for r in runners.values()), (name, runners)
        assert all(r["median"] or r["note"].startswith("not installed") for r in runners.values()), (name, runners)


def test_run_all_runs_the_named_benchmarks_and_prints_their_ratio_lines(tmp_path: object) -> None:
    proc = run(os.path.join("bench", "run_all.py"), "--quick", "--json-dir", str(tmp_path), "overhead")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert re.match(r"^overhead \(\d+\.\d s, ok\)$", lines[0]), lines
    assert any(re.match(r"^  .*\(floor .*\) (OK|BELOW FLOOR)$", ln) for ln in lines[1:]), lines
    assert os.path.exists(os.path.join(str(tmp_path), "overhead.json"))
    proc = run(os.path.join("bench", "run_all.py"), "nonesuch")
    assert proc.returncode == 2 and "no benchmark ['nonesuch']" in proc.stderr
