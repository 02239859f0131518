"""mix(on_exhausted=...): what happens when an input ends, weights by epoch, and exact
checkpoints in every mode.

The law: every mode gives exactly what a plain-Python loop over the same draws gives
(:func:`model`). The statistics: where the proportions must hold (``"stop"``,
``"restart"``), they follow the weights within a tolerance derived below.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import funcs
import numpy as np
import pytest
import trio
from conftest import count_tasks, run_async, run_sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import snake
from snake.testing import check_resume

Item = tuple[int, int, int]


def _tag(k: int, i: int) -> Item:
    """Item ``i`` of input ``k``, with the epoch it was made in."""
    return (k, i, snake.current_epoch())


def tagged(k: int, n: int) -> snake.Stream[Item]:
    return snake.from_iterable(range(n)).map(functools.partial(_tag, k))


def _rotated(ws: tuple[float, ...], epoch: int) -> list[float]:
    """Weights that move one place each epoch."""
    r = epoch % len(ws)
    return list(ws[r:] + ws[:r])


def model(
    sizes: Sequence[int],
    weights: Sequence[float],
    *,
    seed: int,
    epoch: int = 0,
    on_exhausted: str = "drop",
    max_restarts: int | None = None,
    limit: int | None = None,
) -> list[Item]:
    """What ``mix([tagged(k, n) for k, n in enumerate(sizes)], ...)`` gives in ``epoch``:
    one uniform double per draw from the generator of ``(seed, epoch)``, which picks among
    the inputs still drawn by their weights."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch]))
    active = list(range(len(sizes)))
    pos = [0] * len(sizes)
    run = [0] * len(sizes)
    out: list[Item] = []
    while active and (limit is None or len(out) < limit):
        u = rng.random() * sum(weights[k] for k in active)
        pick = active[-1]
        for k in active:
            u -= weights[k]
            if u < 0:
                pick = k
                break
        if pos[pick] == sizes[pick]:
            if on_exhausted == "drop":
                active.remove(pick)
                continue
            if on_exhausted == "stop":
                break
            while pos[pick] == sizes[pick] and (max_restarts is None or run[pick] < max_restarts):
                run[pick] += 1
                pos[pick] = 0
            if pos[pick] == sizes[pick]:
                break  # it has used its restarts
        out.append((pick, pos[pick], epoch + run[pick]))
        pos[pick] += 1
    return out


# -- the law: the engine gives what the model gives -----------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(0, 60), min_size=1, max_size=4),
    raw_weights=st.lists(st.floats(0.1, 10), min_size=4, max_size=4),
    seed=st.integers(0, 2**32),
    mode=st.sampled_from(["drop", "stop", "restart"]),
    max_restarts=st.none() | st.integers(0, 3),
    by_epoch=st.booleans(),
    epochs=st.integers(1, 2),
)
def test_every_mode_gives_what_the_model_gives(
    sizes: list[int],
    raw_weights: list[float],
    seed: int,
    mode: str,
    max_restarts: int | None,
    by_epoch: bool,
    epochs: int,
) -> None:
    ws = tuple(raw_weights[: len(sizes)])
    if mode != "restart":
        max_restarts = None
    limit = None
    if mode == "restart" and max_restarts is None:
        sizes = [max(1, n) for n in sizes]  # an input that gives nothing can never come round
        limit = 150
    weights: Any = functools.partial(_rotated, ws) if by_epoch else list(ws)
    s: snake.Stream[Item] = snake.mix(
        [tagged(k, n) for k, n in enumerate(sizes)],
        weights,
        seed=seed,
        on_exhausted=mode,
        max_restarts=max_restarts,
    )
    if limit is not None:
        s = s.take(limit)
    want: list[Item] = []
    for e in range(epochs):
        w = _rotated(ws, e) if by_epoch else list(ws)
        want += model(sizes, w, seed=seed, epoch=e, on_exhausted=mode, max_restarts=max_restarts, limit=limit)
    assert (s.repeat(epochs) if epochs > 1 else s).to_list() == want


def test_the_modes_side_by_side() -> None:
    streams = [tagged(0, 10), tagged(1, 3)]
    drop = snake.mix(streams, [1, 1], seed=0).to_list()
    stop = snake.mix(streams, [1, 1], seed=0, on_exhausted="stop").to_list()
    restart = snake.mix(streams, [1, 1], seed=0, on_exhausted="restart", max_restarts=2).to_list()
    assert len(drop) == 13 and sorted(drop) == sorted(
        [(0, i, 0) for i in range(10)] + [(1, i, 0) for i in range(3)]
    )
    # "stop": the same draws, up to the first that finds an input exhausted
    assert stop == drop[: len(stop)] and stop[-1] == (1, 2, 0) and len(stop) < len(drop)
    assert restart[: len(stop)] == stop
    # "restart": input 1 runs three times, in epochs 0, 1 and 2; then the mix stops
    assert [x for x in restart if x[0] == 1] == [(1, i, e) for e in range(3) for i in range(3)]
    assert len(snake.mix(streams, seed=0, on_exhausted="restart").take(500).to_list()) == 500


