"""Checkpoints: ``items.state_dict()`` and ``open(state_dict=...)``, the parts of them."""

from __future__ import annotations

import functools
import json
import pickle
import time
from typing import Any

import funcs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import snake
from snake._engine.resume import Drops, Ranges
from snake.testing import check_resume


def _take(stream: snake.Stream[Any], k: int) -> tuple[list[Any], dict[str, Any]]:
    with stream.open_sync() as items:
        got = [x for _, x in zip(range(k), items)]
        return got, items.state_dict()


# -- the ledgers ---------------------------------------------------------------------------


@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 8))), st.integers(0, 70))
def test_ranges_hold_the_union_of_what_was_added(spans: list[tuple[int, int]], at: int) -> None:
    r = Ranges()
    want: set[int] = set()
    for a, n in spans:
        r.add(a, a + n)
        want |= set(range(a, a + n))
    assert all((x in r) == (x in want) for x in range(-1, 80))
    assert all(a < b for a, b in r.spans)
    assert all(r.spans[i][1] < r.spans[i + 1][0] for i in range(len(r.spans) - 1))  # merged
    gap = at
    while gap in want:
        gap += 1
    assert r.first_gap(at) == gap
    assert {x for a, b in r.above(at) for x in range(a, b)} == {x for x in want if x >= at}


@given(st.sets(st.integers(0, 100)), st.integers(0, 60), st.integers(0, 100))
def test_drops_map_an_output_to_its_input(dropped: set[int], r: int, cut: int) -> None:
    d = Drops()
    for i in sorted(dropped, reverse=True):  # out of order, as parallel stages drop
        d.add(i)
    kept = [i for i in range(200) if i not in dropped]
    assert d.input_of(r) == kept[r]
    u = d.input_of(min(cut, 60))
    d.prune(u)
    assert d.input_of(r) == kept[r] if kept[r] >= u else True
    assert d.dropped_before(u) == len([i for i in dropped if i < u])


# -- the state itself --------------------------------------------------------------------------


def _values(x: Any) -> int:
    if isinstance(x, dict):
        return sum(_values(v) for v in x.values())
    if isinstance(x, list):
        return sum(_values(v) for v in x)
    return 1


def test_a_state_is_plain_json_that_survives_pickle_and_stays_small() -> None:
    stream = snake.from_iterable(range(200_000)).map(funcs.inc).shuffle(1000, seed=1).batch(8, collate=None)
    sizes = []
    for k in (1_000, 20_000):
        _, state = _take(stream, k)
        text = json.dumps(state)
        assert json.loads(text) == state
        assert pickle.loads(pickle.dumps(state)) == state
        assert state["format"] == "snake.state/1" and state["received"] == k
        sizes.append(_values(state))
    # the shuffle's buffer is named by position: the number of values in the state does
    # not grow with the position (only their digits do)
    assert sizes[0] == sizes[1] < 2100, sizes  # the buffer named twice: slots, and what the source makes again


def test_a_state_of_another_pipeline_is_refused_naming_the_first_stage_that_differs() -> None:
    _, state = _take(snake.from_iterable(range(10)).map(funcs.inc).filter(funcs.is_even), 3)
    other = snake.from_iterable(range(10)).map(funcs.inc).filter(funcs.fail_on_7)
    with pytest.raises(ValueError, match=r"stage 2 differs: the state is of '#2 filter\(is_even\)', "
                       r"the pipeline has '#2 filter\(fail_on_7\)'"):
        other.open_sync(state_dict=state)
    with pytest.raises(ValueError, match="describes 3 stages; the pipeline has 2"):
        snake.from_iterable(range(10)).map(funcs.inc).open(state_dict=state)
    with pytest.raises(ValueError, match=r"format 'x' is not 'snake.state/1'"):
        other.open(state_dict={"format": "x"})
    with pytest.raises(TypeError, match=r"state_dict=\[1\] must be a dict"):
        other.open(state_dict=[1])  # type: ignore[arg-type]


def test_a_one_shot_iterator_cannot_be_resumed_a_function_returning_one_can() -> None:
    _, state = _take(snake.from_iterable(iter(range(10))), 3)
    with pytest.raises(ValueError, match="one-shot iterator, which cannot be resumed"):
        snake.from_iterable(iter(range(10))).open_sync(state_dict=state)

    def numbers() -> Any:
        return (i * i for i in range(10))

    stream = snake.from_iterable(numbers)
    assert repr(stream) == "from_iterable(numbers)"
    assert stream.to_list() == stream.to_list() == [i * i for i in range(10)]  # opened twice
    got, state = _take(stream, 4)

    async def rest() -> tuple[list[int], snake.PipelineStatistics]:
        async with stream.open(state_dict=state) as items:
            return [x async for x in items], items.statistics()

    more, stats = trio.run(rest)
    assert got + more == [i * i for i in range(10)]
    assert stats.stage(0).replayed == 4  # produced again from the start, not passed on


