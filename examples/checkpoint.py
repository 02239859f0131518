"""Checkpoint a training loop, lose the process, resume it.

Every 10 steps the loop saves its model, its optimizer's state, its step and the
pipeline's position (``batches.state_dict()``) to one file, written atomically. The first run is killed
with SIGKILL at step 35, as a preempted job is, between two checkpoints. The second
run resumes from the file: it goes on from step 30, and over the two runs every
example reaches the model exactly once (the 5 steps after the checkpoint are redone),
in the same order: the model ends exactly as an uninterrupted run's.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile

import snake

EXAMPLES = 1000


def augment(i):
    noise = snake.rng(i, seed=0).normal()  # per-example randomness, the same on resume
    return i, noise


def stream():
    return (
        snake.from_iterable(range(EXAMPLES))
        .shuffle(100, seed=0)
        .par_map(augment, workers=2)
        .batch(10, collate=None)
    )


def train(path, die_at):
    weight, momentum, step, seen, state = 0.0, 0.0, 0, [], None
    if os.path.exists(path):
        with open(path) as f:
            ckpt = json.load(f)
        weight, momentum, step = ckpt["model"], ckpt["optimizer"], ckpt["step"]
        seen, state = ckpt["seen"], ckpt["data"]
    with stream().open_sync(state_dict=state) as batches:
        for batch in batches:
            grad = sum(noise for _, noise in batch)  # stands for a training step
            momentum = 0.9 * momentum + grad
            weight -= 0.01 * momentum
            seen += [i for i, _ in batch]
            step += 1
            if step % 10 == 0:
                ckpt = {
                    "model": weight,
                    "optimizer": momentum,
                    "step": step,
                    "seen": seen,  # only for this example's check
                    "data": batches.state_dict(),
                }
                with open(path + ".tmp", "w") as f:
                    json.dump(ckpt, f)
                os.replace(path + ".tmp", path)  # a crash never leaves half a checkpoint
            if step == die_at:
                os.kill(os.getpid(), signal.SIGKILL)
    print(json.dumps({"step": step, "seen": seen, "model": weight}))


if __name__ == "__main__":   # worker processes may re-import this file
    if len(sys.argv) == 3:   # the training job itself
        train(sys.argv[1], int(sys.argv[2]))
        sys.exit(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "checkpoint.json")
        job = [sys.executable, os.path.abspath(__file__), path]
        first = subprocess.run([*job, "35"])
        print(f"first run: killed by signal {-first.returncode} at step 35")
        with open(path) as f:
            print(f"checkpoint: step {json.load(f)['step']}")
        second = subprocess.run([*job, "0"], capture_output=True, text=True, check=True)
        done = json.loads(second.stdout)
        print(f"second run: resumed, ended at step {done['step']}")
        print(f"every example exactly once: {sorted(done['seen']) == list(range(EXAMPLES))}")
        other = os.path.join(tmp, "uninterrupted.json")
        whole = subprocess.run([*job[:-1], other, "0"], capture_output=True, text=True, check=True)
        same = json.loads(whole.stdout)["model"] == done["model"]
        print(f"the same model as an uninterrupted run: {same}")
