import snake

stream = snake.from_iterable(range(100)).map(str).batch(10)
print(stream)          # from_iterable(<range len=100>).map(str).batch(10)
for batch in stream:   # runs the pipeline in a helper thread
    print(batch)
