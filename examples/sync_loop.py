"""A training-style loop: a plain ``for`` over a stream, no async code in sight.

Each example is made in a worker process (par_map, process backend), examples
are grouped into batches of 32, and a logistic-regression model takes one
gradient step per batch. trio runs the pipeline in a helper thread.
"""

import numpy as np

import snake

FEATURES = 64


def load_example(i):
    """Stands for reading and decoding one training example: CPU work."""
    rng = np.random.default_rng(i)
    x = rng.standard_normal(FEATURES).astype(np.float32)
    y = np.float32(x[:8].sum() > 0)
    return x, y


stream = (
    snake.from_iterable(range(4096))
    .par_map(load_example, workers=2)   # module-level function: it can be pickled
    .batch(32, drop_last=True)          # 32 (x, y) pairs -> (xs of shape (32, 64), ys of shape (32,))
)


def main():
    w = np.zeros(FEATURES, dtype=np.float32)
    steps = correct = seen = 0
    for x, y in stream:                          # the pipeline runs while we train
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        correct += int(((p > 0.5) == (y > 0.5)).sum())
        seen += len(y)
        w -= 0.5 * (x.T @ (p - y)) / len(y)      # one gradient step
        steps += 1
    print(f"trained on {steps} batches of shape {x.shape}")
    print(f"running accuracy: {correct / seen:.2f}")


if __name__ == "__main__":   # worker processes may re-import this file
    main()
