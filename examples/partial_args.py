"""Extra arguments for a stage's function: functools.partial, which the repr shows."""

import functools

import trio

import snake


async def fetch(url, timeout):
    with trio.fail_after(timeout):
        await trio.sleep(0.01)      # stands for an HTTP request
        return f"<page of {url}>"


urls = [f"https://example.com/{i}" for i in range(3)]
stream = snake.from_iterable(urls).par_then(functools.partial(fetch, timeout=5), limit=8)
print(stream)
for page in stream:
    print(page)
