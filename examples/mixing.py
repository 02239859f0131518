"""Mixing two datasets by weight: what happens when the small one ends, a schedule of
weights over epochs, and a checkpoint in the middle of a restarted mix.
"""

import snake

web = snake.from_iterable([("web", i) for i in range(10_000)]).shuffle(256, seed=1)
books = snake.from_iterable([("books", i) for i in range(300)]).shuffle(300, seed=2)


def share_of_books(items):
    return sum(1 for source, _ in items if source == "books") / len(items)


# "drop" (the default): every item once; once books ends, only web is left
drop = snake.mix([web, books], weights=[0.7, 0.3], seed=0).to_list()
print(f"drop:    {len(drop)} items, {share_of_books(drop):.0%} books")

# "stop": the mix ends when books does, so the weights hold to the end
stop = snake.mix([web, books], weights=[0.7, 0.3], seed=0, on_exhausted="stop").to_list()
print(f"stop:    {len(stop)} items, {share_of_books(stop):.0%} books")

# "restart": books comes round again, in its next epoch, reshuffled
restart = snake.mix([web, books], weights=[0.7, 0.3], seed=0, on_exhausted="restart").take(5000)
items = restart.to_list()
print(f"restart: {len(items)} items, {share_of_books(items):.0%} books")
first = [i for source, i in items if source == "books"][:300]
again = [i for source, i in items if source == "books"][300:600]
print("books came round in a new order:", sorted(first) == sorted(again) and first != again)


# weights by epoch: more books in each epoch of repeat()
SCHEDULE = [[0.9, 0.1], [0.7, 0.3], [0.5, 0.5]]


def curriculum(epoch):
    return SCHEDULE[min(epoch, len(SCHEDULE) - 1)]


def with_epoch(item):
    return snake.current_epoch(), item


mixed = snake.mix([web, books], weights=curriculum, seed=0, on_exhausted="stop")
print(repr(mixed))
by_epoch = {}
for epoch, item in mixed.map(with_epoch).repeat(3):
    by_epoch.setdefault(epoch, []).append(item)
for epoch, seen in by_epoch.items():
    print(f"epoch {epoch}: weights {curriculum(epoch)}, {share_of_books(seen):.0%} books")

# a checkpoint in the middle, after books has come round: the resumed run goes on exactly
with restart.open_sync() as it:
    head = [next(it) for _ in range(2500)]
    state = it.state_dict()
with restart.open_sync(state_dict=state) as it:
    tail = list(it)
print("resumed exactly:", head + tail == items)
