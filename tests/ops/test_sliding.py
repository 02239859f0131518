"""``sliding(size, step=...)``: windows of consecutive items, against a plain-Python model."""

from __future__ import annotations

from typing import Any

import funcs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import snake
from snake.testing import check_resume, check_stage


def windows(xs: list[Any], size: int, step: int = 1) -> list[tuple[Any, ...]]:
    """The model: every full window, none padded."""
    return [tuple(xs[i : i + size]) for i in range(0, len(xs) - size + 1, step)]


@settings(max_examples=60, deadline=None)
@given(
    xs=st.lists(st.integers(-50, 50), max_size=300),
    size=st.integers(1, 12),
    step=st.integers(1, 12),
    keep=st.integers(0, 3),
)
def test_sliding_equals_the_model_whatever_the_chunks(xs: list[int], size: int, step: int, keep: int) -> None:
    # A filter before it cuts the chunks at random places (and keep=0 keeps every item).
    stream = snake.from_iterable(xs).filter(lambda x: keep == 0 or x % 4 != keep).sliding(size, step=step)
    kept = [x for x in xs if keep == 0 or x % 4 != keep]
    want = windows(kept, size, step)
    assert stream.to_list() == want
    assert snake.from_iterable(kept).prefetch(3).sliding(size, step=step).to_list() == want


def test_sliding_obeys_the_stage_laws() -> None:
    few = settings(max_examples=10)
    ints = st.integers(-50, 50)
    check_stage(lambda s: s.sliding(3), items=ints, reference=lambda xs: windows(xs, 3), settings=few)
    check_stage(
        lambda s: s.sliding(2, step=3), items=ints, reference=lambda xs: windows(xs, 2, 3), settings=few
    )


def test_take_after_sliding_reads_only_what_it_needs() -> None:
    seen: list[int] = []

    def source() -> Any:
        for i in range(10_000):
            seen.append(i)
            yield i

    got = snake.from_iterable(source).sliding(4, step=2).take(3).to_list()
    assert got == [(0, 1, 2, 3), (2, 3, 4, 5), (4, 5, 6, 7)]
    assert len(seen) == 8


def test_sliding_known_length() -> None:
    from snake._plan import plan

    for n, size, step in [(0, 1, 1), (7, 3, 1), (7, 2, 3), (2, 3, 1), (10, 1, 4)]:
        s = snake.from_iterable(range(n)).sliding(size, step=step)
        assert plan(s._specs).length() == len(windows(list(range(n)), size, step))


def test_sliding_repr_and_argument_errors() -> None:
    s = snake.from_iterable(range(3))
    assert repr(s.sliding(3)) == "from_iterable(<range len=3>).sliding(3)"
    assert repr(s.sliding(3, step=2)) == "from_iterable(<range len=3>).sliding(3, step=2)"
    with pytest.raises(ValueError, match=r"^sliding: size=0 must be >= 1$"):
        s.sliding(0)
    with pytest.raises(ValueError, match=r"^sliding: step=0 must be >= 1$"):
        s.sliding(2, step=0)
    with pytest.raises(TypeError, match=r"^sliding: size=2.0 must be an int$"):
        s.sliding(2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^sliding: step=True must be an int$"):
        s.sliding(2, step=True)


def test_sliding_resumes_exactly() -> None:
    # A checkpoint between windows: the items of the next windows come again.
    check_resume(snake.from_iterable(range(40)).sliding(5).map(sum), at=[0, 1, 7, 20, 35, 36])
    check_resume(snake.from_iterable(range(40)).sliding(2, step=3), at=[0, 1, 6, 13])
    # Larger chunks, a filter before (its drops) and a batch after (its partial batch).
    stream = snake.from_iterable(range(3000)).filter(funcs.is_even).sliding(6, step=4).batch(5, collate=None)
    check_resume(stream, at=[0, 1, 30, 74, 75])
    # A shuffle after it picks its held windows out of a run of the stages before it again.
    check_resume(snake.from_iterable(range(300)).sliding(3, step=2).shuffle(16, seed=1), at=[0, 5, 60, 149])
