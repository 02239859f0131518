"""The examples run, and the docs show them exactly as they are.

Every ``examples/*.py`` runs as a script (its own process, from the repository
root) and must exit 0 and print its expected fragment. An example without an
entry in ``EXPECTED`` fails, so a new example cannot go untested.

Every ```` ```python ```` block in README.md or docs/*.md must be preceded by the
line ``<!-- example: examples/NAME.py -->`` and be that file, character for
character (trailing whitespace aside): a program shown in the docs is one that runs.
Output and fragments are shown as ```` ```text ````, never as unchecked Python.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from conftest import REPO

ROOT = REPO
EXAMPLES = ROOT / "examples"

#: Fragments of each example's stdout that show it did its job.
EXPECTED: dict[str, tuple[str, ...]] = {
    # fib(20), fib(21), fib(22): the first three items, in input order.
    "seed.py": ("6765\n10946\n17711\n",),
    "sliding.py": ("[(0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 6)]\n[(0, 1), (3, 4)]\n[]\n", "[4.5, 6.25, 7.25]"),
    "pipe_stage.py": (
        "[[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15, 16]]\n[3, 1, 2, 4]\n",
        "[2500.0, 2500.5] state: ['n', 'total'] taken at input <= 5000: True\nresumed: 2501.0 2501.5\n",
    ),
    "sync_loop.py": ("trained on 128 batches of shape (32, 64)",),
    "report.py": ("snake report: 50 items in ", "bottleneck: #2 par_map(decode, workers=2): workers busy"),
    "errors.py": (
        "caught ValueError: invalid literal for int() with base 10: 'forty'",
        "  note: snake: raised in stage #1 map(parse) on item index 3",
        "caught ValueError again; first note: snake: raised in stage #1 map(parse) on item index 3",
    ),
    "cancel.py": (
        "break: stopped after 5 items: [0, 1, 4, 9, 16], in 0.",
        "deadline: cancelled=True",
        # item 7 sleeps 60 s in its worker: the deadline killed that worker
        "the worker stuck on item 7 still runs: False",
        "sync break: stopped at 16, in 0.",
    ),
    # A user's pytest file for snake.testing: run as a script, it runs pytest on itself.
    "test_user_pipeline.py": ("8 passed",),
    "failures.py": (
        ("WorkerCrashedError: a worker process of stage #1 par_map(decode, workers=2) "
        "died while running item index 3 (it left no Python error: os._exit, a kill signal, "
        "or the out-of-memory killer)\n"),
        "196 of 200 records decoded; missing [3, 120, 150, 180]",
        # record 3 crashed its worker on both attempts (retries=1), then was skipped with the 3 corrupt ones
        "on_error('skip', max_errors=5): in=200 out=196 skipped=4 ",
        " workers_lost=2\n",
    ),
    "worker_pool.py": (
        "pool=<WorkerPool>)\n",
        "same workers in every epoch: True",
        "between epochs: WorkerPoolStatistics(idle_workers=2, running_workers=0)",
        "after the block: WorkerPoolStatistics(idle_workers=0, running_workers=0)",
        "the pool's workers still run: False",
    ),
    "checkpoint.py": (
        "first run: killed by signal 9 at step 35",
        "checkpoint: step 30",
        "second run: resumed, ended at step 100",
        "every example exactly once: True",
        "the same model as an uninterrupted run: True",
    ),
    "image_dataset.py": (
        "epoch 2: mean loss ",
        "96 steps; loss went down: True",
    ),
    "mixing.py": (
        "drop:    10300 items, 3% books",
        "stop:    926 items, 32% books",
        "restart: 5000 items, 30% books",
        "books came round in a new order: True",
        "weights=curriculum, seed=0, on_exhausted='stop')",
        "epoch 0: weights [0.9, 0.1], 10% books",
        "epoch 2: weights [0.5, 0.5], 45% books",
        "resumed exactly: True",
    ),
    "parquet_workers.py": (
        "row groups to read: 32 of 40",
        "6400 training rows in 2 epochs",
        "brightness grows with the label: True",
    ),
    "first_stream.py": (
        "from_iterable(<range len=100>).map(str).batch(10)\n",
        "['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']\n",
        "['90', '91', '92', '93', '94', '95', '96', '97', '98', '99']\n",
    ),
    "descriptions.py": (
        "from_iterable(<range len=5>).map(<lambda>)\n[0, 1, 4, 9, 16]\n[0, 1, 4, 9, 16]\n",
        "[0, 1, 4]\n[]\n",
        "ValueError: batch: size=0 must be >= 1\n",
    ),
    "async_source.py": (
        "['LINE 0', 'LINE 1', 'LINE 2']\n['LINE 0', 'LINE 1', 'LINE 2']\n",
        "TypeError: from_async_iterable: not_async() returned 'list', not an async iterable\n",
    ),
    "inline_stages.py": (
        "[0, 9, 36, 81]\n[[2, 3], [4, 5], [6]]\n[array([2, 3]), array([4, 5])]\n",
        "[1, 2, 2, 4, 5, 5]\n[(0, 7), (1, 8), (2, 9)]\n",
    ),
    "partial_args.py": (
        "from_iterable(<list len=3>).par_then(partial(fetch, timeout=5), limit=8)\n",
        "<page of https://example.com/0>\n<page of https://example.com/1>\n<page of https://example.com/2>\n",
    ),
    "thread_backend.py": (
        "from_iterable(<range len=8>).par_map(fib, workers=2, backend='thread')\n",
        "[75025, 121393, 196418, 317811, 514229, 832040, 1346269, 2178309]\n",
    ),
    # the unordered run yields in completion order: sleeps of 0.3, 0.2, 0.1 and 0 s
    "ordering.py": ("[0, 1, 2, 3]\n[3, 2, 1, 0]\n",),
    "prefetch.py": ("100 files, 40345 bytes\n",),
    # request 3 timed out and was skipped, so source item 7 is item index 6 of par_map
    "timeouts.py": (
        (
            "TimeoutError: stage #2 par_map(decode, workers=2, retries=1, timeout=1.0): item index 6 "
            "took longer than timeout=1.0s (2 attempts); its worker process was killed\n"
        ),
    ),
    # item 5 runs 3 s with stall_timeout=1: the example logs to stdout
    "stall.py": (
        (
            "WARNING snake: snake: stage #1 par_map(work, workers=2, stall_timeout=1.0) has made no "
            "progress for "
        ),
        ": item index 5 has been running for ",
        "Busy process workers:\nitem index 5 (running ",
        "stall.py\", line 12 in work\n",
        "20 items; stall warnings: ",
    ),
    "statistics.py": ("#1 par_map(decode, workers=2).on_error('skip')\n200 196 4\n",),
    "no_leaks.py": (
        "sync: [0, 2, 4, 6, 8]\ntrio: [0, 2, 4, 6, 8]\n",
        (
            "snake.testing.assert_no_leaks: 1 thing(s) started in the block outlived it "
            "(checked for 0.5 s after):\n  - thread 'left-behind' (daemon=True)\n"
        ),
    ),
    "batching.py": (
        "(32, 3, 8, 8) uint8 [0 1 2 3] ['example 0', 'example 1']",
        "(4, 3, 8, 8) uint8 [6 7 8 9] ['example 96', 'example 97']",
        "[[1, 2, 3, -1, -1, -1, -1, -1], [1, 2, 3, 4, 5, -1, -1, -1]] [3, 5]",
        "[(2, 3), (2, 7), (2, 3), (2, 7)]",
    ),
    "packing.py": (
        "(8, 16) int32",
        "segments: [1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3]",
        "positions: [0, 1, 2, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4]",
        "3 batches; padding 8.0%",
    ),
}

EXPECTED["ray_scaling.py"] = (
    "par_map(decode, workers=2, backend='ray', ray_options={'num_cpus': 1}).batch(32)\n",
    "8 batches of (32, 3, 64, 64) uint8; in order: True\n",
    # item 5 killed its actor once; retries=1 ran it again on a fresh one
    "all 20 items, in order: True; workers_lost=1 retries=1\n",
    "2 actors; the same in every epoch: True\n",
    "between epochs: WorkerPoolStatistics(idle_workers=2, running_workers=0)\n",
    "after the block: WorkerPoolStatistics(idle_workers=0, running_workers=0)\n",
)
EXPECTED["ray_train_ranks.py"] = (
    "rank 0: 1000 items over 2 epochs\n",
    "rank 1: 1000 items over 2 epochs\n",
    "every item exactly once per epoch: True\n",
)

#: Examples that import torch, an optional dependency that the test extra leaves out
#: (PyPI's default torch is a multi-GB CUDA build): they run where torch is installed.
NEEDS_TORCH = {"torch_loop.py"}
EXPECTED["autotune.py"] = (
    "par_then(fetch, limit='auto').par_map(checksum, workers='auto').autotune(cpus=2, memory_budget=67108864)\n",
    "all 2000 items: True\n",
    "par_then chose a higher limit than 16: True\n",
    "par_map kept within 2 CPUs: True\n",
    "#1 par_then(fetch, limit='auto'): limit=auto: ",
    "#2 par_map(checksum, workers='auto'): workers=auto: ",
)
EXPECTED["torch_loop.py"] = ("64 steps of Tensor (64, 3, 16, 16)", "loss went down: True")

#: Command-line arguments for examples that need some: a server checks itself, then exits.
ARGS: dict[str, tuple[str, ...]] = {"web_service.py": ("--self-test",)}
EXPECTED["huggingface_shards.py"] = (
    "from_huggingface('ROOT/saved', workers=2)\n",
    "first row: PngImageFile (16, 16), label 0\n",
    "shards: ['train-00000-of-00002.parquet', 'train-00001-of-00002.parquet']\n",
    "read back: 600 rows, labels kept: True\n",
    "rank 1 of 2 reads 300 rows\n",
)
EXPECTED["web_service.py"] = (
    "/stream: 500 lines, as expected: True",
    "/stream.bin: frames (32, 3, 32, 32) x3 + (4, 3, 32, 32), as expected: True",
    "/preprocess: 60 x 256 features, as expected: True",
    "/stream?n=ten: 400 n='ten' must be an integer",
    "snake tasks 0, snake threads 0",
    "pool survived: same workers True, {'idle_workers': 2, 'running_workers': 0}",
    "stopped; worker processes left: 0",
)

ARGS["web_asyncio.py"] = ("--self-test",)
EXPECTED["web_asyncio.py"] = (
    "/stream: 500 lines, as expected: True",
    "/preprocess: 60 x 256 features, as expected: True",
    "/stream?n=ten: 422 'ten'",
    "snake tasks 0, snake threads 0",
    "pool survived: same workers True, {'idle_workers': 2, 'running_workers': 0}",
    "stopped; worker processes left: 0",
)
EXPECTED["asyncio_basics.py"] = (
    "first: [6765, 10946, 17711, 28657, 46368]\n",
    "; RuntimeStatistics(running=False, pipelines=0, tasks=0)\n",
    "timed out; RuntimeStatistics(running=False, pipelines=0, tasks=0)\n",
    "caught ValueError: invalid literal for int() with base 10: 'three'\n",
    "  note: snake: raised in stage #1 map(parse) on item index 2\n",
)

MARKER = re.compile(r"^<!-- example: (?P<path>\S+) -->$")


def example_names() -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob("*.py"))


@pytest.mark.parametrize("name", example_names())
def test_example_runs(name: str) -> None:
    expected = EXPECTED.get(name)
    if expected is None:
        pytest.fail(f"examples/{name} has no entry in EXPECTED in {Path(__file__).name}: add one")
    if name in NEEDS_TORCH and importlib.util.find_spec("torch") is None:
        pytest.skip(f"examples/{name} needs torch, which is optional and not installed here")
    proc = subprocess.run(
        [sys.executable, str(Path("examples") / name), *ARGS.get(name, ())],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, (
        f"examples/{name} exited with {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
    for fragment in expected:
        assert fragment in proc.stdout, f"examples/{name} did not print {fragment!r}; stdout:\n{proc.stdout}"


def test_every_expectation_has_an_example() -> None:
    stale = sorted(set(EXPECTED) - set(example_names()))
    assert not stale, f"entries in EXPECTED for examples that do not exist: {stale}"


@pytest.mark.parametrize("name", example_names())
def test_process_examples_have_the_main_guard(name: str) -> None:
    # Worker processes started by spawn or forkserver re-import the script.
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    if "par_map(" in text:
        assert 'if __name__ == "__main__":' in text, f"examples/{name} uses par_map without the main guard"


class Embedded(NamedTuple):
    doc: str
    line: int
    target: str
    text: str | None  # None: the marker is not followed by a ```python block


def doc_files() -> list[Path]:
    docs = sorted((ROOT / "docs").glob("*.md"))
    readme = ROOT / "README.md"
    return [readme, *docs] if readme.exists() else docs


def embedded_examples() -> list[Embedded]:
    found = []
    for doc in doc_files():
        lines = doc.read_text(encoding="utf-8").splitlines()
        rel = doc.relative_to(ROOT).as_posix()
        for i, line in enumerate(lines):
            m = MARKER.match(line.strip())
            if m is None:
                continue
            text = None
            if i + 1 < len(lines) and lines[i + 1].strip() == "```python":
                body = []
                for inner in lines[i + 2 :]:
                    if inner.strip() == "```":
                        text = "\n".join(body)
                        break
                    body.append(inner)
            found.append(Embedded(rel, i + 1, m["path"], text))
    return found


def _normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.splitlines()).strip("\n")


def test_docs_embed_examples() -> None:
    # Guards the check below against a marker spelling that matches nothing.
    assert embedded_examples(), "no '<!-- example: examples/... -->' marker found in README.md or docs/*.md"


def test_every_python_block_is_an_example() -> None:
    unmarked = []
    for doc in doc_files():
        lines = doc.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.strip().startswith("```python") and (i == 0 or MARKER.match(lines[i - 1].strip()) is None):
                unmarked.append(f"{doc.relative_to(ROOT).as_posix()}:{i + 1}")
    assert not unmarked, (
        f"```python blocks that are not an example file: {unmarked}; put the program in examples/ "
        "and embed it after <!-- example: examples/NAME.py -->, or show output as ```text"
    )


@pytest.mark.parametrize("block", embedded_examples(), ids=lambda b: f"{b.doc}:{b.line}")
def test_embedded_example_is_the_file(block: Embedded) -> None:
    assert block.text is not None, (
        f"{block.doc}:{block.line}: the marker must be followed immediately by a ```python block"
    )
    path = ROOT / block.target
    assert path.is_file(), f"{block.doc}:{block.line}: {block.target} does not exist"
    assert _normalise(block.text) == _normalise(path.read_text(encoding="utf-8")), (
        f"{block.doc}:{block.line}: the block differs from {block.target}; copy the file into the doc"
    )
