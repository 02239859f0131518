"""Row groups read in worker processes: ``from_parquet(read=False)`` hands out small
row-group handles, and the workers read and decode them, so the images never pass
through the main process. ``filters`` leaves out rows (and whole row groups, by their
statistics); ``shard()`` right after the source reads only this rank's rows.
"""

import os
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import snake

SIDE = 32


def write_dataset(root, files=4, rows=1000):
    """Each file: 800 "train" rows, then 200 "val" rows; row groups of 100 rows."""
    rng = np.random.default_rng(0)
    for k in range(files):
        labels = rng.integers(0, 10, rows)
        # an image of label k is brighter for larger k: noise plus 20 * k
        images = [(rng.integers(0, 50, (SIDE, SIDE)) + 20 * y).astype(np.uint8).tobytes() for y in labels]
        split = ["train"] * (rows * 4 // 5) + ["val"] * (rows // 5)
        table = pa.table({"image": images, "label": labels, "split": split})
        pq.write_table(table, os.path.join(root, f"part-{k}.parquet"), row_group_size=100)


def decode_group(group):
    """In a worker process: read one row group (this rank's rows of it) and decode each row."""
    out = []
    for row in group.read():
        image = np.frombuffer(row["image"], dtype=np.uint8).reshape(SIDE, SIDE)
        out.append((image.astype(np.float32) / 255, row["label"]))
    return out


def make_stream(root):
    return (
        snake.from_parquet(
            os.path.join(root, "*.parquet"),
            columns=["image", "label"],
            filters=[("split", "=", "train")],   # the "val" row groups are never read
            shuffle_row_groups=True,             # a new order each epoch, the same on every rank
            seed=0,
            read=False,                          # yield row-group handles, not rows
        )
        .shard()                                 # RANK/WORLD_SIZE: this rank's rows only
        .par_map(decode_group, workers=2)        # read and decode in worker processes
        .flat_map(list)                          # one item per row again
        .batch(64)
    )


def main():
    with tempfile.TemporaryDirectory() as root:
        write_dataset(root)
        handles = snake.from_parquet(os.path.join(root, "*.parquet"), filters=[("split", "=", "train")], read=False)
        print(f"row groups to read: {len(handles.to_list())} of 40")
        rows, brightness = 0, np.zeros(10)
        counts = np.zeros(10)
        for images, labels in make_stream(root).repeat(2):
            rows += len(labels)
            np.add.at(brightness, labels, images.mean(axis=(1, 2)))
            np.add.at(counts, labels, 1)
        print(f"{rows} training rows in 2 epochs")
        mean = brightness / counts
        print(f"brightness grows with the label: {bool(np.all(np.diff(mean) > 0))}")


if __name__ == "__main__":
    main()