def test_known_length_only_for_drop() -> None:
    streams = [snake.from_iterable(range(10)), snake.from_iterable(range(3))]
    assert len(snake.mix(streams, seed=0).shard(rank=0, world_size=2, equal=True).to_list()) == 6
    modes: tuple[Any, ...] = ("stop", "restart")
    for mode in modes:
        with pytest.raises(ValueError, match="no known length"):
            snake.mix(streams, seed=0, on_exhausted=mode).shard(rank=0, world_size=2, equal=True)


# -- the proportions ---------------------------------------------------------------------------

#: The chance that the proportions test fails on a correct mix, for one example.
FALSE_ALARM = 1e-9


def tolerance(horizon: int, inputs: int) -> float:
    """How far ``count_k(t)``, the items of input ``k`` among the first ``t``, may stray
    from ``t * p_k``, for every ``t`` up to ``horizon`` and every input at once.

    Each draw picks input ``k`` with probability ``p_k`` independently, so ``count_k(t) -
    t * p_k`` is a martingale with increments in an interval of length 1 (stopped where
    the mix stops). The maximal Hoeffding-Azuma inequality bounds its largest excursion:
    ``P(max_{t <= T} |count_k(t) - t p_k| >= a) <= 2 exp(-2 a^2 / T)``. With a union over
    the inputs, ``a = sqrt(T ln(2 K / FALSE_ALARM) / 2)``. In binomial terms: the standard
    deviation of ``count_k(T)`` is at most ``sqrt(T) / 2`` (at ``p_k = 1/2``), so ``a``
    is about 6.8 such standard deviations for ``K = 4`` (6.6 for ``K = 2``).
    """
    return math.sqrt(horizon * math.log(2 * inputs / FALSE_ALARM) / 2)


def largest_excursion(picks: Sequence[int], weights: Sequence[float]) -> float:
    """``max_{t, k} |count_k(t) - t * p_k|`` over every prefix of ``picks``."""
    p = np.asarray(weights, dtype=float) / sum(weights)
    onehot = np.zeros((len(picks), len(weights)))
    onehot[np.arange(len(picks)), np.asarray(picks, dtype=int)] = 1.0
    counts = np.cumsum(onehot, axis=0)
    t = np.arange(1, len(picks) + 1)[:, None]
    return float(np.abs(counts - t * p).max()) if len(picks) else 0.0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(50, 1500), min_size=2, max_size=4),
    raw_weights=st.lists(st.floats(0.05, 20), min_size=4, max_size=4),
    seed=st.integers(0, 2**32),
    mode=st.sampled_from(["stop", "restart"]),
    max_restarts=st.none() | st.integers(0, 2),
)
def test_the_proportions_follow_the_weights(
    sizes: list[int], raw_weights: list[float], seed: int, mode: str, max_restarts: int | None
) -> None:
    """With ``"stop"`` and ``"restart"``, the share of each input among the first ``t``
    items stays within :func:`tolerance` of its weight's share, for every ``t``: at most
    ``sqrt(T ln(2K / 1e-9) / 2)`` items away, about 6.8 binomial standard deviations, where
    ``T`` is the longest the mix can run and ``K`` the number of inputs. A correct mix
    fails this with probability below 1e-9 per example."""
    ws = raw_weights[: len(sizes)]
    streams = [snake.from_iterable([k] * n) for k, n in enumerate(sizes)]
    if mode == "stop":
        s = snake.mix(streams, ws, seed=seed, on_exhausted="stop")
        horizon = sum(sizes)
    elif max_restarts is None:
        horizon = 4000
        s = snake.mix(streams, ws, seed=seed, on_exhausted="restart").take(horizon)
    else:
        s = snake.mix(streams, ws, seed=seed, on_exhausted="restart", max_restarts=max_restarts)
        horizon = sum(sizes) * (max_restarts + 1)
    picks = s.to_list()
    assert largest_excursion(picks, ws) <= tolerance(horizon, len(sizes))
    if mode == "restart" and max_restarts is None:
        assert len(picks) == horizon


