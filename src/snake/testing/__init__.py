"""snake.testing: Hypothesis strategies and laws for your own pipelines and stages.

- :func:`pipelines`: a strategy of random stage chains over your items and functions,
  each drawn :class:`Pipeline` knowing its sequential reference and its laws;
- :func:`check_stage` (and :func:`check_stage_async` inside trio): your stage function
  checked against those laws in every placement, through ``open()`` and ``open_sync()``;
- :func:`check_resume` (and :func:`check_resume_async`): your pipeline checkpointed with
  ``items.state_dict()`` and resumed, against its uninterrupted run;
- :func:`assert_no_leaks`: fails if a thread, process, shared-memory file or trio task
  outlives the block.

Needs Hypothesis: ``pip install 'snake[testing]'``.
"""

try:
    import hypothesis as _hypothesis
except ImportError as _exc:  # pragma: no cover - tested in a subprocess without hypothesis
    raise ImportError(
        "snake.testing needs Hypothesis, an optional dependency of snake: "
        "pip install 'snake[testing]' (or pip install hypothesis)"
    ) from _exc

from ._check import check_stage as check_stage
from ._check import check_stage_async as check_stage_async
from ._leaks import LeakCheck as LeakCheck
from ._leaks import assert_no_leaks as assert_no_leaks
from ._pipelines import Pipeline as Pipeline
from ._pipelines import pipelines as pipelines
from ._resume import check_resume as check_resume
from ._resume import check_resume_async as check_resume_async

del _hypothesis

__all__ = [
    "LeakCheck",
    "Pipeline",
    "assert_no_leaks",
    "check_resume",
    "check_resume_async",
    "check_stage",
    "check_stage_async",
    "pipelines",
]
