"""Pack tokenized documents into rows of 16 tokens, then batch the rows."""

import numpy as np

import snake


def tokenize(i: int) -> dict[str, np.ndarray]:
    """Stands for a tokenizer: document i has 3 + 5 * i % 11 tokens."""
    tokens = np.arange(100 * i, 100 * i + 3 + 5 * i % 11, dtype=np.int32)
    return {"tokens": tokens, "loss_mask": np.ones(len(tokens), dtype=np.int32)}


stream = snake.from_iterable(range(40)).map(tokenize).pack(16, buffer=4).batch(8)

with stream.open_sync() as batches:
    for k, batch in enumerate(batches):
        if k == 0:
            print(sorted(batch))
            print(batch["tokens"].shape, batch["tokens"].dtype)
            r = int(batch["tokens_segment_ids"].max(axis=1).argmax())  # the row of most documents
            print("segments:", batch["tokens_segment_ids"][r].tolist())
            print("positions:", batch["tokens_positions"][r].tolist())
    padding = batches.statistics().stage(2).padding
print(f"{k + 1} batches; padding {padding:.1%}")
