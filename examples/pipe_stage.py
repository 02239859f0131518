"""pipe(): a stage of your own, written as a generator over the stage's input."""

import json

import trio

import snake


def pack(tokens, length=8):
    """Pack documents (lists of tokens) into rows of exactly `length` tokens."""
    row = []
    for doc in tokens:
        row.extend(doc)
        while len(row) >= length:
            yield row[:length]
            row = row[length:]


async def dedupe(items):
    """An async generator: it may await (a lookup, a rate limit) between items."""
    seen = set()
    async for x in items:
        await trio.lowlevel.checkpoint()
        if x not in seen:
            seen.add(x)
            yield x


class RunningMean:
    """A stage with state_dict()/load_state_dict(): checkpoints resume from its state."""

    def __init__(self):
        self.n, self.total = 0, 0.0

    def __call__(self, items):
        for x in items:
            self.n += 1
            self.total += x
            yield round(self.total / self.n, 2)

    def state_dict(self):
        return {"n": self.n, "total": self.total}

    def load_state_dict(self, state):
        self.n, self.total = state["n"], state["total"]


docs = snake.from_iterable([[1, 2, 3], [4, 5], [6, 7, 8, 9, 10], [11], [12, 13, 14, 15, 16, 17]])
print(docs.pipe(pack).to_list())  # two full rows; the 17th token makes no full row
print(snake.from_iterable([3, 1, 3, 2, 1, 4]).pipe(dedupe).to_list())

means = snake.from_iterable(range(1, 10_001)).pipe(RunningMean())
with means.open_sync() as items:
    first = [next(items) for _ in range(5000)]
    state = json.loads(json.dumps(items.state_dict()))  # plain: it goes through JSON
entry = state["stages"][1]  # RunningMean's state at an input at most a few chunks back
print(first[-2:], "state:", sorted(entry["state"]), "taken at input <= 5000:", entry["resume"] <= 5000)
with means.open_sync(state_dict=state) as items:
    print("resumed:", next(items), next(items))  # 2501.0 2501.5, as without the stop
