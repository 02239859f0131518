"""Resuming from a checkpoint against starting afresh and against fast-forwarding.

A 1M-item pipeline, from_iterable(range(N)).map(decode).shuffle(10_000, seed=0)
.par_map(work, workers=2), is checkpointed after 90% of its items. Measured, each the
median of nine runs (three for fast-forwarding), interleaved:

- open(state_dict=...) to the first item, against a fresh open() to its first item
  (both start their workers and fill the shuffle buffer);
- the same against fast-forwarding: a fresh open() that throws away the first 90% (what
  a loader that only counts the items it gave has to do);
- the user-function calls that ran again: calls in the first run up to its close plus
  calls in the resumed run, minus N (for decode, before the shuffle, and for work,
  after it);
- the size of the state as JSON, at 10% and at 90%: it does not grow with the
  position.

    python bench/resume.py            # N = 1,000,000, buffer 10,000
    python bench/resume.py --quick    # N = 20,000, buffer 1,000
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import trio
from _common import check, parser, write

import snake


def decode(i: int) -> int:
    return i * 3 + 1


def work(x: int) -> int:
    return x // 3


def _calls(stats: snake.PipelineStatistics) -> tuple[int, int]:
    """(decode's calls, work's calls) of a run, from its statistics."""
    by_name = {s.name.split(" ", 1)[1].split("(")[0]: s.items_in for s in stats.stages}
    return by_name["map"], by_name["par_map"]


def main() -> int:
    args = parser(__doc__ or "").parse_args()
    n, buffer, rounds = (20_000, 1_000, 1) if args.quick else (1_000_000, 10_000, 3)
    k = n * 9 // 10
    stream = snake.from_iterable(range(n)).map(decode).shuffle(buffer, seed=0).par_map(work, workers=2)

    async def first_run(stop: int) -> tuple[list[int], dict[str, Any], snake.PipelineStatistics]:
        got: list[int] = []
        async with stream.open() as items:
            async for x in items:
                got.append(x)
                if len(got) == stop:
                    state = items.state_dict()
                    break
        return got, state, items.statistics()

    async def resumed(state: dict[str, Any]) -> tuple[float, list[int], snake.PipelineStatistics]:
        t0 = time.perf_counter()
        first = 0.0
        got: list[int] = []
        async with stream.open(state_dict=state) as items:
            async for x in items:
                if not got:
                    first = time.perf_counter() - t0
                got.append(x)
        return first, got, items.statistics()

    async def fresh_first() -> float:
        t0 = time.perf_counter()
        async with stream.open() as items:
            async for _ in items:
                return time.perf_counter() - t0
        raise AssertionError("no items")

    async def fast_forward() -> float:
        t0 = time.perf_counter()
        async with stream.open() as items:
            seen = 0
            async for _ in items:
                seen += 1
                if seen == k + 1:
                    return time.perf_counter() - t0
        raise AssertionError("too few items")

    full_set = range(n)
    prefix, state, stats1 = trio.run(first_run, k)
    state = json.loads(json.dumps(state))
    state_bytes = len(json.dumps(state))
    held = len(next(e for e in state["stages"] if "held" in e)["held"])
    _, early_state, _ = trio.run(first_run, n // 10)
    early_bytes = len(json.dumps(early_state))

    resume_firsts, fresh_firsts, forward_firsts = [], [], []
    rerun_decode = rerun_work = 0
    def warm() -> None:
        # A run stopped with items in its workers kills those workers; the next run would
        # pay for starting new ones. Every timed run starts with two idle warm workers.
        snake.from_iterable(range(8)).par_map(work, workers=2).to_list()

    for r in range(rounds * 3):  # first items: more rounds, they are short and noisy
        warm()
        first, suffix, stats2 = trio.run(resumed, state)
        resume_firsts.append(first)
        warm()
        fresh_firsts.append(trio.run(fresh_first))
        if r < rounds:
            warm()
            forward_firsts.append(trio.run(fast_forward))
        assert sorted(prefix + suffix) == list(full_set), "the resumed run lost or repeated items"
        d1, w1 = _calls(stats1)
        d2, w2 = _calls(stats2)
        rerun_decode, rerun_work = d1 + d2 - n, w1 + w2 - n
    # The same order as an uninterrupted run: checked once, outside the timings.
    assert prefix + suffix == stream.to_list(), "the resumed run is not the uninterrupted run's rest"

    t_resume = statistics.median(resume_firsts)
    t_fresh = statistics.median(fresh_firsts)
    t_forward = statistics.median(forward_firsts)
    print(f"{stream!r}, checkpointed after {k:,} of {n:,} items")
    print(f"open(state_dict=...) to the first item: {t_resume * 1e3:.1f} ms")
    print(f"fresh open() to the first item:         {t_fresh * 1e3:.1f} ms")
    print(f"fast-forward {k:,} items then one more:  {t_forward * 1e3:.1f} ms")
    print(
        f"user-function calls run twice over both runs: decode {rerun_decode:,}, of which {held:,} "
        f"remade the shuffle buffer on resume and the rest ran ahead of the consumer before it "
        f"stopped; work {rerun_work:,} (in flight or ahead at the checkpoint)"
    )
    print(f"state size: {state_bytes:,} bytes of JSON at 90% ({early_bytes:,} at 10%)")
    check("resumed first item / fresh first item", t_resume / t_fresh, "<= 1.5", t_resume <= 1.5 * t_fresh)
    check("fast-forward / resumed first item", t_forward / t_resume, ">= 10", t_forward >= 10 * t_resume)
    results = {
        "items": n,
        "buffer": buffer,
        "checkpoint_at": k,
        "resume_first_item_s": t_resume,
        "fresh_first_item_s": t_fresh,
        "fast_forward_s": t_forward,
        "rerun_decode_calls": rerun_decode,
        "rerun_work_calls": rerun_work,
        "held_remade_on_resume": held,
        "state_bytes": state_bytes,
        "state_bytes_at_10_percent": early_bytes,
    }
    write("resume", results, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
