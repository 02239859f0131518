"""monitor(), progress() and the snake.* debug log lines."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
import trio

import snake


async def nap(x: Any) -> Any:
    await trio.sleep(0.001)
    return x


def test_monitor_passes_items_through_and_reports_rates() -> None:
    calls: list[dict[str, float]] = []
    stream = snake.from_iterable(range(300)).par_then(nap, limit=4).monitor(calls.append, every=0.02)
    assert stream.to_list() == list(range(300))
    assert len(calls) >= 2  # at least one periodic call, and the one at the end
    assert calls[-1]["items"] == 300
    assert all(set(c) == {"items", "items_per_s", "elapsed_s"} for c in calls)
    assert all(c["items_per_s"] >= 0 for c in calls)
    assert [c["items"] for c in calls] == sorted(c["items"] for c in calls)


def test_monitor_counts_bytes_of_arrays() -> None:
    calls: list[dict[str, float]] = []
    arrays = [np.zeros(100, dtype=np.float32) for _ in range(10)]
    snake.from_iterable(arrays).monitor(calls.append, every=0).to_list()
    assert calls[-1]["bytes"] == 4000
    assert "bytes_per_s" in calls[-1]
    calls.clear()
    snake.from_iterable(arrays).batch(5).monitor(calls.append).to_list()
    assert calls[-1]["bytes"] == 4000 and calls[-1]["items"] == 2


def test_monitor_callback_errors_fail_the_pipeline_with_a_note() -> None:
    def bad(m: dict[str, float]) -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError) as info:
        snake.from_iterable(range(5)).monitor(bad, every=0).to_list()
    assert any("monitor(bad" in n for n in info.value.__notes__)


def test_monitor_and_progress_validate_at_build_time() -> None:
    s = snake.from_iterable(range(3))
    with pytest.raises(ValueError, match=r"monitor: every=-1 must be >= 0"):
        s.monitor(print, every=-1)
    with pytest.raises(TypeError, match=r"monitor: every='1' must be a number"):
        s.monitor(print, every="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"monitor"):
        s.monitor(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"progress: total=-1"):
        s.progress(total=-1)
    with pytest.raises(TypeError, match=r"progress: desc=3"):
        s.progress(desc=3)  # type: ignore[arg-type]


def test_progress_knows_the_total_when_it_can() -> None:
    assert repr(snake.from_iterable(range(10)).map(str).take(4).progress()).endswith(".progress(total=4)")
    assert repr(snake.from_iterable(range(10)).filter(bool).progress()).endswith(".progress()")
    assert repr(snake.from_iterable(iter([1])).progress(desc="x")).endswith(".progress(desc='x')")
    # The same sizing as shard(equal=True): other sized sources, shuffle, shard, monitor.
    sized = snake.chain(snake.from_files(["a", "b", "c"]), snake.from_iterable(range(5))).shuffle(4)
    assert repr(sized.shard(rank=0, world_size=2).monitor(print).progress()).endswith(".progress(total=4)")
    assert repr(snake.from_iterable(range(3)).progress().shard(rank=0, world_size=1, equal=True)).endswith(
        "shard(rank=0, world_size=1, equal=True)"
    )
    # A source that cannot be sized (a missing Parquet file) gives no total, not an error.
    assert repr(snake.from_parquet("/nonexistent/x.parquet").progress()).endswith(".progress()")


def test_progress_draws_a_tqdm_bar(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm", reason="tqdm is optional for users; the test extra installs it")
    assert snake.from_iterable(range(50)).progress(desc="load").to_list() == list(range(50))
    err = capsys.readouterr().err
    assert "load" in err and "50/50" in err


def test_progress_without_tqdm_logs(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm raises ImportError
    with caplog.at_level(logging.INFO, logger="snake.progress"):
        assert snake.from_iterable(range(20)).progress().to_list() == list(range(20))
    assert any("20/20 items" in r.getMessage() and "(done)" in r.getMessage() for r in caplog.records)


async def test_stage_start_and_stop_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="snake"):
        async with snake.from_iterable(range(3)).par_then(nap).open() as items:
            assert [x async for x in items] == [0, 1, 2]
    messages = [r.getMessage() for r in caplog.records if r.name == "snake.pipeline"]
    assert "stage #0 from_iterable(<range len=3>): start" in messages
    assert any(m.startswith("stage #1 par_then(nap, limit=16): stop (done)") for m in messages)
