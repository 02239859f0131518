"""``snake demo --dataset``: the end-to-end dataset pipeline the README's first command runs,
and the README's two commands staying true to pyproject.toml and .ci/run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import trio
from conftest import REPO

from snake import WorkerPool
from snake._cli.dataset import FEATURES, decode_group, run_dataset_demo, write_dataset

ROOT = REPO


def snake_cmd(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snake", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout
    )


def test_demo_dataset_trains_and_checks_itself(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = snake_cmd("demo", "--dataset", "--rows", "1000", "--epochs", "2", "--data", str(data))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(
        r"^dataset:\s+8 Parquet shards, 1,000 rows of 64x64 PNG images, [\d.]+ MB, in ", out, re.MULTILINE
    ), out
    assert (
        ".par_map(partial(decode_group, seed=0), workers=2, pool=<WorkerPool>).flat_map(unstack).shuffle(1024, seed=0)"
        in out
    )
    epochs = re.findall(
        r"^epoch (\d):\s+1,000 rows, each once; mean loss ([\d.]+); first ids ([\d ]+)$", out, re.MULTILINE
    )
    assert [e[0] for e in epochs] == ["0", "1"], out
    assert epochs[0][2] != epochs[1][2], "every epoch should come in a new order"
    loss = re.search(r"^loss:\s+([\d.]+) -> ([\d.]+) ", out, re.MULTILINE)
    assert loss is not None and float(loss[2]) < float(loss[1]), out
    for field in ("pipeline", "sequential"):
        assert re.search(rf"^{field}:\s+\d+\.\d+ s, [\d,]+ rows/s", out, re.MULTILINE), out
    assert re.search(r"^speed-up:\s+\d+\.\d+x$", out, re.MULTILINE), out

    # --data keeps the dataset: real Parquet shards with PNG bytes, ids 0..999 once each
    files = sorted(data.glob("*.parquet"))
    assert len(files) == 8
    tables = [pq.read_table(f) for f in files]
    assert set(tables[0].column_names) == {"id", "image", "caption", "label"}
    ids = np.concatenate([t.column("id").to_numpy() for t in tables])
    assert np.array_equal(np.sort(ids), np.arange(1000))
    assert tables[0].column("image")[0].as_py().startswith(b"\x89PNG\r\n\x1a\n")

    # a directory that already holds shards is refused, not mixed into
    again = snake_cmd("demo", "--dataset", "--rows", "10", "--data", str(data))
    assert again.returncode == 2
    assert f"--data {str(data)!r} already holds .parquet files" in again.stderr
    assert len(list(data.glob("*.parquet"))) == 8


def test_demo_dataset_without_the_data_extra() -> None:
    code = (
        "import sys; sys.modules['pyarrow'] = None; sys.modules['PIL'] = None\n"
        "from snake.__main__ import main; sys.exit(main(['demo', '--dataset']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "pip install 'snake[data]'" in proc.stderr
    assert "missing: pyarrow, Pillow" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "--items", "5"], "--items is for the seed demo; it does not go with --dataset"),
        (["--dataset", "--backend", "thread"], "--backend is for the seed demo"),
        (["--rows", "5"], "--rows goes with --dataset"),
        (["--epochs", "2"], "--epochs goes with --dataset"),
        (["--dataset", "--rows", "0"], "0 must be >= 1"),
    ],
)
def test_demo_flags_that_do_not_go_together(args: list[str], message: str) -> None:
    proc = snake_cmd("demo", *args, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_demo_dataset_is_deterministic_across_worker_counts(tmp_path: Path) -> None:
    """The same seed gives the same batches, so the same losses to the last bit, with one
    worker or two: augmentation is keyed by (seed, epoch, id), not by who decodes."""
    paths = write_dataset(str(tmp_path), 300)
    with WorkerPool(1) as pool:
        one = trio.run(lambda: run_dataset_demo(paths, rows=300, epochs=2, pool=pool))
    with WorkerPool(2) as pool:
        two = trio.run(lambda: run_dataset_demo(paths, rows=300, epochs=2, pool=pool))
    assert one.epochs == two.epochs
    assert all(e.exactly_once and e.rows == 300 for e in one.epochs)
    assert one.epochs[0].first_ids != one.epochs[1].first_ids


def test_decode_group_changes_with_the_epoch_only(tmp_path: Path) -> None:
    import snake

    paths = write_dataset(str(tmp_path), 64, files=1)
    (group,) = list(snake.from_parquet(paths, columns=["id", "image", "label"], read=False))
    x0, y0, ids0 = decode_group((0, group))
    x0b, _, _ = decode_group((0, group))
    x1, y1, ids1 = decode_group((1, group))
    assert x0.shape == (64, FEATURES) and x0.dtype == np.float32
    assert np.array_equal(x0, x0b)
    assert not np.array_equal(x0, x1)  # a new crop and flip every epoch
    assert np.array_equal(y0, y1) and np.array_equal(ids0, np.arange(64)) and np.array_equal(ids0, ids1)


def _readme_commands() -> tuple[str, str]:
    block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.DOTALL)
    assert block is not None, "README.md should start with a ```sh block of the two commands"
    lines = [line for line in block[1].splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) == 2, lines
    return lines[0], lines[1]


def test_readme_commands_match_pyproject_and_ci() -> None:
    demo, tests = _readme_commands()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    # the demo command installs the extra that has what `snake demo --dataset` imports
    m = re.search(r"pip install '\.\[(\w+)\]'", demo)
    assert m is not None and m[1] in extras, demo
    names = {re.split(r"[<>=\[ ]", req)[0].lower() for req in extras[m[1]]}
    assert {"pyarrow", "pillow"} <= names
    assert "snake demo --dataset" in demo and "snake demo &&" in demo
    # CI runs exactly the README's test command
    assert tests in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert "pip install '.[test]'" in tests
    # the test extra never pulls torch (a multi-GB CUDA build from PyPI)
    assert not any(re.split(r"[<>=\[ ]", req)[0].lower() == "torch" for req in extras["test"])


def test_demo_dataset_ctrl_c_stops_cleanly(tmp_path: Path) -> None:
    """Ctrl-C while training: exit 130 with one line, no worker process left, and the
    temporary dataset removed."""
    import signal

    import psutil

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    # a shell's background jobs (CI's, say) start with SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler; a user's terminal has one
    code = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv = ['snake', 'demo', '--dataset', '--rows', '4000', '--epochs', '1000']; "
        "runpy.run_module('snake', run_name='__main__')"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("epoch 0:"):
                break
        else:
            pytest.fail(f"the demo ended before its first epoch: {proc.stderr.read() if proc.stderr else ''}")
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert workers, "par_map(workers=2) should have worker processes while it trains"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    alive = [w.pid for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    left = [p.name for p in tmp_path.iterdir()]
    state = f"exit code {proc.returncode}; workers alive {alive}; left in TMPDIR {left}; stderr:\n{err}"
    assert proc.returncode == 130, state
    assert err.strip() == "snake demo: interrupted", state
    assert not alive, state
    assert left == [], state
