import snake, trio

def fib(n):                      # CPU: pure Python, so it needs processes
    return n if n < 2 else fib(n - 1) + fib(n - 2)

async def slow_read(i):          # IO: overlap the waits
    await trio.sleep(i % 3 * 0.01)
    return 20 + i % 10

stream = (
    snake.from_iterable(range(100))
    .par_then(slow_read, limit=16)             # up to 16 concurrent trio tasks
    .par_map(fib, workers=2)                   # worker processes (trio-parallel)
)
# the same CPU step with the Rust kernel, GIL released, in threads:
#   .par_map(snake.kernels.fib, workers=2, backend="thread")

async def main():
    async with stream.open() as items:
        async for x in items:
            print(x)

if __name__ == "__main__":
    trio.run(main)
