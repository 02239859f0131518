"""Timeouts: par_then cancels a call that takes too long; par_map kills the worker
process of an item that takes too long, runs the item again (retries), then fails."""

import time

import trio

import snake


async def fetch(i):
    await trio.sleep(5 if i == 3 else 0.01)   # request 3 gets no answer in time
    return i


def decode(i):
    if i == 7:
        time.sleep(60)                        # stuck: a minute on one item
    return i * 10


if __name__ == "__main__":
    stream = (
        snake.from_iterable(range(10))
        .par_then(fetch, limit=16, timeout=0.5)   # a request still running after 0.5 s is cancelled
        .on_error("skip")                         # ...and its item dropped
        .par_map(decode, workers=2, timeout=1, retries=1)
    )
    try:
        stream.to_list()
    except TimeoutError as exc:
        print(f"TimeoutError: {exc}")