def test_seedless_shuffles_of_a_source_cannot_be_resumed(tmp_path: Any) -> None:
    (tmp_path / "a").write_bytes(b"x")
    stream = snake.from_files(str(tmp_path / "*"), shuffle=True)
    _, state = _take(stream, 0)
    with pytest.raises(ValueError, match="shuffles with fresh entropy"):
        stream.open_sync(state_dict=state)
    # a shuffle() stage without a seed keeps its generator's state: it resumes
    check_resume(snake.from_iterable(range(40)).shuffle(8), at=[5, 20])


def test_an_unordered_stage_before_one_that_must_select_is_refused_at_the_checkpoint() -> None:
    stream = (
        snake.from_iterable(range(50))
        .par_then(funcs.ajitter, limit=4, ordered=False)
        .flat_map(funcs.repeat_n)
        .shuffle(5, seed=1)
    )
    with stream.open_sync() as items, pytest.raises(ValueError, match="in another order"):
        next(items)
        items.state_dict()
    # the same with the unordered stage where its order does not matter
    check_resume(
        snake.from_iterable(range(50)).flat_map(funcs.repeat_n).shuffle(5, seed=1).par_then(
            funcs.ajitter, limit=4, ordered=False
        ),
        at=[3, 30],
    )


def test_counters_go_on_from_the_checkpoint() -> None:
    seen: list[float] = []
    stream = (
        snake.from_iterable(range(30))
        .map(funcs.fail_on_7)
        .on_error("skip")
        .monitor(lambda m: seen.append(m["items"]), every=0)
    )
    _, state = _take(stream, 10)

    async def rest() -> snake.PipelineStatistics:
        async with stream.open(state_dict=state) as items:
            async for _ in items:
                pass
            return items.statistics()

    stats = trio.run(rest)
    assert stats.stage(1).errors_skipped == 1  # item 7 was dropped before the checkpoint
    assert seen[-1] == 29  # the monitor counts on from the 10 items before it


def test_a_resumed_runs_statistics_count_the_work_of_that_run() -> None:
    stream = snake.from_iterable(range(200)).map(funcs.double).shuffle(20, seed=3).map(funcs.double)
    _, state = _take(stream, 150)
    held = len(state["stages"][2]["held"])
    assert held > 0

    async def rest() -> snake.PipelineStatistics:
        async with stream.open(state_dict=state) as items:
            async for _ in items:
                pass
            return items.statistics()

    stats = trio.run(rest)
    resume = state["stages"][2]["resume"]
    # the map before the shuffle runs again on the held items, then on the rest
    assert stats.stage(1).items_in == stats.stage(1).items_out == held + 200 - resume
    assert stats.stage(2).items_in == held + 200 - resume
    assert stats.stage(2).items_out == stats.stage(3).items_in == 50


@pytest.mark.parametrize(
    "stream",
    [
        snake.from_iterable(range(100)).shuffle(10, seed=7).shard(rank=2, world_size=3),
        snake.from_iterable(range(100)).shuffle(10, seed=7).skip(30),
    ],
    ids=["shard", "skip"],
)
def test_a_checkpoint_before_the_first_item_asks_nothing_the_stage_before_has_not_made(
    stream: snake.Stream[int],
) -> None:
    # Taken at once after open(), while the shuffle is still filling its buffer: the
    # checkpoint must not point past the inputs the shuffle has made.
    full = stream.to_list()
    for _ in range(20):
        got, state = _take(stream, 0)
        with stream.open_sync(state_dict=json.loads(json.dumps(state))) as items:
            assert got + list(items) == full


def test_a_child_pipeline_read_ahead_of_the_consumer_keeps_what_a_checkpoint_needs() -> None:
    # mix, chain and repeat read their inputs (child pipelines) ahead of the consumer; a
    # child must not forget what a checkpoint at the consumer's position still needs.
    def tagged(k: int, n: int) -> snake.Stream[tuple[int, int]]:
        return snake.from_iterable(range(n)).map(functools.partial(_tag, k))

    streams = [
        snake.mix([tagged(0, 300), tagged(1, 3)], seed=0, on_exhausted="restart"),
        snake.chain(tagged(0, 2), tagged(1, 5000)),
        tagged(0, 3).repeat(2000),
    ]

    def take_then_wait(stream: snake.Stream[Any], k: int) -> tuple[list[Any], dict[str, Any]]:
        with stream.open_sync() as items:
            head = [next(items) for _ in range(k)]
            time.sleep(0.05)  # the stage reads its inputs as far ahead as it may
            return head, items.state_dict()

    for stream in streams:
        reference = stream.take(400).to_list()
        for k in (20, 37):
            head, state = take_then_wait(stream, k)
            with stream.open_sync(state_dict=state) as items:
                rest = [next(items) for _ in range(400 - k)]
            assert head + rest == reference, f"{stream!r} resumed after {k} items"


def _tag(k: int, i: int) -> tuple[int, int]:
    return k, i
