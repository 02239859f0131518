"""Programs started fresh: a new interpreter with nothing imported beforehand.

Each program runs as ``python FILE`` under ``fresh_runner.py``, which makes itself
a child subreaper: whatever the program started and left running after it exited
(a worker launcher whose main process is gone, a worker whose launcher is gone)
is re-parented to the runner, so it is seen and reported, never lost to init.

- Every example runs from an empty working directory, with an environment that
  holds nothing of this test process (no ``PYTHONPATH``, no ``SNAKE_*``, no
  pytest variables), and leaves no process behind. ``test_examples.py`` already
  runs each one from the repository root and checks its output; this runs them
  from elsewhere, in a clean environment, checks the same output, and the orphans.
- The Parquet-in-workers pattern (``from_parquet(read=False).par_map(...)``, whose
  workers import ``pyarrow.parquet`` themselves) runs 50 times in a row, each in a
  fresh interpreter: none may hang, each prints the right total, none leaves an
  orphan behind.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, TESTS

ROOT = REPO
EXAMPLES = ROOT / "examples"
RUNNER = TESTS / "fresh_runner.py"

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="needs /proc and PR_SET_CHILD_SUBREAPER"
)

#: Seconds an orphan may take to go once the program has exited (the launcher sees its
#: socket close, the kernel kills its workers).
ORPHAN_GRACE_S = 5.0


def clean_env() -> dict[str, str]:
    """The environment of a fresh shell: nothing that this test process set up."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "TERM")
    return {k: os.environ[k] for k in keep if k in os.environ}


