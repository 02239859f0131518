"""Parquet shards of PNG images -> decode (Pillow) and augment in worker processes ->
batches -> a NumPy training loop in trio.run, for three epochs, each shuffled
differently and reproducibly.
"""

import io
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import trio
from PIL import Image

import snake

FEATURES = 16


def write_dataset(root, files=4, rows=512):
    """Four Parquet shards; each row holds a 4x4 grayscale PNG (Pillow), a caption and a label."""
    rng = np.random.default_rng(0)
    true_w = rng.standard_normal(FEATURES)
    for k in range(files):
        pixels = rng.integers(0, 256, (rows, FEATURES), dtype=np.uint8)
        y = (to_features(pixels) @ true_w > 0).astype(np.int64)
        table = pa.table({
            "image": [png(p.reshape(4, 4)) for p in pixels],
            "caption": [f"{'bright' if p.mean() > 127 else 'dark'} {p.argmax()}" for p in pixels],
            "label": y,
        })
        pq.write_table(table, os.path.join(root, f"part-{k}.parquet"), row_group_size=128)


def png(image):
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def to_features(pixels):
    return (pixels.astype(np.float32) - 127.5) / 73.9  # about zero mean, unit variance


def tag(pair):
    """Inline, inside repeat(): the epoch is known here, not in a worker process."""
    index, row = pair
    return snake.current_epoch(), index, row


def decode(item):
    """In a worker process: bytes -> features, plus noise that depends only on
    (seed, epoch, index), whichever worker runs the item."""
    epoch, index, row = item
    x = to_features(np.asarray(Image.open(io.BytesIO(row["image"]))).reshape(FEATURES))
    noise = snake.rng(index, seed=1, epoch=epoch).normal(0.0, 0.05, FEATURES)
    return (x + noise).astype(np.float32), np.float32(row["label"])


def make_stream(root, epochs):
    return (
        # row groups in a new order every epoch, the same order on every rank
        snake.from_parquet(
            os.path.join(root, "*.parquet"), columns=["image", "label"], shuffle_row_groups=True, seed=0
        )
        .shard()                      # this rank's rows (RANK/WORLD_SIZE), read at the source
        .shuffle(1024, seed=0)        # rows too, reshuffled from (seed, epoch) in every epoch
        .enumerate()
        .map(tag)
        .par_map(decode, workers=2)
        .batch(64, drop_last=True)    # -> (xs of shape (64, 16), ys of shape (64,))
        .repeat(epochs)
    )


async def train(stream, batches_per_epoch):
    w = np.zeros(FEATURES, dtype=np.float32)
    losses, rows, step = [], 0, 0
    start = time.perf_counter()
    async with stream.open() as batches:
        async for xs, ys in batches:
            p = 1.0 / (1.0 + np.exp(-(xs @ w)))
            losses.append(float(-np.mean(ys * np.log(p + 1e-7) + (1 - ys) * np.log(1 - p + 1e-7))))
            w -= 0.5 * xs.T @ (p - ys) / len(ys)
            rows += len(ys)
            step += 1
            if step % batches_per_epoch == 0:
                epoch = step // batches_per_epoch - 1
                print(f"epoch {epoch}: mean loss {np.mean(losses[-batches_per_epoch:]):.3f}")
    print(f"{rows / (time.perf_counter() - start):,.0f} rows/s")
    return losses


def main():
    with tempfile.TemporaryDirectory() as root:
        write_dataset(root)
        losses = trio.run(train, make_stream(root, epochs=3), 2048 // 64)
    print(f"{len(losses)} steps; loss went down: {np.mean(losses[-32:]) < np.mean(losses[:32])}")


if __name__ == "__main__":
    main()
