"""``snake demo --dataset``: the end-to-end path on data the demo makes itself.

Parquet shards of PNG images -> decode (Pillow) and augment with per-item randomness in
worker processes -> batches -> logistic regression in NumPy inside ``trio.run``, for a few
epochs. It checks itself (every row exactly once per epoch, the loss going down) and runs
the same decode and training as one sequential loop over ``pyarrow.dataset`` for a
baseline.

pyarrow and Pillow come with the ``data`` extra (``pip install 'snake[data]'``); they are
imported when the demo runs, never by ``import snake``.
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import attrs
import numpy as np
import trio

from .._engine.epoch import current_epoch, rng
from .._ops.files import ParquetRowGroup
from .._stream import Stream, from_parquet
from .._workers.pool import WorkerPool

#: Side of the stored square grayscale images, in pixels.
IMAGE = 64
#: Side of the random crop taken from each image (the augmentation).
CROP = 56
#: Side of the feature grid after average pooling the crop (CROP // POOL pixels per cell).
POOL = 8
FEATURES = POOL * POOL
#: Rows per Parquet row group in the generated shards.
ROW_GROUP = 128

_NEEDS = (
    "snake demo --dataset needs pyarrow and Pillow, which come with the 'data' extra: "
    "pip install 'snake[data]' (from a checkout: pip install '.[data]')"
)


def need_data_extra() -> None:
    """Raise a clear ImportError when pyarrow or Pillow is missing."""
    missing = []
    for module in ("pyarrow", "PIL"):
        try:
            __import__(module)
        except ImportError:
            missing.append("Pillow" if module == "PIL" else module)
    if missing:
        raise ImportError(f"{_NEEDS}; missing: {', '.join(missing)}")


# -- the data ---------------------------------------------------------------------------


def write_dataset(root: str, rows: int, *, files: int = 8, seed: int = 0) -> list[str]:
    """``files`` Parquet shards under ``root`` holding ``rows`` rows in all: an ``id``, a
    ``IMAGE``x``IMAGE`` grayscale PNG (Pillow), a caption and a ``label``.

    An image is noise plus a vertical brightness ramp; the label says whether its top is
    brighter than its bottom, which crops and horizontal flips leave as it is.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    gen = np.random.default_rng(seed)
    ramp = np.linspace(1.0, -1.0, IMAGE, dtype=np.float64)[:, None]
    paths = []
    bounds = [rows * k // files for k in range(files + 1)]
    for k in range(files):
        ids = np.arange(bounds[k], bounds[k + 1], dtype=np.int64)
        slope = gen.uniform(-12.0, 12.0, len(ids))
        images, captions = [], []
        for s in slope:
            pixels = 127.5 + s * ramp + gen.normal(0.0, 60.0, (IMAGE, IMAGE))
            img = np.clip(pixels, 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(img, mode="L").save(buf, format="PNG")
            images.append(buf.getvalue())
            captions.append(f"{'top' if s > 0 else 'bottom'}-lit, slope {s:+.1f}")
        table = pa.table(
            {
                "id": ids,
                "image": pa.array(images, type=pa.binary()),
                "caption": captions,
                "label": (slope > 0).astype(np.int64),
            }
        )
        path = os.path.join(root, f"part-{k:03d}.parquet")
        pq.write_table(table, path, row_group_size=ROW_GROUP)
        paths.append(path)
    return paths


# -- the per-row work (runs in worker processes) -----------------------------------------


def tag(group: ParquetRowGroup) -> tuple[int, ParquetRowGroup]:
    """Inline, inside ``repeat()``: attach the epoch, which worker processes cannot see."""
    return current_epoch(), group


def decode(row: dict[str, Any], epoch: int, seed: int = 0) -> tuple[np.ndarray, np.float32, np.int64]:
    """PNG bytes -> a random crop, maybe flipped, average-pooled to ``POOL``x``POOL``
    features. The randomness comes from ``snake.rng(id, seed, epoch)``: the same whichever
    worker runs the row, in whatever order, and different in every epoch."""
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(row["image"])), dtype=np.float32)
    gen = rng(int(row["id"]), seed=seed, epoch=epoch)
    top, left = gen.integers(0, IMAGE - CROP + 1, 2)
    crop = pixels[top : top + CROP, left : left + CROP]
    if gen.random() < 0.5:
        crop = crop[:, ::-1]
    cell = CROP // POOL
    feats = crop.reshape(POOL, cell, POOL, cell).mean(axis=(1, 3)).reshape(FEATURES)
    return (feats - 127.5) / 32.0, np.float32(row["label"]), np.int64(row["id"])


