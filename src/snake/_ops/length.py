"""How many items a stream produces, when that is known before it runs.

Used by ``shard(equal=True)`` (which needs it), ``progress()`` (its default total)
and the sized sources made of other streams (``chain``, ``zip``, ``mix``, ``repeat``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._engine.spec import SourceSpec, Spec
from .buffer import Prefetch
from .inline import Enumerate, Map, Skip, Take
from .observe import Monitor, Progress
from .order import Shard, Shuffle
from .parallel import ParMap, ParThen
from .source import FromIterable

#: Stages that pass every item on, one out for one in.
_ONE_TO_ONE = (Enumerate, Shuffle, Prefetch, Monitor, Progress)


def known_length(specs: Sequence[Spec]) -> int | None:
    """How many items ``specs`` produce, if that is known before running them; else None.

    Sized sources (a ``range``, a list, Parquet files, ...) know their count, and
    one-to-one stages (map, par_map, shuffle, monitor, progress, ...) keep it;
    ``filter``, ``flat_map``, ``batch`` and ``on_error("skip")`` make it unknown.
    Sizing Parquet files reads their footers, and may raise what reading them raises.
    """
    n: int | None = None
    for i, spec in enumerate(specs):
        if i == 0:
            assert isinstance(spec, SourceSpec)
            n = source_length(spec)
        elif isinstance(spec, (Map, ParMap, ParThen)):
            if spec.errors.mode != "raise":
                return None
        elif isinstance(spec, Take):
            n = None if n is None else min(n, spec.n)
        elif isinstance(spec, Skip):
            n = None if n is None else max(0, n - spec.n)
        elif isinstance(spec, Shard):
            if n is not None:
                stop = n if spec.total is None else n // spec.world_size * spec.world_size
                n = len(range(spec.rank, stop, spec.world_size))
        elif not isinstance(spec, _ONE_TO_ONE):
            return None
        if n is None:
            return None
    return n


def source_length(spec: SourceSpec) -> int | None:
    if isinstance(spec, FromIterable):
        try:
            return len(spec.iterable)  # type: ignore[arg-type]
        except Exception:
            return None
    length: Any = getattr(spec, "length", None)
    if length is None:
        return None
    result = length()
    assert result is None or isinstance(result, int)
    return result
