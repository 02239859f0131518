"""Ordered by default; ordered=False yields each result as soon as it is ready."""

import trio

import snake


async def fetch(i):
    await trio.sleep((3 - i) * 0.1)   # the last item is the fastest
    return i


s = snake.from_iterable(range(4))
print(s.par_then(fetch, limit=4).to_list())                  # [0, 1, 2, 3]
print(s.par_then(fetch, limit=4, ordered=False).to_list())   # [3, 2, 1, 0]
