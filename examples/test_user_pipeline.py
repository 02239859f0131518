"""Property-based tests of your own stages with snake.testing.

Run with ``python -m pytest examples/test_user_pipeline.py`` (or as a script). The
async tests need pytest-trio; the others are plain pytest tests.
"""

import itertools
import subprocess
import sys

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import snake
from snake.testing import assert_no_leaks, check_stage, check_stage_async, pipelines

# -- the code under test: your own functions and stages --------------------------------


def normalize(text: str) -> str:
    """Lower case, single spaces."""
    return " ".join(text.lower().split())


def words(text: str) -> list[str]:
    return text.split()


def is_short(text: str) -> bool:
    return len(text) <= 8


async def lookup(text: str) -> str:
    """An IO stage: in real life, a request to a service."""
    await trio.sleep(0.001 * (len(text) % 3))
    return text.upper()


def dedupe(stream: snake.Stream[str]) -> snake.Stream[str]:
    """A stage of a few stages: normalise, then drop empty texts."""
    return stream.map(normalize).filter(bool)


texts = st.text(alphabet="ab C\t", max_size=12)


# -- the laws, through open() and open_sync() ------------------------------------------


def test_normalize_obeys_the_laws() -> None:
    # map, par_map on threads and on worker processes (normalize can be pickled)
    placements = check_stage(normalize, items=texts)
    assert any("pool=" in p for p in placements), placements


def test_an_async_stage_obeys_the_laws() -> None:
    check_stage(lookup, items=texts)  # then, par_then ordered and not


def test_a_stage_of_stages_matches_its_reference() -> None:
    check_stage(dedupe, items=texts, reference=lambda xs: [normalize(x) for x in xs if normalize(x)])


@settings(max_examples=50, deadline=None)
@given(
    pipelines(
        texts,
        maps=[normalize, str.upper],
        predicates=[is_short],
        flat_maps=[words],
        async_maps=[lookup],
        backends=["thread", "process"],
    )
)
def test_random_pipelines_of_my_functions(p: snake.testing.Pipeline) -> None:
    p.check()


def test_breaking_out_leaves_nothing_behind() -> None:
    stream = snake.from_iterable(itertools.count()).map(str).par_map(normalize, workers=2)
    with assert_no_leaks():
        for i, _ in enumerate(stream):
            if i == 100:
                break


# -- the same from trio (pytest-trio) --------------------------------------------------


@pytest.mark.trio
@settings(max_examples=25, deadline=None)
@given(pipelines(texts, maps=[normalize], async_maps=[lookup]))
async def test_random_pipelines_in_trio(p: snake.testing.Pipeline) -> None:
    await p.check_async()


@pytest.mark.trio
async def test_an_async_stage_from_trio() -> None:
    await check_stage_async(lookup, items=texts)


@pytest.mark.trio
async def test_a_deadline_leaves_nothing_behind() -> None:
    stream = snake.from_iterable(itertools.count()).map(str).par_then(lookup, limit=8)
    async with assert_no_leaks():
        with trio.move_on_after(0.2):
            async with stream.open() as items:
                async for _ in items:
                    pass


if __name__ == "__main__":
    # pytest in a process of its own: this one has imported Hypothesis before pytest could
    # set up its assertion rewriting.
    sys.exit(subprocess.call([sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider"]))
