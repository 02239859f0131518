"""shuffle, shard, repeat and the epoch counter; snake.rng's per-item determinism."""

from __future__ import annotations

import collections

import funcs
import pytest
import trio
from conftest import run_async, run_sync
from hypothesis import given, settings
from hypothesis import strategies as st

import snake


def test_repr() -> None:
    s = snake.from_iterable(range(4)).shuffle(8, seed=3).shard(rank=1, world_size=2, equal=True).repeat(2)
    assert repr(s) == (
        "from_iterable(<range len=4>).shuffle(8, seed=3).shard(rank=1, world_size=2, equal=True).repeat(2)"
    )
    assert repr(snake.from_iterable([1]).shuffle(2).repeat()) == "from_iterable(<list len=1>).shuffle(2).repeat()"


# -- shuffle -------------------------------------------------------------------------
@pytest.mark.parametrize("buffer", [1, 5, 64, 1000])
def test_shuffle_is_a_permutation_and_deterministic(buffer: int) -> None:
    s = snake.from_iterable(range(300)).shuffle(buffer, seed=11)
    a = run_async(s)
    assert sorted(a) == list(range(300))
    assert run_sync(s) == a
    if buffer > 1:
        assert a != list(range(300))
        assert run_async(snake.from_iterable(range(300)).shuffle(buffer, seed=12)) != a


def test_shuffle_order_does_not_depend_on_chunking() -> None:
    # An async source moves one item at a time; a range moves large chunks.
    async def gen():  # type: ignore[no-untyped-def]
        for i in range(500):
            yield i

    a = snake.from_iterable(range(500)).shuffle(37, seed=5).to_list()
    b = snake.from_async_iterable(gen).shuffle(37, seed=5).to_list()
    c = snake.from_iterable(range(500)).par_then(funcs.ajitter, limit=8).shuffle(37, seed=5).to_list()
    assert a == b == [x - 1 for x in c]  # ajitter adds 1


def test_shuffle_without_seed_varies_between_runs() -> None:
    s = snake.from_iterable(range(200)).shuffle(200)
    assert s.to_list() != s.to_list()


def test_shuffle_then_take_stops() -> None:
    def endless():  # type: ignore[no-untyped-def]
        i = 0
        while True:
            yield i
            i += 1

    out = snake.from_iterable(endless()).shuffle(10, seed=0).take(5).to_list()
    assert len(out) == 5 and all(x < 15 for x in out)


@pytest.mark.parametrize(
    ("call", "exc", "msg"),
    [
        (lambda s: s.shuffle(0), ValueError, "shuffle: buffer=0 must be >= 1"),
        (lambda s: s.shuffle(4, seed=-1), ValueError, "shuffle: seed=-1 must be >= 0"),
        (lambda s: s.shuffle(4, seed="x"), TypeError, "shuffle: seed='x' must be an int or None"),
        (lambda s: s.repeat(-1), ValueError, "repeat: epochs=-1 must be >= 0"),
        (lambda s: s.shard(rank=2, world_size=2), ValueError, "shard: rank=2 must be in range(world_size=2)"),
        (lambda s: s.shard(rank=0, world_size=0), ValueError, "shard: world_size=0 must be >= 1"),
        (lambda s: s.shard(rank=1), ValueError, "shard: rank=1 but no world_size"),
        (lambda s: s.shard(rank=0, world_size=1, equal=1), TypeError, "shard: equal=1 must be a bool"),
    ],
)
def test_build_time_validation(call, exc, msg) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)")):
        call(snake.from_iterable(range(3)))


# -- shard ---------------------------------------------------------------------------
def test_shard_defaults_from_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert repr(snake.from_iterable(range(3)).shard()).endswith("shard(rank=0, world_size=1)")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    s = snake.from_iterable(range(10)).shard()
    assert repr(s).endswith("shard(rank=2, world_size=3)")
    assert s.to_list() == [2, 5, 8]
    monkeypatch.setenv("WORLD_SIZE", "three")
    with pytest.raises(ValueError, match="WORLD_SIZE='three' is not an int"):
        snake.from_iterable(range(3)).shard()