def test_the_tolerance_tells_drop_from_stop() -> None:
    # Sizes far from the weights: "drop" gives every item, so its proportions follow the
    # sizes, and the test above would catch it; "stop" passes.
    streams = [snake.from_iterable([0] * 2000), snake.from_iterable([1] * 200)]
    drop = snake.mix(streams, [1, 1], seed=5).to_list()
    stop = snake.mix(streams, [1, 1], seed=5, on_exhausted="stop").to_list()
    assert largest_excursion(drop, [1, 1]) > tolerance(2200, 2)
    assert largest_excursion(stop, [1, 1]) <= tolerance(2200, 2)
    assert 0.4 < stop.count(1) / len(stop) < 0.6


# -- restarts and epochs -----------------------------------------------------------------------


def test_a_restart_is_the_next_epoch_and_reshuffles() -> None:
    small = snake.from_iterable(range(8)).shuffle(8, seed=1).map(lambda i: (i, snake.current_epoch()))
    big = snake.from_iterable(range(10_000)).map(lambda i: (-1, snake.current_epoch()))
    out = snake.mix([big, small], [1, 1], seed=0, on_exhausted="restart", max_restarts=3).to_list()
    runs: dict[int, list[int]] = {}
    for i, epoch in out:
        if i >= 0:
            runs.setdefault(epoch, []).append(i)
    assert sorted(runs) == [0, 1, 2, 3]
    assert all(sorted(r) == list(range(8)) for r in runs.values())
    assert len({tuple(r) for r in runs.values()}) > 1  # a new order per restart
    assert {e for i, e in out if i < 0} == {0}  # the input that did not end stays in epoch 0
    # inside repeat(), epoch e's restarts run in epochs e + 1, e + 2, ...
    again = snake.mix([big, small], seed=0, on_exhausted="restart", max_restarts=1).repeat(2).to_list()
    assert {e for i, e in again if i >= 0} == {0, 1, 2}


def test_an_input_that_gives_nothing_again_fails_clearly() -> None:
    once = snake.from_iterable(iter([1, 2, 3]))
    with pytest.raises(
        ValueError, match=r"mix\(\): input 1, from_iterable\(<.*>\), gave no items in its run 1"
    ):
        snake.mix([snake.from_iterable(range(100)), once], seed=0, on_exhausted="restart").to_list()
    # with a bound, it just runs out
    once = snake.from_iterable(iter([1, 2, 3]))
    out = snake.mix(
        [snake.from_iterable(range(100, 200)), once], seed=0, on_exhausted="restart", max_restarts=2
    ).to_list()
    assert sorted(x for x in out if x < 100) == [1, 2, 3]


def _fail_in_epoch_1(x: int) -> int:
    if snake.current_epoch() == 1 and x == 2:
        raise funcs.Boom(x)
    return x


@pytest.mark.parametrize("run", [run_async, run_sync])
def test_an_error_after_a_restart_names_the_restart(run) -> None:  # type: ignore[no-untyped-def]
    ok = snake.from_iterable(range(1000))
    bad = snake.from_iterable(range(5)).map(_fail_in_epoch_1)
    with pytest.raises(funcs.Boom) as info:
        run(snake.mix([ok, bad], seed=0, on_exhausted="restart"))
    notes = info.value.__notes__
    assert any("raised in stage #1 map(_fail_in_epoch_1) on item index 2" in n for n in notes)
    assert "snake: in restart 1 (epoch 1) of input 1 of mix()" in notes
    assert "snake: in input 1 of mix()" in notes
    assert "snake: in input 0 of mix()" not in notes  # the input that did not fail


@pytest.mark.parametrize("combine", ["zip", "mix"])
def test_an_error_is_noted_by_its_own_input_only(combine: str) -> None:
    ok = snake.from_iterable(range(20))
    bad = snake.from_iterable(range(20)).map(funcs.fail_on_7)
    s = snake.zip(ok, bad) if combine == "zip" else snake.mix([ok, bad], seed=0)
    with pytest.raises(funcs.Boom) as info:
        s.to_list()
    notes = info.value.__notes__
    assert f"snake: in input 1 of {combine}()" in notes
    assert f"snake: in input 0 of {combine}()" not in notes


async def test_break_out_of_an_endless_mix_releases_everything(no_leaks: None) -> None:
    a = snake.from_iterable(range(50)).par_map(funcs.inc, workers=2, backend="thread")
    b = snake.from_iterable(range(7)).par_then(funcs.ainc, limit=4)
    before = count_tasks()
    with trio.fail_after(20):
        async with snake.mix([a, b], [1, 3], seed=0, on_exhausted="restart").open() as items:
            n = 0
            async for _ in items:
                n += 1
                if n == 3000:
                    break
    assert count_tasks() == before


