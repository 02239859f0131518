"""An async source: pass the async generator function, and every run calls it afresh."""

import trio

import snake


async def lines():
    for i in range(3):
        await trio.sleep(0.01)      # stands for reading from a socket
        yield f"line {i}"


def not_async():
    return ["line 0"]


stream = snake.from_async_iterable(lines).map(str.upper)
print(stream.to_list())             # ['LINE 0', 'LINE 1', 'LINE 2']
print(stream.to_list())             # the same again: snake called lines() once more

# snake calls the function when the pipeline opens, and checks what it returned then:
try:
    snake.from_async_iterable(not_async).to_list()
except TypeError as exc:
    print(f"TypeError: {exc}")
