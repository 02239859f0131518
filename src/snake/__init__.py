"""snake: structured-concurrency data loading for deep learning, on trio."""

from . import kernels as kernels
from ._embed.sync import SyncItems as SyncItems
from ._engine.epoch import current_epoch as current_epoch
from ._engine.epoch import rng as rng
from ._engine.errors import RemoteError as RemoteError
from ._engine.errors import WorkerCrashedError as WorkerCrashedError
from ._engine.run import Items as Items
from ._engine.stats import PipelineStatistics as PipelineStatistics
from ._engine.stats import StageStatistics as StageStatistics
from ._engine.util import publish as _publish
from ._ops.files import ParquetRowGroup as ParquetRowGroup
from ._ops.files import read_bytes as read_bytes
from ._ops.huggingface import HuggingFacePiece as HuggingFacePiece
from ._stream import Stream as Stream
from ._stream import chain as chain
from ._stream import from_async_iterable as from_async_iterable
from ._stream import from_files as from_files
from ._stream import from_huggingface as from_huggingface
from ._stream import from_iterable as from_iterable
from ._stream import from_parquet as from_parquet
from ._stream import mix as mix
from ._stream import zip as zip
from ._workers.pool import WorkerPool as WorkerPool
from ._workers.pool import WorkerPoolStatistics as WorkerPoolStatistics

__version__ = "0.1.0"

__all__ = [
    "HuggingFacePiece",
    "Items",
    "ParquetRowGroup",
    "PipelineStatistics",
    "RemoteError",
    "StageStatistics",
    "Stream",
    "SyncItems",
    "WorkerCrashedError",
    "WorkerPool",
    "WorkerPoolStatistics",
    "chain",
    "current_epoch",
    "from_async_iterable",
    "from_files",
    "from_huggingface",
    "from_iterable",
    "from_parquet",
    "kernels",
    "mix",
    "read_bytes",
    "rng",
    "zip",
]

_publish(__name__, globals())