def test_seeded_mixing_is_reproducible_in_every_mode() -> None:
    modes: tuple[Any, ...] = ("drop", "stop", "restart")
    for mode in modes:
        streams = [
            snake.from_iterable(range(300)),
            snake.from_iterable(range(1000, 1040)).shuffle(16, seed=2),
        ]
        s = snake.mix(streams, [3, 1], seed=7, on_exhausted=mode).take(600)
        out = s.to_list()
        assert run_async(s) == out
        assert snake.mix(streams, [3, 1], seed=8, on_exhausted=mode).take(600).to_list() != out
        # a slow input does not change the choices
        slow = [streams[0].par_then(funcs.ajitter, limit=4).map(lambda x: x - 1), streams[1]]
        assert snake.mix(slow, [3, 1], seed=7, on_exhausted=mode).take(600).to_list() == out


# -- weights that change between epochs, and between runs ---------------------------------------


def curriculum(epoch: int) -> list[float]:
    """Input 0 at first, then input 1."""
    return [1.0, 1e-12] if epoch == 0 else [1e-12, 1.0]


def test_weights_as_a_function_of_the_epoch() -> None:
    streams = [snake.from_iterable(["a"] * 100), snake.from_iterable(["b"] * 100)]
    s = snake.mix(streams, curriculum, seed=0, on_exhausted="stop").repeat(2)
    out = s.to_list()
    assert out == ["a"] * 100 + ["b"] * 100
    assert repr(s) == (
        "mix([from_iterable(<list len=100>), from_iterable(<list len=100>)], weights=curriculum, "
        "seed=0, on_exhausted='stop').repeat(2)"
    )


def _bad_after_0(epoch: int) -> list[float]:
    return [1.0, 1.0] if epoch == 0 else [1.0]


def test_weights_of_a_later_epoch_are_checked_when_asked() -> None:
    streams = [snake.from_iterable(range(3)), snake.from_iterable(range(3))]
    s = snake.mix(streams, _bad_after_0, seed=0).repeat(2)
    with pytest.raises(ValueError, match=r"mix: weights\(1\)=\[1.0\] has 1 weights for 2 streams"):
        s.to_list()


def test_other_list_weights_refuse_a_checkpoint_and_a_function_resumes() -> None:
    streams = [snake.from_iterable(range(50)), snake.from_iterable(range(100, 150))]
    first = snake.mix(streams, [1, 2], seed=0)
    with first.open_sync() as items:
        head = [next(items) for _ in range(10)]
        state = items.state_dict()
    other = snake.mix(streams, [2, 1], seed=0)
    with pytest.raises(ValueError, match="state_dict: stage 0 differs"), other.open_sync(state_dict=state):
        pass
    # a schedule by epoch: the run that resumes in epoch 1 takes epoch 1's weights
    s = snake.mix(streams, curriculum, seed=0, on_exhausted="stop").repeat(3)
    full = s.to_list()
    assert full[:50] == list(range(50)) and full[50:100] == list(range(100, 150))
    with s.open_sync() as items:
        head = [next(items) for _ in range(60)]
        state = items.state_dict()
    with s.open_sync(state_dict=state) as items:
        assert head + list(items) == full


# -- checkpoints -------------------------------------------------------------------------------


def _restart_points(out: list[Item]) -> list[int]:
    """The positions where an input's restarted run gives its first item, with their
    neighbours."""
    seen: dict[int, int] = {}
    points = set()
    for j, (k, _, epoch) in enumerate(out):
        if k in seen and epoch != seen[k]:
            points.update((j - 1, j, j + 1))
        seen[k] = epoch
    return sorted(p for p in points if 0 <= p <= len(out))


def _inputs() -> list[snake.Stream[Item]]:
    return [
        snake.from_iterable(range(25)).shuffle(6, seed=1).map(functools.partial(_tag, 0)),
        snake.from_iterable(range(9)).filter(funcs.is_even).map(functools.partial(_tag, 1)),
        snake.from_iterable(range(12)).par_map(functools.partial(_tag, 2), workers=2, backend="thread"),
    ]


