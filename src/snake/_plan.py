"""The plan: what runs when a stream is opened, and why.

A ``Stream`` keeps its stages as they were written. :func:`plan` turns them into the
stages that run, and notes each choice it made, so that ``statistics().plan`` and the
report can say which fast paths a pipeline takes and why one is not taken:

- ``on_error(...)`` is bound to the stage just before it;
- ``shard()`` right after ``from_parquet``, ``from_huggingface`` or ``from_files`` is done by the source
  itself: each rank reads only the row groups (files) that hold its share;
- a process ``par_map`` right before ``batch(n)`` with the default collate has its
  workers write their results straight into the batch's shared-memory slabs, when it
  keeps its order, does not skip errors and ``/dev/shm`` can be written; otherwise a
  note says which condition failed;
- the inner streams of ``chain``, ``zip``, ``mix`` and ``repeat`` are planned alike.

Planning reads nothing and runs nothing, so a stream is planned every time it opens
(and at build time, where a method needs to know the stream's length).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from ._engine.spec import InlineSpec, Spec, known_length
from ._ops.combine import Chain, Mix, Repeat, Zip
from ._ops.files import FromFiles, FromParquet, SourceShard
from ._ops.huggingface import FromHuggingFace
from ._ops.inline import Batch, OnError
from ._ops.order import Shard
from ._ops.parallel import ParMap, ParThen
from ._ops.tune import AUTO, Autotune, TuneSettings
from ._workers import shm

__all__ = ["Plan", "plan"]


@attrs.frozen
class Plan:
    """The stages that run, and a sentence for each choice made on the way."""

    specs: tuple[Spec, ...]
    notes: tuple[str, ...] = ()

    def length(self) -> int | None:
        """How many items the stream produces, if that is known before it runs."""
        return known_length(self.specs)


def plan(written: Sequence[Spec]) -> Plan:
    """Plan the stages ``written`` (a stream's, as its methods built them)."""
    notes: list[str] = []
    specs = _bind_errors(list(written))
    specs = _bind_tuning(specs, notes)
    specs = [_plan_children(spec, notes) for spec in specs]
    specs = _push_shard(specs, notes)
    specs = _fuse_batches(specs, notes)
    return Plan(tuple(specs), tuple(notes))


def _bind_errors(specs: list[Spec]) -> list[Spec]:
    out: list[Spec] = []
    for spec in specs:
        if isinstance(spec, OnError):
            out[-1] = attrs.evolve(out[-1], errors=spec.policy)  # type: ignore[misc]
        else:
            out.append(spec)
    return out


def _tuned(spec: Spec) -> bool:
    return (isinstance(spec, ParMap) and spec.workers == AUTO) or (
        isinstance(spec, ParThen) and spec.limit == AUTO
    )


def _bind_tuning(specs: list[Spec], notes: list[str]) -> list[Spec]:
    """Hand ``autotune(...)`` (the last one written wins), the count of tuned stages and
    the workers of fixed ``par_map`` stages to each tuned stage; drop the markers."""
    marks = [s for s in specs if isinstance(s, Autotune)]
    specs = [s for s in specs if not isinstance(s, Autotune)]
    tuned = [s for s in specs if _tuned(s)]
    if not tuned:
        if marks:
            notes.append(
                f"{marks[-1].describe()} has no stage to tune: no par_map(workers='auto') or par_then(limit='auto')"
            )
        return specs
    mark = marks[-1] if marks else Autotune()
    fixed = sum(
        int(s.workers)
        for s in specs
        if isinstance(s, ParMap) and s.workers != AUTO and s.backend != "ray" and s.pool is None
    )
    settings = TuneSettings(
        cpus=mark.cpus,
        memory=mark.memory_budget,
        fixed_workers=fixed,
        stages=len(tuned),
        maps=sum(1 for s in tuned if isinstance(s, ParMap)),
    )
    return [attrs.evolve(s, tune=settings) if _tuned(s) else s for s in specs]  # type: ignore[misc]


def _plan_children(spec: Spec, notes: list[str]) -> Spec:
    """``chain``/``zip``/``mix``/``repeat`` with their inner streams planned."""

    def inner(specs: Sequence[Spec], where: str) -> tuple[Spec, ...]:
        p = plan(specs)
        notes.extend(f"{where}: {note}" for note in p.notes)
        return p.specs

    if isinstance(spec, Repeat):
        return attrs.evolve(spec, inner=inner(spec.inner, "in repeat()"))
    if isinstance(spec, (Chain, Zip, Mix)):
        name = type(spec).__name__.lower()
        inputs = tuple(inner(s, f"in {name}() input {i}") for i, s in enumerate(spec.inputs))
        return attrs.evolve(spec, inputs=inputs)
    return spec


def _push_shard(specs: list[Spec], notes: list[str]) -> list[Spec]:
    if len(specs) < 2 or not isinstance(specs[1], Shard):
        return specs
    source, shard = specs[0], specs[1]
    if not isinstance(source, (FromParquet, FromFiles, FromHuggingFace)) or source.shard is not None:
        return specs
    what = "files" if isinstance(source, FromFiles) else "row groups"
    pushed = attrs.evolve(source, shard=SourceShard(shard.rank, shard.world_size, shard.equal))
    notes.append(
        f"{shard.describe()} is done by {source.describe()}: rank {shard.rank} reads only the "
        f"{what} that hold its contiguous share"
    )
    return [pushed, *specs[2:]]


def _fuse_batches(specs: list[Spec], notes: list[str]) -> list[Spec]:
    out = list(specs)
    for i, spec in enumerate(specs):
        if not isinstance(spec, ParMap) or spec.backend != "process":
            continue
        j = i + 1
        while j < len(specs) and isinstance(specs[j], InlineSpec) and not isinstance(specs[j], Batch):
            j += 1
        batch = specs[j] if j < len(specs) else None
        if not isinstance(batch, Batch) or batch.collate != "default":
            continue
        why = _why_not_slabs(spec, j - i - 1)
        pair = f"#{i} {spec.describe()} then #{j} {batch.describe()}"
        if why is None:
            out[i] = attrs.evolve(spec, slabs=True)
            notes.append(f"{pair}: the workers write their results into the batch's shared memory")
        else:
            notes.append(f"{pair}: the main process copies the results into the batch ({why})")
    return out


def _why_not_slabs(spec: ParMap, between: int) -> str | None:
    """Why a process par_map cannot write into the batch after it; None if it can."""
    if between:
        return f"{between} stage(s) between them"
    if not spec.ordered:
        return "par_map(ordered=False)"
    if spec.errors.mode == "skip":
        return "on_error('skip') on the par_map"
    if not shm.available():
        return f"{shm.SHM_DIR} cannot be written"
    return None
