"""Concurrency that tunes itself: limit="auto" and workers="auto" within a budget."""

import trio

import snake


async def fetch(i: int) -> int:
    await trio.sleep(0.02)  # a request that takes 20 ms
    return i


def checksum(i: int) -> int:
    return sum(range(i % 1000))  # some CPU work, in a worker process


stream = (
    snake.from_iterable(range(2000))
    .par_then(fetch, limit="auto")  # starts at 16 requests at once, tunes itself
    .par_map(checksum, workers="auto")  # the workers that pay, within the budget
    .autotune(cpus=2, memory_budget=64 << 20)  # the budget of both: 2 cores, 64 MB
)


async def main() -> None:
    async with stream.open() as items:
        total = 0
        async for x in items:
            total += x
        stats = items.statistics()
    print(repr(stream))
    print("all 2000 items:", total == sum(checksum(i) for i in range(2000)))
    fetching, computing = stats.stage(1), stats.stage(2)
    print("par_then chose a higher limit than 16:", fetching.slots > 16)
    print("par_map kept within 2 CPUs:", 1 <= computing.slots <= 2)
    for st in (fetching, computing):
        print(f"{st.name}: {st.tuning}")


if __name__ == "__main__":
    trio.run(main)
