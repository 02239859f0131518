"""par_map on threads: for code that releases the GIL, such as snake.kernels."""

import snake

if __name__ == "__main__":
    stream = snake.from_iterable(range(25, 33)).par_map(snake.kernels.fib, workers=2, backend="thread")
    print(stream)
    print(stream.to_list())     # fib(25) ... fib(32), in input order