CASES: dict[str, Callable[[], snake.Stream[Any]]] = {
    "drop": lambda: snake.mix(_inputs(), [1, 2, 3], seed=3),
    "stop": lambda: snake.mix(_inputs(), [1, 2, 3], seed=3, on_exhausted="stop"),
    "restart, at most 2": lambda: snake.mix(
        _inputs(), [1, 2, 3], seed=3, on_exhausted="restart", max_restarts=2
    ),
    "restart, endless, taken": lambda: snake.mix(_inputs(), [3, 2, 1], seed=4, on_exhausted="restart").take(
        70
    ),
    "restart in repeat, by epoch": lambda: snake.mix(
        _inputs(),
        functools.partial(_rotated, (1.0, 2.0, 3.0)),
        seed=5,
        on_exhausted="restart",
        max_restarts=1,
    ).repeat(2),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_mode_resumes_exactly_around_restarts(case: str) -> None:
    s = CASES[case]()
    out = s.to_list()
    n = len(out)
    points = sorted({0, 1, n // 3, n // 2, n - 1, n, *_restart_points(out)})
    if case.startswith("restart"):
        assert len(_restart_points(out)) >= 3  # there are restarts to check around
    check_resume(s, at=points, reference=out)


def test_a_checkpoint_holds_the_restarts_and_the_draws() -> None:
    s = snake.mix([tagged(0, 100), tagged(1, 3)], seed=0, on_exhausted="restart")
    with s.open_sync() as items:
        head = [next(items) for _ in range(20)]
        state = items.state_dict()
    mix_entry = state["stages"][0]
    assert mix_entry["draws"] >= 20
    runs = mix_entry["children"][1]["stages"][0]
    _, i, e = [x for x in head if x[0] == 1][-1]
    # the run of input 1's next item: the last one's, or the next if that one was its last
    assert runs["run"] == e or (i == 2 and runs["run"] == e + 1)
    assert e >= 2
    with s.open_sync(state_dict=state) as items:
        rest = [next(items) for _ in range(20)]
    assert head + rest == s.take(40).to_list()


# -- the call ----------------------------------------------------------------------------------


def test_repr_shows_the_mode_when_not_default() -> None:
    a, b = snake.from_iterable(range(3)), snake.from_iterable([1])
    base = "mix([from_iterable(<range len=3>), from_iterable(<list len=1>)], weights=[3.0, 1.0], seed=0"
    assert repr(snake.mix([a, b], [3, 1], seed=0)) == base + ")"
    assert repr(snake.mix([a, b], [3, 1], seed=0, on_exhausted="drop")) == base + ")"
    assert repr(snake.mix([a, b], [3, 1], seed=0, on_exhausted="stop")) == base + ", on_exhausted='stop')"
    assert repr(snake.mix([a, b], [3, 1], seed=0, on_exhausted="restart", max_restarts=2)) == (
        base + ", on_exhausted='restart', max_restarts=2)"
    )


def _wrong_length(epoch: int) -> list[float]:
    return [1.0]


def _raises(epoch: int) -> list[float]:
    raise funcs.Boom(epoch)


@pytest.mark.parametrize(
    ("kwargs", "exc", "msg"),
    [
        (
            {"on_exhausted": "first_exhausted"},
            ValueError,
            r"mix: on_exhausted='first_exhausted' must be one of \('drop', 'stop', 'restart'\)",
        ),
        ({"on_exhausted": None}, ValueError, "mix: on_exhausted=None must be one of"),
        ({"on_exhausted": "restart", "max_restarts": -1}, ValueError, "mix: max_restarts=-1 must be >= 0"),
        ({"on_exhausted": "restart", "max_restarts": 1.5}, TypeError, "mix: max_restarts=1.5 must be an int"),
        ({"max_restarts": 2}, ValueError, "mix: max_restarts=2 needs on_exhausted='restart'"),
        (
            {"on_exhausted": "stop", "max_restarts": 0},
            ValueError,
            "mix: max_restarts=0 needs on_exhausted='restart'",
        ),
        ({"weights": _wrong_length}, ValueError, r"mix: weights\(0\)=\[1.0\] has 1 weights for 2 streams"),
        ({"weights": lambda e: [1, -1]}, ValueError, r"mix: weights\(0\)=\[1, -1\] must all be > 0"),
        ({"weights": lambda e: 3}, TypeError, r"mix: weights\(0\)=3 must be a list of numbers"),
        ({"weights": _raises}, funcs.Boom, "0"),
        ({"weights": [1, "x"]}, TypeError, r"mix: weights=\[1, 'x'\] must be numbers"),
    ],
)
def test_validation_at_the_call(kwargs: dict[str, Any], exc: type[Exception], msg: str) -> None:
    streams = [snake.from_iterable([1]), snake.from_iterable([2])]
    with pytest.raises(exc, match=msg):
        snake.mix(streams, **kwargs)
