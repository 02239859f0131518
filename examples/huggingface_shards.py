"""A Hugging Face dataset read in parallel, and written back as Parquet shards.

``from_huggingface`` reads the dataset's own Arrow files: each record batch is read and
decoded (PNG bytes to PIL images, by the dataset's ``Features``) in a worker process.
``write_parquet`` writes the transformed rows as shards named as on the Hub, which
``datasets`` and ``from_huggingface`` read back with the same features.
"""

import io
import os
import tempfile

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # everything here is local

import datasets
from PIL import Image

import snake

FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["dark", "light"])})


def png(i):
    out = io.BytesIO()
    Image.new("L", (16, 16), 200 if i % 2 else 30).save(out, format="PNG")
    return out.getvalue()


def make_dataset(path, rows=600):
    """A small dataset written by `datasets` itself, in 3 Arrow files."""
    datasets.disable_progress_bars()
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": png(i), "path": None} for i in range(rows)], "label": [i % 2 for i in range(rows)]},
        features=FEATURES,
    )
    ds.save_to_disk(path, num_shards=3)


def thumbnail(row):
    """A decoded row (a PIL image) to a smaller one, labelled by its brightness."""
    small = row["image"].resize((8, 8))
    return {"image": small, "label": int(small.getpixel((0, 0)) > 128)}


def main():
    with tempfile.TemporaryDirectory() as root:
        make_dataset(os.path.join(root, "saved"))
        stream = snake.from_huggingface(os.path.join(root, "saved"), workers=2)
        print(repr(stream).replace(root, "ROOT"))
        first = stream.take(1).to_list()[0]
        print(f"first row: {type(first['image']).__name__} {first['image'].size}, label {first['label']}")

        out = os.path.join(root, "thumbnails")
        shards = stream.map(thumbnail).write_parquet(
            out, features=FEATURES, max_shard_size="4KB", row_group_rows=50, progress=False
        )
        print("shards:", [os.path.basename(p) for p in shards])

        back = snake.from_huggingface(out, workers=2).to_list()
        print(f"read back: {len(back)} rows, labels kept: {[r['label'] for r in back] == [i % 2 for i in range(600)]}")
        rank1 = snake.from_huggingface(out, workers=2).shard(rank=1, world_size=2)
        print(f"rank 1 of 2 reads {len(rank1.to_list())} rows")


if __name__ == "__main__":
    main()
