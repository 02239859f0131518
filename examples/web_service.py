"""A trio-native web service: snake pipelines inside the request handlers of a
Starlette app, served by Hypercorn's trio worker.

    GET  /stream?n=N&start=S&batch=B&delay=D   NDJSON: {"i": i, "fib": fib(i % 20)} per line
    GET  /stream.bin?n=N&start=S&batch=B       binary frames of float32 image batches
    POST /preprocess  {"texts": [...]}         hashed n-gram features, on the shared pool
    GET  /debug/stats                          what is running: pipelines, tasks, workers

Each streaming response runs its own pipeline, opened inside the response: it lives
exactly as long as the HTTP response, and stops when the client goes away. CPU work
per request runs on one WorkerPool, started with the app and closed at shutdown.

A binary frame is: a 4-byte little-endian length h, h bytes of JSON header
{"dtype": "<f4", "shape": [rows, 3, 32, 32]}, then the array's bytes in C order.

    python examples/web_service.py --port 8000     # serve until Ctrl-C
    python examples/web_service.py --self-test     # serve on a free port, check, exit
"""

import argparse
import json
import math
import os
import re
import signal
import struct
import sys
import threading
import time
import zlib
from contextlib import asynccontextmanager
from functools import partial

import hypercorn.trio
import numpy as np
import trio
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import snake

# -- the work -------------------------------------------------------------------------


async def read_record(i, delay=0.0):
    await trio.sleep(delay)  # stands for a read from storage: IO, in trio tasks
    return i


def score(i):  # GIL-free Rust kernel: runs well in threads
    return i, snake.kernels.fib(i % 20)


MEAN = np.array([123.7, 116.3, 103.5], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([58.4, 57.1, 57.4], dtype=np.float32).reshape(3, 1, 1)


def image(i):  # decode + normalise one 3x32x32 image (NumPy)
    pixels = np.random.default_rng(i).integers(0, 256, size=(3, 32, 32), dtype=np.uint8)
    return (pixels.astype(np.float32) - MEAN) / STD


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


def frame(array):
    header = json.dumps({"dtype": array.dtype.str, "shape": list(array.shape)}).encode()
    return struct.pack("<I", len(header)) + header + array.tobytes()


def read_frames(body):
    """The arrays of a /stream.bin response body (what a client does)."""
    arrays, pos = [], 0
    while pos < len(body):
        (h,) = struct.unpack_from("<I", body, pos)
        header = json.loads(body[pos + 4 : pos + 4 + h])
        nbytes = math.prod(header["shape"]) * np.dtype(header["dtype"]).itemsize
        data = body[pos + 4 + h : pos + 4 + h + nbytes]
        arrays.append(np.frombuffer(data, header["dtype"]).reshape(header["shape"]))
        pos += 4 + h + nbytes
    return arrays


def ndjson(batch):
    return "".join(f'{{"i": {i}, "fib": {f}}}\n' for i, f in batch).encode()


# -- the service ----------------------------------------------------------------------


class BadRequest(ValueError):
    pass


def int_param(request, name, default, low, high):
    raw = request.query_params.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}={raw!r} must be an integer") from None
    if not low <= value <= high:
        raise BadRequest(f"{name}={raw!r} must be between {low} and {high}")
    return value


def float_param(request, name, default, low, high):
    raw = request.query_params.get(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name}={raw!r} must be a number") from None
    if not low <= value <= high:
        raise BadRequest(f"{name}={raw!r} must be between {low} and {high}")
    return value


@asynccontextmanager
async def cancel_on_disconnect(receive):
    """A cancel scope around the block, cancelled when the HTTP client goes away.

    Hypercorn does not cancel a handler whose client has left: it sends the ASGI
    message ``http.disconnect``. A task waits for it and cancels the scope.
    """

    async def watch(scope):
        while (await receive())["type"] != "http.disconnect":
            pass
        scope.cancel()

    error = None
    try:
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:
                nursery.start_soon(watch, scope)
                yield scope  # scope.cancelled_caught: the client left
            nursery.cancel_scope.cancel()  # stop watching
    except BaseExceptionGroup as group:
        if len(group.exceptions) > 1:
            raise
        error = group.exceptions[0]
    if error is not None:
        raise error  # the block's own exception, not a group of one


