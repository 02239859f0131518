"""Batching: arrays stacked into reused buffers, padded sequences, length buckets."""

import numpy as np

import snake


def load(i):
    """Stands for decoding one example: an image, a label and a caption."""
    image = np.full((3, 8, 8), i, dtype=np.uint8)
    return {"image": image, "label": i % 10, "caption": f"example {i}"}


# batch(): each dict field is collated on its own.
first = None
for b in snake.from_iterable(range(100)).map(load).batch(32):
    if first is None:
        first = b  # keeping a batch is safe: its buffer is not reused while we hold it
    print(b["image"].shape, b["image"].dtype, b["label"][:4], b["caption"][:2])
assert (first["image"][:, 0, 0, 0] == np.arange(32)).all()

# pad_batch(): variable-length sequences into (batch, lengths).
tokens = [np.arange(1, n + 1) for n in (3, 5, 2, 7)]
for batch, lengths in snake.from_iterable(tokens).pad_batch(2, pad_value=-1, pad_to_multiple=4):
    print(batch.tolist(), lengths.tolist())

# bucket_by_length(): short and long sequences go to different batches.
stream = snake.from_iterable(tokens * 2).bucket_by_length([4], [2, 2])
print([batch.shape for batch, lengths in stream])
