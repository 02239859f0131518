"""The bottleneck report: which stage limits throughput, and why, from a snapshot.

Every stage of a pipeline is either working, waiting on the stage before it
(upstream), or waiting for room after it (downstream). In a steady pipeline the
slowest part works all the time, everything before it waits on downstream and
everything after it (the consumer included) waits on upstream. The report picks
the stage that was *loaded* the most (busy fraction, or busy slot fraction for
``par_then``/``par_map``), compares it with the consumer's own load (the part
of the time it did not wait for items), and says what to change.
"""

from __future__ import annotations

from .stats import PipelineStatistics, StageStatistics

#: A part that works less than this share of the time is not a bottleneck.
_IDLE = 0.5


def _pct(part: float, whole: float) -> str:
    if whole <= 0:
        return "-"
    return f"{100 * min(1.0, max(0.0, part / whole)):.0f} %"


def _load(st: StageStatistics, elapsed: float) -> float:
    """The share of the pipeline's time the stage worked (for a parallel stage, the
    share of its slots' time): a stage that finished early was not the limit."""
    if elapsed <= 0:
        return 0.0
    return min(1.0, st.busy_s / elapsed)


def _kind(st: StageStatistics) -> str:
    """The method name of a stage: ``par_map`` from ``#2 par_map(decode, workers=2)``."""
    text = st.name.split(" ", 1)[-1]
    return text.split("(", 1)[0]


def _advice(st: StageStatistics, owner: StageStatistics | None) -> str:
    kind = _kind(st)
    if kind == "par_map" and st.tuning is not None:
        return f"it tunes its workers (now {st.slots}) within the CPU budget: raise it with autotune(cpus=...), or make the function cheaper"
    if kind == "par_map":
        return f"raise workers (now {st.slots}), or make the function cheaper"
    if kind == "par_then" and st.tuning is not None:
        return f"it tunes its limit (now {st.slots}): make each call faster"
    if kind == "par_then":
        return f"raise limit (now {st.slots}), or make each call faster"
    if kind == "then":
        return "use par_then(..., limit=N) to overlap the calls"
    if owner is not None:
        return f"it runs inline in {owner.name.split(' ', 1)[0]}'s task: move the work into par_map(..., workers=N)"
    if st.name.startswith("#0 "):
        return "the source produces items no faster: read with par_then, or split the work after it into par_map"
    return "make its work cheaper, or move it into par_map"


def _why(st: StageStatistics, elapsed: float) -> str:
    busy = f"busy {_pct(st.busy_s, elapsed)}"
    if st.utilization is not None:
        busy = ("workers " if _kind(st) == "par_map" else "tasks ") + busy
    up = _pct(st.wait_upstream_s, elapsed)
    down = _pct(st.wait_downstream_s, elapsed)
    return f"{busy}, waited on upstream {up}, on downstream {down}"


def bottleneck(stats: PipelineStatistics) -> tuple[int | None, str]:
    """``(position, sentence)`` of the limiting part; position None is the consumer."""
    stages = stats.stages
    tasks = [st for st in stages if st.fused_into is None]
    if not tasks or stats.elapsed_s <= 0:
        return None, "nothing ran yet"
    e = stats.elapsed_s
    consumer_load = 1.0 - min(1.0, stats.consumer_wait_s / e)
    best = max(tasks, key=lambda st: _load(st, e))
    load = _load(best, e)
    if consumer_load >= load and consumer_load >= _IDLE:
        return None, (
            f"the consumer (your loop): it waited for items {_pct(stats.consumer_wait_s, stats.elapsed_s)} "
            "of the time, the pipeline is ahead of it; speed up the loop, or the pipeline has room to spare"
        )
    position = stages.index(best)
    # A task busy mostly running fused inline stages: name the heaviest of them.
    named, owner = best, None
    if best.utilization is None:
        inline = [st for st in stages if st.fused_into == position]
        own = best.busy_s - sum(st.busy_s for st in inline)
        heavy = max(inline, key=lambda st: st.busy_s, default=None)
        if heavy is not None and heavy.busy_s > own:
            named, owner = heavy, best
            position = stages.index(heavy)
    why = _why(best, e)
    if owner is not None:
        why = f"{_pct(named.busy_s, e)} of the time in it; its task is {why}"
    if load < _IDLE:
        why += " (no part is busy most of the time: the pipeline waits on something outside it)"
    return position, f"{named.name}: {why}; {_advice(named, owner)}"


def _stalls(stats: PipelineStatistics) -> list[str]:
    """A line for each stage that logged stall warnings (``stall_timeout``)."""
    lines = []
    for st in stats.stages:
        if st.stalls:
            now = f"; its oldest item in flight has run {st.oldest_item_s:.1f} s" if st.oldest_item_s else ""
            lines.append(f"stalled: {st.name}: {st.stalls} stall warning(s) on the 'snake' logger{now}")
    return lines


def _padding(stats: PipelineStatistics) -> list[str]:
    """A line for each ``pack()`` stage: the share of its rows that is padding."""
    return [
        f"padding: {st.name}: {100 * st.padding:.2f} % of the token slots of its {st.items_out:,} rows"
        for st in stats.stages
        if st.padding is not None
    ]


def _tuning(stats: PipelineStatistics) -> list[str]:
    """A line for each tuned stage (``workers="auto"``, ``limit="auto"``): its choice and why."""
    return [f"tuned: {st.name}: {st.tuning}" for st in stats.stages if st.tuning is not None]


def report(stats: PipelineStatistics) -> str:
    """The text of ``Items.report()``: the summary, the bottleneck, then a table."""
    e = stats.elapsed_s
    rate = stats.items_received / e if e > 0 else 0.0
    summary = (
        f"snake report: {stats.items_received:,} items in {e:.2f} s ({rate:,.0f} items/s); "
        f"the consumer waited for items {stats.consumer_wait_s:.2f} s ({_pct(stats.consumer_wait_s, e)})"
    )
    lines = [summary, f"bottleneck: {bottleneck(stats)[1]}"]
    lines += _stalls(stats)
    lines += _padding(stats)
    lines += _tuning(stats)
    lines += [f"plan: {note}" for note in stats.plan]
    width = max([len(st.name) for st in stats.stages] + [5])
    width = min(width, 60)
    lines.append(
        f"  {'stage':<{width}} {'items out':>10} {'busy':>6} {'wait up':>8} {'wait down':>10} "
        f"{'in flight':>9} {'buffered':>8}"
    )
    for st in stats.stages:
        name = st.name if len(st.name) <= width else st.name[: width - 3] + "..."
        busy = _pct(st.busy_s, e)
        if st.fused_into is None:
            up, down = _pct(st.wait_upstream_s, e), _pct(st.wait_downstream_s, e)
            flight, buffered = f"{st.in_flight}", f"{st.buffered}"
        else:
            up, down, flight, buffered = f"(in #{st.fused_into})", "", "", ""
        lines.append(
            f"  {name:<{width}} {st.items_out:>10,} {busy:>6} {up:>8} {down:>10} {flight:>9} {buffered:>8}"
        )
    lines.append(
        f"  {'consumer':<{width}} {stats.items_received:>10,} "
        f"{_pct(e - stats.consumer_wait_s, e):>6} {_pct(stats.consumer_wait_s, e):>8}"
    )
    return "\n".join(lines)