def test_shard_equal_needs_a_known_length() -> None:
    with pytest.raises(ValueError, match=r"shard\(equal=True\) needs the number of items"):
        snake.from_iterable(iter(range(3))).shard(rank=0, world_size=2, equal=True)
    with pytest.raises(ValueError, match="no known length"):
        snake.from_iterable(range(3)).filter(funcs.is_even).shard(rank=0, world_size=2, equal=True)
    # one-to-one stages keep the length
    s = snake.from_iterable(range(7)).map(funcs.inc).shuffle(3, seed=0).shard(rank=0, world_size=2, equal=True)
    assert len(s.to_list()) == 3


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 60),
    world_size=st.integers(1, 9),
    equal=st.booleans(),
    epochs=st.integers(1, 3),
    seed=st.integers(0, 2**32),
)
def test_every_item_exactly_once_across_ranks_and_epochs(
    n: int, world_size: int, equal: bool, epochs: int, seed: int
) -> None:
    per_rank = []
    for rank in range(world_size):
        s = (
            snake.from_iterable(range(n))
            .shuffle(7, seed=seed)
            .shard(rank=rank, world_size=world_size, equal=equal)
            .map(lambda x: (snake.current_epoch(), x))
            .repeat(epochs)
        )
        per_rank.append(s.to_list())
    counts = collections.Counter(item for items in per_rank for item in items)
    assert all(c == 1 for c in counts.values())  # never twice, on any rank, in any epoch
    kept = n // world_size * world_size if equal else n
    for e in range(epochs):
        covered = {x for (ep, x) in counts if ep == e}
        assert len(covered) == kept
        if not equal:
            assert covered == set(range(n))
    if equal:  # a rank may get zero items (n < world_size) and still ends cleanly
        assert {len(items) for items in per_rank} == {n // world_size * epochs}


def test_a_rank_with_zero_items_ends_cleanly() -> None:
    assert snake.from_iterable(range(2)).shard(rank=3, world_size=4).to_list() == []
    assert snake.from_iterable(range(3)).shard(rank=0, world_size=4, equal=True).repeat(3).to_list() == []


def test_empty_dataset() -> None:
    assert snake.from_iterable([]).shuffle(4, seed=0).shard(rank=0, world_size=2).repeat(2).to_list() == []


# -- repeat and epochs ---------------------------------------------------------------
def test_repeat_reshuffles_every_epoch_reproducibly() -> None:
    s = snake.from_iterable(range(50)).shuffle(50, seed=9).repeat(3)
    out = s.to_list()
    epochs = [out[i * 50 : (i + 1) * 50] for i in range(3)]
    assert all(sorted(e) == list(range(50)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    assert s.to_list() == out
    # epoch 0 of the repeat is the same shuffle as the stream without repeat
    assert epochs[0] == snake.from_iterable(range(50)).shuffle(50, seed=9).to_list()


def test_current_epoch_is_visible_to_every_kind_of_stage() -> None:
    async def aepoch(x: int) -> tuple[int, int]:
        await trio.lowlevel.checkpoint()
        return snake.current_epoch(), x

    def tepoch(item: tuple[int, int]) -> tuple[int, int, int]:
        return (*item, snake.current_epoch())

    s = (
        snake.from_iterable(range(4))
        .par_then(aepoch, limit=3)
        .par_map(tepoch, workers=2, backend="thread")
        .repeat(3)
    )
    assert s.to_list() == [(e, x, e) for e in range(3) for x in range(4)]
    assert snake.current_epoch() == 0


def test_endless_repeat_of_nothing_raises() -> None:
    with pytest.raises(ValueError, match="epoch 0 of from_iterable.* produced no items"):
        snake.from_iterable([]).repeat().to_list()
    # a generator can be iterated once: the second epoch is empty
    with pytest.raises(ValueError, match="epoch 1 .* produced no items"):
        snake.from_iterable(iter([1, 2])).repeat().to_list()


def test_endless_repeat_with_take() -> None:
    assert snake.from_iterable([1, 2, 3]).repeat().take(7).to_list() == [1, 2, 3, 1, 2, 3, 1]


def test_repeat_zero_epochs() -> None:
    assert snake.from_iterable([1]).repeat(0).to_list() == []


def test_error_in_an_epoch_names_the_epoch() -> None:
    def fail_in_epoch_1(x: int) -> int:
        if snake.current_epoch() == 1 and x == 2:
            raise KeyError("boom")
        return x

    with pytest.raises(KeyError) as info:
        snake.from_iterable(range(4)).map(fail_in_epoch_1).repeat(3).to_list()
    notes = info.value.__notes__
    assert any("raised in stage #1 map(fail_in_epoch_1) on item index 2" in n for n in notes)
    assert "snake: in epoch 1 of repeat()" in notes


async def test_break_cancels_an_endless_repeat(no_leaks: None) -> None:
    s = snake.from_iterable(range(100)).par_map(funcs.inc, workers=2, backend="thread").repeat()
    got = []
    async with s.open() as items:
        async for x in items:
            got.append(x)
            if len(got) == 250:
                break
    assert got[:100] == list(range(1, 101))


# -- rng -----------------------------------------------------------------------------
def test_rng_is_keyed_by_seed_epoch_and_index() -> None:
    a = snake.rng(5, seed=1, epoch=0).random(3).tolist()
    assert snake.rng(5, seed=1, epoch=0).random(3).tolist() == a
    assert snake.rng(6, seed=1, epoch=0).random(3).tolist() != a
    assert snake.rng(5, seed=2, epoch=0).random(3).tolist() != a
    assert snake.rng(5, seed=1, epoch=1).random(3).tolist() != a
    assert snake.rng(5, seed=1).random(3).tolist() == a  # epoch 0 outside repeat()
    with pytest.raises(ValueError, match="rng: index=-1 must be >= 0"):
        snake.rng(-1)
    with pytest.raises(TypeError, match="rng: seed=None must be an int"):
        snake.rng(0, seed=None)  # type: ignore[arg-type]


def _augmented(workers: int) -> list[float]:
    return (
        snake.from_iterable(range(40))
        .enumerate()
        .map(lambda t: (snake.current_epoch(), t[0], t[1]))
        .par_map(funcs.noisy, workers=workers)
        .repeat(2)
        .to_list()
    )


def test_rng_gives_the_same_results_on_any_number_of_workers() -> None:
    one = _augmented(1)
    assert _augmented(2) == one
    assert one[:40] != one[40:]  # epochs differ
    assert [int(x) for x in one] == list(range(40)) * 2
