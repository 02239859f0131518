"""The resume law: a checkpoint taken after k items, resumed, gives the rest of the run."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import trio

from .._stream import Stream
from ._model import Expect, same_list, short
from ._run import refuse_trio, release_check, run_coroutines

LAW_RESUME = (
    "a run resumed from items.state_dict(), taken after k items, gives the items that the "
    "uninterrupted run gives after them (in its order; the same multiset after a stage "
    "that does not keep order)"
)

#: The ways :func:`check_resume` consumes a stream.
CONSUMERS = ("open", "open_sync", "aio")

Run = Callable[[Stream[Any], "dict[str, Any] | None", "int | None"], "tuple[list[Any], dict[str, Any]]"]


async def _take_open(stream: Stream[Any], state: dict[str, Any] | None, k: int | None) -> tuple[list[Any], dict[str, Any]]:
    out: list[Any] = []
    async with stream.open(state_dict=state) as items:
        if k != 0:
            async for x in items:
                out.append(x)
                if k is not None and len(out) >= k:
                    break
        return out, items.state_dict()


def _run_open(stream: Stream[Any], state: dict[str, Any] | None, k: int | None) -> tuple[list[Any], dict[str, Any]]:
    return run_coroutines(lambda: _take_open(stream, state, k))


def _run_sync(stream: Stream[Any], state: dict[str, Any] | None, k: int | None) -> tuple[list[Any], dict[str, Any]]:
    out: list[Any] = []
    with stream.open_sync(state_dict=state) as items:
        if k != 0:
            for x in items:
                out.append(x)
                if k is not None and len(out) >= k:
                    break
        return out, items.state_dict()


def _run_aio(stream: Stream[Any], state: dict[str, Any] | None, k: int | None) -> tuple[list[Any], dict[str, Any]]:
    import asyncio

    import snake.aio

    async def main() -> tuple[list[Any], dict[str, Any]]:
        out: list[Any] = []
        async with snake.aio.open(stream, state_dict=state) as items:
            if k != 0:
                async for x in items:
                    out.append(x)
                    if k is not None and len(out) >= k:
                        break
            return out, items.state_dict()

    return asyncio.run(main())


_RUNS: dict[str, Run] = {"open": _run_open, "open_sync": _run_sync, "aio": _run_aio}


def keeps_order(stream: Stream[Any]) -> bool:
    """Whether every run of ``stream`` gives its items in one order: no stage with
    ``ordered=False``, and every shuffle and mix seeded (also inside chain/zip/mix/repeat)."""
    todo = list(stream._specs)
    while todo:
        spec = todo.pop()
        if getattr(spec, "ordered", True) is False:
            return False
        if type(spec).__name__ in ("Shuffle", "Mix") and getattr(spec, "seed", 0) is None:
            return False
        todo.extend(s for inner in getattr(spec, "inputs", ()) for s in inner)
        todo.extend(getattr(spec, "inner", ()))
    return True


def _round_trip(state: dict[str, Any]) -> dict[str, Any]:
    """The state as it comes back from a JSON file (and it must pickle, as torch.save does)."""
    pickle.loads(pickle.dumps(state))
    back: dict[str, Any] = json.loads(json.dumps(state))
    return back


def check_resume(
    stream: Stream[Any],
    *,
    at: Sequence[int] | None = None,
    through: Sequence[str] = CONSUMERS,
    reference: list[Any] | None = None,
) -> None:
    """Check the resume law on ``stream``: for each ``k`` in ``at`` (by default 0, 1, the
    middle, the last and the end of its run), consume ``k`` items, take
    ``items.state_dict()``, send it through JSON (and pickle, as ``torch.save`` does),
    resume with ``open(state_dict=...)``, take a second checkpoint halfway through the
    rest and resume again. The items before the checkpoints and after them must be the
    uninterrupted run's: the same list if the stream keeps order (no ``ordered=False``
    stage, every shuffle seeded), else the same multiset (the items of each batch, for a
    stream that ends in ``batch()``). Each way of consuming it in ``through`` (``"open"``,
    ``"open_sync"``, ``"aio"``) takes its turn, resuming through the next one. Every run
    must release what it started (:func:`assert_no_leaks`).

    ``reference``: the uninterrupted run's items, if you know them; else one run of
    ``stream`` gives them. Raises ``AssertionError`` naming the law and the checkpoint.
    Blocks: inside trio, use :func:`check_resume_async`.
    """
    refuse_trio("check_resume()", "await check_resume_async(stream)")
    if reference is None:
        with release_check(f"snake.testing: pipeline {stream!r}"):
            reference = _run_sync(stream, None, None)[0]
    full = reference
    if keeps_order(stream):
        resume_law(stream, len(full), lambda got: same_list(full, got), at=at, through=through)
    else:
        flat = _flattener(stream)
        want = Expect.bag(flat(full))
        resume_law(stream, len(full), lambda got: want.problem(flat(got)), at=at, through=through)


def resume_law(
    stream: Stream[Any],
    n: int,
    problem: Callable[[list[Any]], str],
    *,
    at: Sequence[int] | None = None,
    through: Sequence[str] = CONSUMERS,
) -> None:
    """The resume law for a stream of ``n`` items whose full output ``problem`` judges
    ("" when it is a right one)."""
    if not through or any(t not in _RUNS for t in through):
        raise ValueError(f"check_resume: through={through!r} must name some of {CONSUMERS}")
    header = f"snake.testing: pipeline {stream!r}"
    points = sorted({k for k in (at if at is not None else (0, 1, n // 2, n - 1, n)) if 0 <= k <= n})
    for i, k in enumerate(points):
        first, then = through[i % len(through)], through[(i + 1) % len(through)]
        how = f"{first}() for {k} items, then {then}(state_dict=...), checkpointed again halfway"
        with release_check(f"{header}\n  consumed through: {how}"):
            prefix, state = _RUNS[first](stream, None, k)
            middle, state2 = _RUNS[then](stream, _round_trip(state), max(0, n - len(prefix)) // 2)
            suffix, _ = _RUNS[first](stream, _round_trip(state2), None)
        found = problem(prefix + middle + suffix)
        if found:
            raise AssertionError(
                f"{header}\n  consumed through: {how}\n  law broken: {LAW_RESUME}\n"
                f"  before the checkpoint: {short(prefix)}\n  resumed: {short(middle)}, then "
                f"{short(suffix)}\n  {found}"
            )


def _flattener(stream: Stream[Any]) -> Callable[[list[Any]], list[Any]]:
    """How to compare an unordered stream's output as a multiset: by items, or by the
    items of its batches."""
    if type(stream._specs[-1]).__name__ not in ("Batch", "PadBatch", "BucketByLength"):
        return lambda xs: xs
    return lambda xs: [y for x in xs for y in (list(x) if hasattr(x, "__len__") else [x])]


async def check_resume_async(stream: Stream[Any], **kwargs: Any) -> None:
    """:func:`check_resume` from inside trio (it runs in a worker thread)."""
    await trio.to_thread.run_sync(lambda: check_resume(stream, **kwargs))
