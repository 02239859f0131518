"""Which stage limits throughput? Run a pipeline, then print its bottleneck report."""

import trio

import snake


def decode(n: int) -> int:  # CPU: pure Python, in worker processes
    return n if n < 2 else decode(n - 1) + decode(n - 2)


async def read(i: int) -> int:  # IO: a wait per item, overlapped by par_then
    await trio.sleep(i % 3 * 0.01)
    return 20 + i % 5


stream = (
    snake.from_iterable(range(400))
    .par_then(read, limit=16)
    .par_map(decode, workers=2)
    .batch(8, collate=None)
)

if __name__ == "__main__":
    with stream.open_sync() as batches:
        for batch in batches:
            pass  # the training step would go here
        print(batches.report())
