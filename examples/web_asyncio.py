"""An asyncio web service: snake pipelines in FastAPI request handlers, served by uvicorn.

    GET  /stream?n=N&start=S&batch=B&delay=D   NDJSON: {"i": i, "fib": fib(i % 20)} per line
    POST /preprocess  {"texts": [...]}         hashed n-gram features, on the shared pool
    GET  /debug/stats                          what is running: pipelines, tasks, workers

snake.aio runs the pipelines on uvicorn's asyncio loop, in trio guest mode. Each
streaming response opens its own pipeline inside the response's body: it lives as
long as the HTTP response and is cancelled when the client goes away; so is the
pipeline of a /preprocess request. Its CPU work runs on one WorkerPool, started with
the app and closed at shutdown.

    python examples/web_asyncio.py --port 8000     # serve until Ctrl-C (0: a free port)
    python examples/web_asyncio.py --self-test     # serve on a free port, check, exit
"""

import argparse
import asyncio
import math
import os
import re
import socket
import sys
import threading
import time
import zlib
from contextlib import asynccontextmanager
from functools import partial

import httpx
import numpy as np
import trio
import uvicorn
from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

import snake
import snake.aio

# -- the work -------------------------------------------------------------------------


async def read_record(i, delay=0.0):
    await trio.sleep(delay)  # stands for a read from storage: stages are trio code
    return i


def score(i):  # GIL-free Rust kernel: runs well in threads
    return i, snake.kernels.fib(i % 20)


DIM = 256
WORD = re.compile(r"\w+")


def featurize(text):  # pure-Python CPU work: needs worker processes
    """Hashed bag of the 3- to 5-character n-grams of each word, L2-normalised."""
    counts = np.zeros(DIM, dtype=np.float32)
    for word in WORD.findall(text.lower()):
        word = f"<{word}>"
        for n in (3, 4, 5):
            for k in range(len(word) - n + 1):
                counts[zlib.crc32(word[k : k + n].encode()) % DIM] += 1
    norm = math.sqrt(float(np.dot(counts, counts))) or 1.0
    return counts / np.float32(norm)


def worker_pid(_):
    return os.getpid()


def ndjson(batch):
    return "".join(f'{{"i": {i}, "fib": {f}}}\n' for i, f in batch).encode()


# -- the service ----------------------------------------------------------------------


#: Every worker process the pool has had (for the "left" count at shutdown).
pool_pids = set()


def processes_left(pids):
    """How many of ``pids`` still run."""
    left = 0
    for pid in pids:
        try:
            os.kill(pid, 0)
            left += 1
        except ProcessLookupError:
            pass
    return left


@asynccontextmanager
async def lifespan(app):
    # `async with`: at shutdown the pool waits for its workers to exit in a thread, not on
    # the loop's thread (a plain `with` would block the loop meanwhile).
    async with snake.WorkerPool(2) as pool:
        # Start the workers now, not on the first request.
        async with snake.aio.open(snake.from_iterable(range(2)).par_map(worker_pid, pool=pool)) as items:
            async for _ in items:
                pass
        pool_pids.update(pool.statistics().pids)
        app.state.pool = pool
        yield
    # Leaving the pool's block has stopped its worker processes.


app = FastAPI(lifespan=lifespan)