def decode_group(
    item: tuple[int, ParquetRowGroup], seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In a worker process: read one row group and decode its rows, returned as three
    arrays (features, labels, ids): a few large arrays travel back cheaper than many small ones."""
    epoch, group = item
    rows = [decode(row, epoch, seed) for row in group.read()]
    return (
        np.stack([r[0] for r in rows]),
        np.array([r[1] for r in rows], dtype=np.float32),
        np.array([r[2] for r in rows], dtype=np.int64),
    )


def unstack(arrays: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Iterable[tuple[Any, ...]]:
    """A decoded row group -> its rows, as ``(features, label, id)``."""
    return zip(*arrays)


def dataset_stream(
    paths: list[str], *, epochs: int, pool: WorkerPool, batch: int = 64, seed: int = 0
) -> Stream[Any]:
    """The demo's pipeline over the Parquet shards ``paths``, decoding on ``pool``'s
    workers, which stay up from one epoch to the next."""
    return (
        # row-group handles, in a new order every epoch; the workers read them
        from_parquet(paths, columns=["id", "image", "label"], shuffle_row_groups=True, seed=seed, read=False)
        .map(tag)
        .par_map(partial(decode_group, seed=seed), pool=pool)
        .flat_map(unstack)
        .shuffle(1024, seed=seed)  # rows too, differently in every epoch
        .batch(batch)  # -> (xs (batch, FEATURES), ys (batch,), ids (batch,))
        .repeat(epochs)
    )


# -- training ------------------------------------------------------------------------------


@attrs.define
class _Model:
    """Logistic regression trained by SGD, in NumPy."""

    w: np.ndarray = attrs.field(factory=lambda: np.zeros(FEATURES, dtype=np.float64))
    b: float = 0.0
    lr: float = 0.5

    def step(self, xs: np.ndarray, ys: np.ndarray) -> float:
        z = xs.astype(np.float64) @ self.w + self.b
        p = 1.0 / (1.0 + np.exp(-z))
        eps = 1e-7
        loss = float(-np.mean(ys * np.log(p + eps) + (1 - ys) * np.log(1 - p + eps)))
        g = (p - ys) / len(ys)
        self.w -= self.lr * (xs.T @ g)
        self.b -= self.lr * float(g.sum())
        return loss


@attrs.frozen
class EpochResult:
    """One epoch of the demo's training loop."""

    #: Rows trained on.
    rows: int
    #: Mean loss over the epoch's batches.
    mean_loss: float
    #: Whether every row of the dataset came exactly once.
    exactly_once: bool
    #: The first ids of the epoch: the order (different in every epoch).
    first_ids: tuple[int, ...]


@attrs.frozen
class DatasetResult:
    """What ``snake demo --dataset`` measured."""

    #: Rows in the dataset.
    rows: int
    epochs: tuple[EpochResult, ...]
    #: Seconds the pipeline's training loop took, from ``open()`` to the last batch.
    pipeline_s: float
    #: Seconds the same decoding and training took as one sequential loop.
    sequential_s: float
    #: Mean loss of the sequential loop's last epoch (the same model on the same rows).
    sequential_last_loss: float

    @property
    def loss_went_down(self) -> bool:
        return self.epochs[-1].mean_loss < self.epochs[0].mean_loss


async def train(
    stream: Stream[Any], rows: int, on_epoch: Callable[[int, EpochResult], None] | None = None
) -> tuple[list[EpochResult], float]:
    """Train on ``stream`` (batches of ``(xs, ys, ids)``), ending an epoch every ``rows`` rows."""
    model = _Model()
    epochs: list[EpochResult] = []
    losses: list[float] = []
    ids: list[np.ndarray] = []
    count = 0
    t0 = time.perf_counter()
    async with stream.open() as batches:
        async for xs, ys, batch_ids in batches:
            losses.append(model.step(xs, ys))
            ids.append(batch_ids)
            count += len(batch_ids)
            if count >= rows:
                order = np.concatenate(ids)
                once = bool(np.array_equal(np.sort(order), np.arange(rows)))
                result = EpochResult(count, float(np.mean(losses)), once, tuple(int(i) for i in order[:5]))
                epochs.append(result)
                if on_epoch is not None:
                    on_epoch(len(epochs) - 1, result)
                losses, ids, count = [], [], 0
    elapsed = time.perf_counter() - t0
    if count:  # a partial epoch: rows went missing
        epochs.append(EpochResult(count, float(np.mean(losses)), False, ()))
    return epochs, elapsed


def sequential(paths: list[str], *, epochs: int, batch: int = 64, seed: int = 0) -> tuple[float, float]:
    """The baseline: ``pyarrow.dataset`` scanned in file order, decoded and trained in one
    loop, with the same per-row augmentation and model. Returns (seconds, last epoch's mean loss)."""
    import pyarrow.dataset as ds

    model = _Model()
    last = math.nan
    t0 = time.perf_counter()
    for epoch in range(epochs):
        losses = []
        for record_batch in ds.dataset(paths, format="parquet").to_batches(columns=["id", "image", "label"]):
            decoded = [decode(row, epoch, seed) for row in record_batch.to_pylist()]
            for lo in range(0, len(decoded), batch):
                part = decoded[lo : lo + batch]
                xs = np.stack([d[0] for d in part])
                ys = np.array([d[1] for d in part], dtype=np.float32)
                losses.append(model.step(xs, ys))
        last = float(np.mean(losses))
    return time.perf_counter() - t0, last


async def run_dataset_demo(
    paths: list[str],
    *,
    rows: int,
    epochs: int = 3,
    pool: WorkerPool,
    seed: int = 0,
    on_epoch: Callable[[int, EpochResult], None] | None = None,
) -> DatasetResult:
    """Train on the ``rows`` rows of the shards ``paths`` (from :func:`write_dataset`)
    through the pipeline on ``pool``, then run the sequential baseline."""
    stream = dataset_stream(paths, epochs=epochs, pool=pool, seed=seed)
    results, pipeline_s = await train(stream, rows, on_epoch)
    sequential_s, last = await trio.to_thread.run_sync(lambda: sequential(paths, epochs=epochs, seed=seed))
    return DatasetResult(rows, tuple(results), pipeline_s, sequential_s, last)