class PipelineResponse(Response):
    """Streams a pipeline's items, each encoded to bytes, as one HTTP response.

    The pipeline is opened inside this response's ASGI call: its nursery is nested
    in the request's, and a client that disconnects cancels it.
    """

    def __init__(self, service, stream, encode, media_type):
        self.service, self.stream, self.encode = service, stream, encode
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers()  # no content-length: the body is chunked

    async def __call__(self, scope, receive, send):
        async with cancel_on_disconnect(receive) as cancelled:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async with self.service.open(self.stream) as items:
                async for item in items:  # backpressure: one send at a time
                    await send({"type": "http.response.body", "body": self.encode(item), "more_body": True})
        if cancelled.cancelled_caught:
            self.service.disconnects += 1
        else:  # after the watcher: the server's http.disconnect follows it
            await send({"type": "http.response.body", "body": b"", "more_body": False})


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


class Service:
    def __init__(self, workers=2):
        self.workers = workers
        self.pool = None
        self.pipelines = 0  # pipelines open now
        self.disconnects = 0  # requests cut short by their client
        self.app = Starlette(
            routes=[
                Route("/stream", self.stream_ndjson),
                Route("/stream.bin", self.stream_frames),
                Route("/preprocess", self.preprocess, methods=["POST"]),
                Route("/debug/stats", self.stats),
            ],
            lifespan=self.lifespan,
        )

    @asynccontextmanager
    async def lifespan(self, app):
        async with snake.WorkerPool(self.workers) as pool:
            # Start the workers now, not on the first request.
            await snake.from_iterable(range(self.workers)).par_map(worker_pid, pool=pool).collect()
            pool_pids.update(pool.statistics().pids)
            self.pool = pool
            yield
            self.pool = None
        # Leaving the pool's block has stopped its worker processes.

    @asynccontextmanager
    async def open(self, stream):
        self.pipelines += 1
        try:
            async with stream.open() as items:
                yield items
        finally:  # open() has waited for every stage
            self.pipelines -= 1

    async def stream_ndjson(self, request):
        try:
            n = int_param(request, "n", 100, 0, 10_000_000)
            start = int_param(request, "start", 0, 0, 2**62)
            size = int_param(request, "batch", 64, 1, 1024)
            delay = float_param(request, "delay", 0.0, 0.0, 1.0)
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        stream = (
            snake.from_iterable(range(start, start + n))
            .par_then(partial(read_record, delay=delay), limit=16)
            .par_map(score, workers=2, backend="thread")
            .batch(size, collate=None)  # one HTTP body chunk per batch of lines
        )
        return PipelineResponse(self, stream, ndjson, "application/x-ndjson")

    async def stream_frames(self, request):
        try:
            n = int_param(request, "n", 100, 0, 10_000_000)
            start = int_param(request, "start", 0, 0, 2**62)
            size = int_param(request, "batch", 32, 1, 1024)
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        stream = (
            snake.from_iterable(range(start, start + n))
            .par_then(read_record, limit=16)
            .par_map(image, workers=2, backend="thread")
            .batch(size)  # (size, 3, 32, 32) float32, in a reused buffer
        )
        return PipelineResponse(self, stream, frame, "application/octet-stream")

    async def preprocess(self, request):
        try:
            body = await request.json()
        except ValueError as exc:
            return JSONResponse({"error": f"the body is not JSON: {exc}"}, status_code=400)
        texts = body.get("texts") if isinstance(body, dict) else None
        if not isinstance(texts, list) or not 1 <= len(texts) <= 10_000:
            return JSONResponse(
                {"error": 'the body must be {"texts": [1 to 10000 strings]}'}, status_code=400
            )
        for k, text in enumerate(texts):
            if not isinstance(text, str):
                return JSONResponse({"error": f"texts[{k}]={text!r} must be a string"}, status_code=400)
        stream = snake.from_iterable(texts).par_map(featurize, pool=self.pool).batch(64)
        features = []
        # Concurrent requests share the pool's workers: at most `workers` calls run at
        # once, the rest wait for a free worker (without it counting against timeouts).
        async with cancel_on_disconnect(request.receive) as cancelled, self.open(stream) as items:
            async for batch in items:
                features.extend(batch.tolist())
        if cancelled.cancelled_caught:  # the client left: nobody reads this
            self.disconnects += 1
            return Response(status_code=499)
        return JSONResponse({"dim": DIM, "features": features})

    async def stats(self, request):
        return JSONResponse(
            {
                "pipelines": self.pipelines,
                "disconnects": self.disconnects,
                "snake_tasks": snake_tasks(),
                "snake_threads": snake_threads(),
                "pool": {
                    "idle_workers": self.pool.statistics().idle_workers,
                    "running_workers": self.pool.statistics().running_workers,
                },
                "worker_pids": sorted(self.pool.statistics().pids),
            }
        )


