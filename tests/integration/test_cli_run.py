"""``snake run`` as a subprocess: exit codes and output shape."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import REPO

ROOT = str(REPO)
PIPELINES = os.path.join("tests", "cli_pipelines.py")


def snake_cmd(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snake", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout
    )


def test_run_a_stream_prints_progress_and_the_report() -> None:
    proc = snake_cmd("run", f"{PIPELINES}:stream")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("snake run: from_iterable(<range len=50>).par_then(nap, limit=4).map(str).progress(")
    assert re.search(r"^items: 50 in \d+\.\d\d s$", out, re.MULTILINE), out
    assert re.search(r"^snake report: 50 items in ", out, re.MULTILINE), out
    assert re.search(r"^bottleneck: ", out, re.MULTILINE), out
    assert "50/50" in proc.stderr  # the tqdm bar


def test_run_a_function_returning_a_stream_by_module_name() -> None:
    env_cwd = os.path.join(ROOT, "tests")
    proc = subprocess.run(
        [sys.executable, "-m", "snake", "run", "--no-progress", "cli_pipelines:make"],
        capture_output=True,
        text=True,
        cwd=env_cwd,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "items: 20 in" in proc.stdout
    assert proc.stderr == ""


def test_an_error_in_user_code_prints_the_users_traceback_and_exits_1() -> None:
    proc = snake_cmd("run", "--no-progress", f"{PIPELINES}:failing")
    assert proc.returncode == 1
    err = proc.stderr
    assert "ValueError: bad item 7" in err
    assert 'cli_pipelines.py", line' in err and "user_function_that_fails" in err
    assert "snake: raised in stage #1 map(user_function_that_fails) on item index 7" in err
    # the user's frames only: none of snake's or trio's
    assert "/snake/_" not in err and "/trio/" not in err, err


def test_bad_targets_exit_2_with_a_message() -> None:
    for target, message in [
        (f"{PIPELINES}:not_a_stream", "is 'int', not a snake.Stream"),
        (f"{PIPELINES}:missing", "has no attribute 'missing'"),
        ("no_such_module_xyz:stream", "cannot import module 'no_such_module_xyz'"),
        ("nocolon", "must look like module:attr"),
    ]:
        proc = snake_cmd("run", target)
        assert proc.returncode == 2, (target, proc.returncode, proc.stderr)
        assert message in proc.stderr, (target, proc.stderr)


def test_help_of_each_command() -> None:
    for command, words in [("run", "module:attr"), ("demo", "--workers")]:
        proc = snake_cmd(command, "--help")
        assert proc.returncode == 0
        assert words in proc.stdout, proc.stdout
    proc = snake_cmd("--help")
    assert all(c in proc.stdout for c in ("demo", "run"))
    assert "bench" not in proc.stdout  # benchmarks run from a checkout: bench/run_all.py