class Run:
    def __init__(self, report: dict[str, Any], stdout: str, stderr: str, what: str) -> None:
        self.returncode: int = report["returncode"]
        self.timed_out: bool = report["timed_out"]
        self.orphans: list[dict[str, Any]] = report["orphans"]
        self.stdout = stdout
        self.stderr = stderr
        self.what = what

    def describe(self) -> str:
        orphans = "\n".join(
            f"  {o['pid']} {o['what']}{' (still there after the grace)' if o['after_grace'] else ''}"
            for o in self.orphans
        )
        return (
            f"{self.what}: exit status {self.returncode}{', timed out' if self.timed_out else ''}\n"
            f"--- processes left when it exited ---\n{orphans or '  none'}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )

    def check(self) -> None:
        """Exit status 0, in time, and nothing left running after the grace."""
        left = [o for o in self.orphans if o["after_grace"]]
        assert self.returncode == 0 and not self.timed_out and not left, self.describe()


def run_fresh(args: list[str], where: Path, timeout: float, what: str, grace: float = ORPHAN_GRACE_S) -> Run:
    """``python ARGS`` in a new interpreter, under fresh_runner.py (see the module docstring),
    in the empty directory ``where/cwd``."""
    cwd = where / "cwd"
    cwd.mkdir()
    out, err = where / "stdout", where / "stderr"
    command = [sys.executable, str(RUNNER), str(timeout), str(grace), str(out), str(err), "--"]
    # -X faulthandler: on a timeout the runner sends SIGABRT, and the stacks get printed.
    command += [sys.executable, "-X", "faulthandler", *args]
    proc = subprocess.run(
        command,
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout + grace + 30,
    )
    assert proc.returncode == 0, f"fresh_runner.py failed:\n{proc.stdout}\n{proc.stderr}"
    return Run(
        json.loads(proc.stdout), out.read_text(errors="replace"), err.read_text(errors="replace"), what
    )


def _boot_ticks() -> int:
    """Now, in the clock ticks since boot that /proc/PID/stat gives start times in."""
    with open("/proc/uptime") as f:
        return int(float(f.read().split()[0]) * os.sysconf("SC_CLK_TCK"))


def orphaned_snake_processes(since: int) -> list[str]:
    """Processes named snake-launcher or snake-worker, started since ``since`` (clock
    ticks since boot), whose parent is dead: re-parented to init (pid 1), or to a
    parent that is gone. (Those of the runs are re-parented to their runner instead,
    which reports them.)"""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if comm not in ("snake-launcher", "snake-worker") or int(fields[19]) < since or fields[0] == "Z":
            continue
        ppid = int(fields[1])
        try:
            with open(f"/proc/{ppid}/comm") as f:
                parent = f.read().strip()
        except OSError:
            parent = ""
        if ppid == 1 or not parent:
            found.append(f"{entry} {comm} (parent {ppid} {parent!r})")
    return found


# -- every example, from elsewhere -------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example_runs_fresh_from_anywhere_and_leaves_nothing(name: str, tmp_path: Path) -> None:
    from test_examples import ARGS, EXPECTED, NEEDS_TORCH

    if name in NEEDS_TORCH and importlib.util.find_spec("torch") is None:
        pytest.skip(f"examples/{name} needs torch, which is optional and not installed here")
    run = run_fresh([str(EXAMPLES / name), *ARGS.get(name, ())], tmp_path, 120, f"examples/{name}")
    run.check()
    for fragment in EXPECTED.get(name, ()):  # test_examples.py fails an example without an entry
        assert fragment in run.stdout, f"examples/{name} did not print {fragment!r}\n{run.describe()}"


# -- Parquet row groups read in workers, 50 fresh interpreters -----------------------------

PARQUET_RUNS = 50
PARQUET_TIMEOUT_S = 60.0
FILES, ROWS, ROW_GROUP = 8, 512, 64

#: The pattern as a user writes it: the script imports snake, never pyarrow.parquet;
#: the workers import it when they first read a row group.
PARQUET_SCRIPT = """\
import sys

import snake


def total(g):
    return sum(g.table().column("id").to_pylist())


if __name__ == "__main__":
    stream = snake.from_parquet(f"{sys.argv[1]}/*.parquet", read=False).par_map(total, workers=2)
    grand = 0
    for x in stream:
        grand += x
    print(grand, flush=True)
"""


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    data = tmp_path_factory.mktemp("parquet")
    for f in range(FILES):
        ids = pa.array(range(f * ROWS, (f + 1) * ROWS), pa.int64())
        pq.write_table(pa.table({"id": ids}), data / f"part-{f}.parquet", row_group_size=ROW_GROUP)
    return data


def test_parquet_row_groups_in_workers_never_hang(parquet_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "parquet_in_workers.py"
    script.write_text(PARQUET_SCRIPT)
    expected = str(sum(range(FILES * ROWS)))

    def one(i: int) -> Run:
        where = tmp_path / f"run-{i}"
        where.mkdir()
        return run_fresh(
            [str(script), str(parquet_dir)], where, PARQUET_TIMEOUT_S, f"run {i + 1} of {PARQUET_RUNS}"
        )

    since = _boot_ticks()
    # Two at a time: CI machines have two cores.
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(one, range(PARQUET_RUNS)))
    # The runner catches every orphan of its run; none escaped it either.
    escaped = orphaned_snake_processes(since)
    assert not escaped, f"snake processes whose parent is dead: {escaped}"
    failed = [r for r in runs if r.returncode != 0 or r.timed_out or r.stdout.strip() != expected]
    hung = [r for r in runs if r.timed_out]
    orphaned = [r for r in runs if any(o["after_grace"] for o in r.orphans)]
    assert not failed and not orphaned, (
        f"{len(hung)} of {PARQUET_RUNS} runs hung, {len(failed)} failed (expected {expected} printed), "
        f"{len(orphaned)} left processes behind; the first:\n{(failed or orphaned)[0].describe()}"
    )


# -- the runner sees what it is for --------------------------------------------------------

ORPHAN_SCRIPT = """\
import subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("left a child behind")
"""
HANG_SCRIPT = """\
import time
def stuck_here():
    time.sleep(60)
stuck_here()
"""


def test_the_runner_reports_an_orphan_and_a_hang_with_its_stack(tmp_path: Path) -> None:
    (tmp_path / "orphan.py").write_text(ORPHAN_SCRIPT)
    (tmp_path / "hang.py").write_text(HANG_SCRIPT)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    orphan = run_fresh([str(tmp_path / "orphan.py")], tmp_path / "a", 30, "orphan.py", grace=0.5)
    assert orphan.returncode == 0 and not orphan.timed_out
    assert [o["after_grace"] for o in orphan.orphans] == [True], orphan.describe()
    assert "time.sleep(60)" in orphan.orphans[0]["what"]
    with pytest.raises(AssertionError, match="still there after the grace"):
        orphan.check()
    hang = run_fresh([str(tmp_path / "hang.py")], tmp_path / "b", 1, "hang.py")
    assert hang.timed_out and hang.returncode == -6, hang.describe()
    assert "stuck_here" in hang.stderr, hang.describe()


# -- a script that reads its arguments at import --------------------------------------------

ARGV_SCRIPT = """\
import sys

import snake

SCALE = int(sys.argv[1])  # read at import, as argparse at module level does


def scale(x):
    return x * SCALE


if __name__ == "__main__":
    print(sum(snake.from_iterable(range(10)).par_map(scale, workers=2, worker_type=sys.argv[2])))
"""


@pytest.mark.parametrize("worker_type", ["auto", "spawn"])
def test_workers_see_the_arguments_the_script_was_given(worker_type: str, tmp_path: Path) -> None:
    script = tmp_path / "reads_argv.py"
    script.write_text(ARGV_SCRIPT)
    run = run_fresh([str(script), "3", worker_type], tmp_path, 60, f"reads_argv.py ({worker_type})")
    run.check()
    assert run.stdout.strip() == str(3 * sum(range(10))), run.describe()