def snake_tasks():
    """trio tasks running snake code now (a pipeline's stage tasks)."""
    count, todo = 0, [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        count += task.name.startswith("snake.")
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return count


def snake_threads():
    """Threads running snake code now (busy par_map(backend="thread") calls)."""
    package = os.path.dirname(snake.__file__)
    busy = 0
    for ident, top in sys._current_frames().items():
        if ident == threading.get_ident():
            continue
        frame_ = top
        while frame_ is not None and not frame_.f_code.co_filename.startswith(package):
            frame_ = frame_.f_back
        busy += frame_ is not None
    return busy


# -- running it -----------------------------------------------------------------------


def config(port):
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    return config


async def main(port):
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def until_signal():  # then a graceful shutdown: the pool closes
            async for _ in signals:
                return

        async with trio.open_nursery() as nursery:
            [url] = await nursery.start(
                partial(hypercorn.trio.serve, Service().app, config(port), shutdown_trigger=until_signal)
            )
            print(f"serving on {url}", flush=True)
    print("stopped; worker processes left:", processes_left(pool_pids), flush=True)


async def self_test():
    import httpx

    done = trio.Event()
    async with trio.open_nursery() as nursery:
        [url] = await nursery.start(
            partial(hypercorn.trio.serve, Service().app, config(0), shutdown_trigger=done.wait)
        )
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            stats = (await client.get("/debug/stats")).json()
            pids = stats["worker_pids"]
            print(f"started: {len(pids)} pool workers, {stats['pipelines']} pipelines")

            lines = (await client.get("/stream", params={"n": 500})).text.splitlines()
            got = [json.loads(line) for line in lines]
            want = [{"i": i, "fib": snake.kernels.fib(i % 20)} for i in range(500)]
            print(f"/stream: {len(got)} lines, as expected: {got == want}")

            body = (await client.get("/stream.bin", params={"n": 100, "batch": 32})).content
            frames = read_frames(body)
            same = np.array_equal(np.concatenate(frames), np.stack([image(i) for i in range(100)]))
            shapes = [f.shape for f in frames]
            print(f"/stream.bin: frames {shapes[0]} x{len(shapes) - 1} + {shapes[-1]}, as expected: {same}")

            texts = ["The quick brown fox", "jumps over the lazy dog", "snake pipelines"] * 20
            result = (await client.post("/preprocess", json={"texts": texts})).json()
            close = np.allclose(result["features"], [featurize(t) for t in texts], atol=1e-6)
            print(f"/preprocess: {len(result['features'])} x {result['dim']} features, as expected: {close}")

            bad = await client.get("/stream", params={"n": "ten"})
            print(f"/stream?n=ten: {bad.status_code} {bad.json()['error']}")

            # A client that leaves mid-stream: its pipeline stops, the pool stays.
            async with client.stream("GET", "/stream", params={"n": 10_000_000}) as response:
                async for _ in response.aiter_lines():
                    break
            left = time.monotonic()
            with trio.fail_after(5):
                while (stats := (await client.get("/debug/stats")).json())["pipelines"]:
                    await trio.sleep(0.01)
            print(
                f"client left: pipelines back to 0 in {time.monotonic() - left:.2f} s, "
                f"snake tasks {stats['snake_tasks']}, snake threads {stats['snake_threads']}"
            )
            print(f"pool survived: same workers {stats['worker_pids'] == pids}, {stats['pool']}")
        done.set()
    print("stopped; worker processes left:", processes_left(pool_pids))


if __name__ == "__main__":  # worker processes may re-import this file
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--self-test", action="store_true", help="serve, check the endpoints, exit")
    args = parser.parse_args()
    trio.run(self_test if args.self_test else partial(main, args.port))
