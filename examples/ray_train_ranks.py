"""A pipeline per training rank under Ray Train: each worker builds the same stream and
keeps its shard, from its rank and the world size; together the ranks see every item
exactly once per epoch.

The loop below is what a `TorchTrainer(train_loop, ...)` runs for PyTorch; here it runs
under Ray Train's framework-free `DataParallelTrainer`, with 2 workers on this machine.
"""

import json
import os
import tempfile

import ray.train
from ray.train import RunConfig, ScalingConfig
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

import snake


def train_loop(config):
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    stream = (
        snake.from_iterable(range(config["items"]))
        .shuffle(256, seed=config["seed"])        # the same seed on every rank
        .shard(rank=rank, world_size=world_size)  # then this rank's share
        .batch(16)
        .repeat(config["epochs"])
    )
    seen = []
    for batch in stream:
        seen.extend(int(x) for x in batch)        # a training step would go here
    # What this rank saw, for the check below (one machine here: a shared folder).
    with open(os.path.join(config["out"], f"rank-{rank}.json"), "w") as f:
        json.dump({"world_size": world_size, "items": seen}, f)


def main():
    with tempfile.TemporaryDirectory() as out:
        config = {"items": 1000, "epochs": 2, "seed": 0, "out": out}
        trainer = DataParallelTrainer(
            train_loop,
            train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=2),
            run_config=RunConfig(name="snake-ranks", storage_path=os.path.join(out, "results")),
        )
        trainer.fit()
        ranks = []
        for rank in range(2):
            with open(os.path.join(out, f"rank-{rank}.json")) as f:
                ranks.append(json.load(f)["items"])
    for rank, items in enumerate(ranks):
        print(f"rank {rank}: {len(items)} items over 2 epochs")
    every = sorted(ranks[0] + ranks[1])
    print("every item exactly once per epoch:", every == sorted(list(range(1000)) * 2))


if __name__ == "__main__":
    main()