async def lines(stream):
    async with snake.aio.open(stream) as items:
        async for batch in items:
            yield ndjson(batch)


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that closes its body, and so the pipeline inside it, however the
    response ends.

    A client that leaves while the body is being iterated cancels the generator, and
    its pipeline, right there. If that happens in send() instead (the client stopped
    reading: a cancelled send, or an OSError from servers of ASGI spec 2.4), the
    generator would wait at its `yield` for the garbage collector.
    """

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


class Watch:
    client_left = False  # the client went away before the response


@asynccontextmanager
async def cancel_on_disconnect(request):
    """Cancels the block when the HTTP client goes away; `watch.client_left` then says so.

    uvicorn does not cancel a handler whose client has left (Starlette watches for it
    only while a StreamingResponse streams): it answers `receive()` with
    `http.disconnect`. A task waits for that and cancels the handler's task, as
    `asyncio.timeout()` does; the cancellation ends here, unless another came too.
    """
    task = asyncio.current_task()
    watch = Watch()

    async def watch_for_disconnect():
        while (await request.receive())["type"] != "http.disconnect":
            pass
        watch.client_left = True
        task.cancel()

    watcher = asyncio.create_task(watch_for_disconnect())
    try:
        yield watch
    except asyncio.CancelledError:
        if not watch.client_left or task.uncancel() > 0:
            raise  # not ours, or not only ours (the server is stopping, say)
    finally:
        watcher.cancel()


@app.get("/stream")
async def stream_ndjson(
    n: int = Query(100, ge=0, le=10_000_000),
    start: int = Query(0, ge=0, le=2**62),
    batch: int = Query(64, ge=1, le=1024),
    delay: float = Query(0.0, ge=0.0, le=1.0),
):
    stream = (
        snake.from_iterable(range(start, start + n))
        .par_then(partial(read_record, delay=delay), limit=16)
        .par_map(score, workers=2, backend="thread")
        .batch(batch, collate=None)  # one HTTP body chunk per batch of lines
    )
    # A client that leaves cancels the response, and so the pipeline inside `lines`.
    return ClosingStreamingResponse(lines(stream), media_type="application/x-ndjson")


class Texts(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=10_000)


@app.post("/preprocess")
async def preprocess(body: Texts, request: Request):
    stream = snake.from_iterable(body.texts).par_map(featurize, pool=app.state.pool).batch(64)
    features = []
    # The pipelines of all requests run in the loop's one trio runtime, so they share the
    # pool: together they run at most 2 calls at once, taking turns as workers come free.
    # A client that leaves cancels its pipeline: its calls on the workers are abandoned.
    async with cancel_on_disconnect(request) as watch, snake.aio.open(stream) as items:
        async for batch in items:
            features.extend(batch.tolist())
    if watch.client_left:
        return Response(status_code=499)  # nobody reads it
    return {"dim": DIM, "features": features}


@app.get("/debug/stats")
async def stats():
    runtime = snake.aio.statistics()
    pool = app.state.pool.statistics()
    return {
        "pipelines": runtime.pipelines,
        "trio_running": runtime.running,
        "snake_tasks": runtime.tasks,
        "snake_threads": snake_threads(),
        "pool": {"idle_workers": pool.idle_workers, "running_workers": pool.running_workers},
        "worker_pids": sorted(pool.pids),
    }


def snake_threads():
    """Threads other than the loop's running snake code now (busy par_map threads)."""
    package = os.path.dirname(snake.__file__)
    busy = 0
    for ident, top in sys._current_frames().items():
        if ident == threading.get_ident():
            continue
        frame = top
        while frame is not None and not frame.f_code.co_filename.startswith(package):
            frame = frame.f_back
        busy += frame is not None
    return busy


# -- running it -----------------------------------------------------------------------


def listen(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


def serve(port):
    sock, url = listen(port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    print(f"serving on {url}", flush=True)
    try:
        server.run(sockets=[sock])  # until SIGINT or SIGTERM; then the pool closes
    except KeyboardInterrupt:
        pass
    print("stopped; worker processes left:", processes_left(pool_pids), flush=True)


async def self_test():
    sock, url = listen(0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        stats = (await client.get("/debug/stats")).json()
        pids = stats["worker_pids"]
        print(f"started: {len(pids)} pool workers, {stats['pipelines']} pipelines")

        got = (await client.get("/stream", params={"n": 500, "batch": 7})).text.splitlines()
        want = [f'{{"i": {i}, "fib": {snake.kernels.fib(i % 20)}}}' for i in range(500)]
        print(f"/stream: {len(got)} lines, as expected: {got == want}")

        texts = ["The quick brown fox", "jumps over the lazy dog", "snake pipelines"] * 20
        result = (await client.post("/preprocess", json={"texts": texts})).json()
        same = result["features"] == [featurize(t).tolist() for t in texts]
        print(f"/preprocess: {len(result['features'])} x {result['dim']} features, as expected: {same}")

        bad = await client.get("/stream", params={"n": "ten"})
        print(f"/stream?n=ten: {bad.status_code} {bad.json()['detail'][0]['input']!r}")

        # A client that leaves mid-stream: its pipeline stops, the pool stays.
        async with client.stream("GET", "/stream", params={"n": 10_000_000}) as response:
            async for _ in response.aiter_lines():
                break
        left = time.monotonic()
        async with asyncio.timeout(5):
            while (stats := (await client.get("/debug/stats")).json())["pipelines"]:
                await asyncio.sleep(0.01)
        print(
            f"client left: pipelines back to 0 in {time.monotonic() - left:.2f} s, "
            f"snake tasks {stats['snake_tasks']}, snake threads {stats['snake_threads']}"
        )
        result = (await client.post("/preprocess", json={"texts": texts[:3]})).json()
        stats = (await client.get("/debug/stats")).json()
        print(f"pool survived: same workers {stats['worker_pids'] == pids}, {stats['pool']}")
    server.should_exit = True
    await serving
    print("stopped; worker processes left:", processes_left(pool_pids))


if __name__ == "__main__":  # worker processes may re-import this file
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--self-test", action="store_true", help="serve, check the endpoints, exit")
    args = parser.parse_args()
    if args.self_test:
        asyncio.run(self_test())
    else:
        serve(args.port)
