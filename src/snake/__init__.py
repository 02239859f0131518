"""snake: structured-concurrency data loading for deep learning, on trio."""

from . import kernels as kernels
from ._errors import RemoteError as RemoteError
from ._errors import WorkerCrashedError as WorkerCrashedError
from ._pool import WorkerPool as WorkerPool
from ._pool import WorkerPoolStatistics as WorkerPoolStatistics
from ._run import Items as Items
from ._stats import PipelineStatistics as PipelineStatistics
from ._stats import StageStatistics as StageStatistics
from ._stream import Stream as Stream
from ._stream import from_async_iterable as from_async_iterable
from ._stream import from_iterable as from_iterable
from ._sync import SyncItems as SyncItems

__version__ = "0.1.0"

__all__ = [
    "Items",
    "PipelineStatistics",
    "RemoteError",
    "StageStatistics",
    "Stream",
    "SyncItems",
    "WorkerCrashedError",
    "WorkerPool",
    "WorkerPoolStatistics",
    "from_async_iterable",
    "from_iterable",
    "kernels",
]
