"""examples/web_service.py as a real server: Hypercorn's trio worker in a process of its
own on 127.0.0.1, driven over HTTP by httpx.

Checked: the streamed content, exactly, against references computed here from the
documented formulas; 400s that quote the bad value; a client that leaves mid-request
stops its pipeline within 1 s (no pipeline, snake task, busy thread or busy worker
left) while the shared WorkerPool keeps serving; 50 concurrent streaming clients each
get all their data while the server's memory stays within the bound of
docs/concurrency.md; a client that stops reading costs no CPU and no growing memory.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import numpy as np
import psutil
import pytest
import trio
from conftest import REPO

import snake
from snake._engine.chan import CHANNEL_CHUNKS
from snake._engine.util import CHUNK_CAP

ROOT = REPO
EXAMPLE = ROOT / "examples" / "web_service.py"
#: The spec: "no task, thread or worker job is left running within 1 s".
CLEANUP_S = 1.0
#: Start-up and shutdown, generous: other test runs share the 2 cores.
START_S = 60.0


class Server(NamedTuple):
    url: str
    proc: subprocess.Popen[str]
    ps: psutil.Process
    workers: list[int]  # the pool's worker pids at start-up


def live_children(ps: psutil.Process) -> list[psutil.Process]:
    out = []
    for p in ps.children(recursive=True):
        try:
            # snake's worker launcher is not a worker: it only forks them.
            if p.status() != psutil.STATUS_ZOMBIE and p.name() != "snake-launcher":
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def worker_pids(server: Server) -> list[int]:
    return sorted(p.pid for p in live_children(server.ps))


def rss(server: Server) -> int:
    """Resident memory of the server and its worker processes, in bytes."""
    total = server.ps.memory_info().rss
    for p in live_children(server.ps):
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--port", "0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        assert proc.stdout is not None
        ps = psutil.Process(proc.pid)
        workers: list[int] = []
        try:
            ready, _, _ = select.select([proc.stdout], [], [], START_S)
            line = proc.stdout.readline() if ready else ""
            if not line.startswith("serving on http://127.0.0.1:"):
                log.seek(0)
                pytest.fail(f"the server did not start: {line!r}\n{log.read()}")
            url = line.split()[-1]
            workers = sorted(p.pid for p in live_children(ps))
            yield Server(url, proc, ps, workers)
        finally:
            everyone = [ps, *live_children(ps)]
            proc.send_signal(signal.SIGINT)  # the example shuts down gracefully on it
            try:
                out, _ = proc.communicate(timeout=START_S)
            except subprocess.TimeoutExpired:
                for p in everyone:
                    p.kill()
                raise
            log.seek(0)
            assert proc.returncode == 0, f"the server exited with {proc.returncode}\n{out}\n{log.read()}"
            assert "stopped; worker processes left: 0" in out, out
            # Closing the pool at shutdown stopped its worker processes: no orphans.
            psutil.wait_procs(everyone, timeout=5)
            left = [p.pid for p in everyone if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
            assert not left, f"processes left after the server stopped: {left}"


@asynccontextmanager
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as c:
        yield c


async def stats(c: httpx.AsyncClient) -> dict[str, Any]:
    r = await c.get("/debug/stats")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def clean(s: dict[str, Any]) -> bool:
    return (
        s["pipelines"] == 0
        and s["snake_tasks"] == 0
        and s["snake_threads"] == 0
        and s["pool"]["running_workers"] == 0
    )


async def wait_until_clean(c: httpx.AsyncClient, since: float) -> dict[str, Any]:
    """Poll /debug/stats until nothing runs; fail if it takes more than CLEANUP_S."""
    while True:
        s = await stats(c)
        elapsed = time.monotonic() - since
        if clean(s):
            assert elapsed <= CLEANUP_S, f"clean only after {elapsed:.2f} s: {s}"
            print(f"\nclean {elapsed * 1000:.0f} ms after the client left")
            return s
        assert elapsed <= CLEANUP_S, f"still running {elapsed:.2f} s after the client left: {s}"
        await trio.sleep(0.01)


async def wait_for(c: httpx.AsyncClient, ok: Any, what: str, within: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        s = await stats(c)
        if ok(s):
            return s
        assert time.monotonic() < deadline, f"never saw {what}: {s}"
        await trio.sleep(0.01)


# -- references, from the formulas the example documents --------------------------------


def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def ndjson_reference(start: int, n: int) -> list[dict[str, int]]:
    return [{"i": i, "fib": fib(i % 20)} for i in range(start, start + n)]


MEAN = np.array([123.7, 116.3, 103.5], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([58.4, 57.1, 57.4], dtype=np.float32).reshape(3, 1, 1)


def image_reference(i: int) -> np.ndarray[Any, Any]:
    pixels = np.random.default_rng(i).integers(0, 256, size=(3, 32, 32), dtype=np.uint8)
    return (pixels.astype(np.float32) - MEAN) / STD  # type: ignore[no-any-return]


def features_reference(text: str, dim: int = 256) -> list[float]:
    counts = [0] * dim
    for word in re.findall(r"\w+", text.lower()):
        marked = "<" + word + ">"
        for n in (3, 4, 5):
            for k in range(len(marked) - n + 1):
                counts[zlib.crc32(marked[k : k + n].encode()) % dim] += 1
    norm = math.sqrt(sum(c * c for c in counts)) or 1.0
    return [c / norm for c in counts]


def decode_frames(body: bytes) -> list[np.ndarray[Any, Any]]:
    """4-byte little-endian header length, JSON header {dtype, shape}, C-order bytes."""
    arrays, pos = [], 0
    while pos < len(body):
        (h,) = struct.unpack_from("<I", body, pos)
        header = json.loads(body[pos + 4 : pos + 4 + h])
        assert set(header) == {"dtype", "shape"}, header
        nbytes = math.prod(header["shape"]) * np.dtype(header["dtype"]).itemsize
        data = body[pos + 4 + h : pos + 4 + h + nbytes]
        assert len(data) == nbytes, f"truncated frame at byte {pos}"
        arrays.append(np.frombuffer(data, dtype=header["dtype"]).reshape(header["shape"]))
        pos += 4 + h + nbytes
    return arrays


# -- content ----------------------------------------------------------------------------


async def test_ndjson_stream_is_the_sequential_reference(server: Server) -> None:
    async with client(server) as c:
        r = await c.get("/stream", params={"n": 3000, "start": 123, "batch": 7})
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-ndjson"
        assert "content-length" not in r.headers  # streamed, chunked
        assert [json.loads(line) for line in r.text.splitlines()] == ndjson_reference(123, 3000)
        assert r.text.endswith("\n")

        r = await c.get("/stream", params={"n": 0})
        assert (r.status_code, r.content) == (200, b"")

        r = await c.get("/stream")  # n=100, start=0 by default
        assert [json.loads(line) for line in r.text.splitlines()] == ndjson_reference(0, 100)


async def test_binary_frames_decode_to_the_reference_arrays(server: Server) -> None:
    async with client(server) as c:
        r = await c.get("/stream.bin", params={"n": 70, "start": 11, "batch": 32})
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/octet-stream"
        frames = decode_frames(r.content)
    assert [f.shape for f in frames] == [(32, 3, 32, 32), (32, 3, 32, 32), (6, 3, 32, 32)]
    assert all(f.dtype == np.dtype("<f4") for f in frames)
    rows = np.concatenate(frames)
    want = np.stack([image_reference(i) for i in range(11, 81)])
    assert np.array_equal(rows, want)


async def test_preprocess_returns_the_features_of_each_text_in_order(server: Server) -> None:
    texts = ["The quick brown fox", "", "jumps over the lazy dog", "Ünïcode wörds, too!", "ab"] * 30
    async with client(server) as c:
        r = await c.post("/preprocess", json={"texts": texts})
        assert r.status_code == 200, r.text
        body = r.json()
    assert body["dim"] == 256
    got = np.array(body["features"])
    want = np.array([features_reference(t) for t in texts])
    assert got.shape == (150, 256)
    assert np.array_equal(got != 0, want != 0)  # the same buckets
    assert np.allclose(got, want, rtol=1e-6, atol=1e-7)  # float32 on the server
    assert not got[1].any()  # no words, no features


@pytest.mark.parametrize(
    ("method", "path", "request_args", "error"),
    [
        ("GET", "/stream", {"params": {"n": "ten"}}, "n='ten' must be an integer"),
        ("GET", "/stream", {"params": {"n": "-1"}}, "n='-1' must be between 0 and 10000000"),
        ("GET", "/stream", {"params": {"batch": "0"}}, "batch='0' must be between 1 and 1024"),
        ("GET", "/stream", {"params": {"delay": "soon"}}, "delay='soon' must be a number"),
        ("GET", "/stream", {"params": {"delay": "nan"}}, "delay='nan' must be between 0.0 and 1.0"),
        ("GET", "/stream.bin", {"params": {"batch": "4096"}}, "batch='4096' must be between 1 and 1024"),
        ("GET", "/stream.bin", {"params": {"start": "1.5"}}, "start='1.5' must be an integer"),
        ("POST", "/preprocess", {"content": b"{not json"}, "the body is not JSON: Expecting property name"),
        (
            "POST",
            "/preprocess",
            {"json": {"texts": "abc"}},
            'the body must be {"texts": [1 to 10000 strings]}',
        ),
        ("POST", "/preprocess", {"json": {"texts": []}}, 'the body must be {"texts": [1 to 10000 strings]}'),
        ("POST", "/preprocess", {"json": {"texts": ["a", 5]}}, "texts[1]=5 must be a string"),
    ],
)
async def test_bad_requests_get_400_quoting_the_value(
    server: Server, method: str, path: str, request_args: dict[str, Any], error: str
) -> None:
    async with client(server) as c:
        r = await c.request(method, path, **request_args)
        assert r.status_code == 400, r.text
        body = r.json()
        assert list(body) == ["error"] and body["error"].startswith(error), body
        assert clean(await stats(c))  # nothing was started


# -- a client that leaves ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "how"),
    [
        # The server is blocked sending: the client stopped reading, socket buffers are full.
        ("/stream", {"n": 10_000_000}, "stalled"),
        # The server is busy producing while the client reads.
        ("/stream", {"n": 10_000_000, "batch": 1}, "reading"),
        # The pipeline waits in its IO stage (par_then tasks sleeping).
        ("/stream", {"n": 1000, "delay": 1.0}, "waiting"),
        ("/stream.bin", {"n": 10_000_000, "batch": 8}, "stalled"),
    ],
)
async def test_disconnect_mid_stream_stops_the_pipeline_and_keeps_the_pool(
    server: Server, path: str, params: dict[str, Any], how: str
) -> None:
    async with client(server) as c, client(server) as watcher:
        before = await stats(watcher)
        assert clean(before), before
        async with c.stream("GET", path, params=params) as r:
            assert r.status_code == 200
            chunks = r.aiter_bytes()  # kept: a dropped iterator closes the response
            if how == "stalled":
                await chunks.__anext__()
                await trio.sleep(0.5)
            elif how == "reading":
                received = 0
                async for chunk in chunks:
                    received += len(chunk)
                    if received > 200_000:
                        break
            await wait_for(watcher, lambda s: s["pipelines"] == 1 and s["snake_tasks"] > 0, "the pipeline")
            left = time.monotonic()
        # Leaving the block closed the connection: the server's pipeline must stop.
        after = await wait_until_clean(watcher, left)
        # Counted just after the pipeline closed (a /debug/stats read can fall in between).
        after = await wait_for(
            watcher, lambda s: s["disconnects"] == before["disconnects"] + 1, "the disconnect counted", 1.0
        )
        # The shared pool was not touched: the same worker processes, still serving.
        assert after["worker_pids"] == server.workers == worker_pids(server)
        r2 = await c.post("/preprocess", json={"texts": ["still serving"]})
        assert r2.status_code == 200
        assert np.allclose(r2.json()["features"], [features_reference("still serving")], atol=1e-7)
        assert worker_pids(server) == server.workers


async def test_disconnect_mid_preprocess_stops_its_workers_and_the_pool_serves_on(server: Server) -> None:
    # About 4 MB of text: seconds of pure-Python work for 2 worker processes.
    words = ["alpha", "beta", "gamma", "delta", "pipeline", "snake", "trio", "worker"]
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=3000)) for _ in range(200)]
    async with client(server) as c, client(server) as watcher:
        before = await stats(watcher)
        assert clean(before), before
        async with trio.open_nursery() as nursery:

            async def post() -> None:
                await c.post("/preprocess", json={"texts": texts})
                raise AssertionError("the request finished before the client left")

            nursery.start_soon(post)
            busy = await wait_for(
                watcher,
                lambda s: s["pipelines"] == 1 and s["pool"]["running_workers"] > 0,
                "a running /preprocess",
            )
            nursery.cancel_scope.cancel()  # the client goes away mid-request
        left = time.monotonic()
        await wait_until_clean(watcher, left)
        # Counted just after the pipeline closed (a /debug/stats read can fall in between).
        await wait_for(
            watcher, lambda s: s["disconnects"] == before["disconnects"] + 1, "the disconnect counted", 1.0
        )
        # The busy workers were killed (the job is abandoned) and no CPU work goes on.
        children = live_children(server.ps)
        t0 = cpu_s(children)
        await trio.sleep(0.5)
        assert cpu_s(children) - t0 < 0.1, "worker processes still computing after the client left"
        assert busy["pool"]["running_workers"] <= 2
        assert len(children) <= 2
        # The pool survives the cancelled request: the next one is served, by at most
        # 2 workers (the killed ones replaced), and the right result comes back.
        r = await c.post("/preprocess", json={"texts": ["after the disconnect", "ok"]})
        assert r.status_code == 200, r.text
        want = [features_reference("after the disconnect"), features_reference("ok")]
        assert np.allclose(r.json()["features"], want, atol=1e-7)
        assert len(worker_pids(server)) <= 2
        assert clean(await stats(watcher))


async def test_concurrent_preprocess_requests_take_turns_on_the_pool(server: Server) -> None:
    batches = [[f"request {k} text {j}" for j in range(40)] for k in range(5)]
    results: dict[int, Any] = {}
    most_workers = 0
    async with client(server) as c:

        async def post(k: int) -> None:
            r = await c.post("/preprocess", json={"texts": batches[k]})
            assert r.status_code == 200, r.text
            results[k] = r.json()["features"]

        async with trio.open_nursery() as nursery:
            for k in range(5):
                nursery.start_soon(post, k)
            while len(results) < 5:
                most_workers = max(most_workers, len(live_children(server.ps)))
                await trio.sleep(0.005)
        assert clean(await stats(c))
    for k, texts in enumerate(batches):
        assert np.allclose(results[k], [features_reference(t) for t in texts], atol=1e-7)
    assert most_workers <= 2  # the pool's 2 workers, never more


# -- load and memory --------------------------------------------------------------------

CLIENTS = 50
ITEMS = 2000  # per client


def stream_bound_bytes() -> int:
    """The most a /stream pipeline can hold, from docs/concurrency.md's formula.

    The pipeline: from_iterable(range(n)).par_then(read_record, limit=16)
    .par_map(score, workers=2, backend="thread").batch(64, collate=None), read by open().
    With C = CHUNK_CAP = 1024 and K = CHANNEL_CHUNKS = 1:

    - #0 from_iterable: M0 = (K + 1)·C = 2048 ints.
    - #1 par_then(limit=16): P = min(C, max(256, 4·16)) = 256, B1 = P − 1 + 2·16 − 1 = 286,
      M1 = B0 + (K + 2)·B1 = 1024 + 858 = 1882 ints.
    - #2 par_map(workers=2) with batch(64) fused (W = 64): P·W ≤ max(W, C) = 1024 items,
      units u ≤ ⌈B1 / 2⌉ = 143, so its largest chunk is B2 = 1024 − 1 + (3·2 − 1)·143 = 1738
      records (counted in items, the partial batch included), and
      M2 = B1 + (K + 2)·B2 = 286 ints + 5214 records.
    - the consumer, open(): B2 = 1738 records.

    So 4216 ints and 6952 records. An int is 28 bytes, a record (i, fib) is a 2-tuple
    of 56 bytes and two ints; each sits in a list slot of 8 bytes.
    """
    c, k, limit, w, size = CHUNK_CAP, CHANNEL_CHUNKS, 16, 2, 64
    p1 = min(c, max(256, 4 * limit))
    b1 = p1 - 1 + 2 * limit - 1
    u = min(c, -(-b1 // w))
    b2 = max(size, c) - 1 + (3 * w - 1) * u
    ints = (k + 1) * c + (c + (k + 2) * b1) + b1
    records = (k + 2) * b2 + b2
    assert (ints, records) == (4216, 6952)
    return ints * (28 + 8) + records * (56 + 28 + 28 + 8)


async def test_50_concurrent_streaming_clients_get_their_data_in_bounded_memory(server: Server) -> None:
    per_pipeline = stream_bound_bytes()  # 0.99 MB
    # What else a streaming request holds, besides the pipeline's items: ~30 trio tasks,
    # the connection's Hypercorn and h11 state and buffers, one encoded batch (2 KB), and
    # the stacks of its 2 worker threads: 256 KB is several times what those take.
    per_request = 256 * 1024
    # Allocator slack: pymalloc arenas and glibc's per-thread arenas (up to 100 threads
    # run par_map calls), which free memory back to the OS in their own time.
    slack = 32 * 2**20
    bound = CLIENTS * (per_pipeline + per_request) + slack  # ≈ 94 MB

    all_open = trio.Event()
    first_lines = 0
    got: dict[int, list[dict[str, int]]] = {}
    async with client(server) as c, client(server) as watcher:
        assert clean(await stats(watcher))
        await c.get("/stream", params={"n": 5000})  # warm up: threads, caches
        baseline = peak = rss(server)

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss(server))
                await trio.sleep(0.02)

        async def one_client(k: int) -> None:
            nonlocal first_lines
            lines = []
            # delay: each pipeline takes >= ITEMS * 0.04 / 16 = 5 s, so all are open at once
            # however loaded the machine (2000 short lines alone would fit in socket buffers,
            # and a pipeline could finish before the last client started).
            params = {"n": ITEMS, "start": k * ITEMS, "delay": 0.04}
            async with c.stream("GET", "/stream", params=params) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    lines.append(json.loads(line))
                    if len(lines) == 1:
                        first_lines += 1
                        if first_lines == CLIENTS:
                            all_open.set()
                        await all_open.wait()  # every client is mid-stream at once
            got[k] = lines

        async with trio.open_nursery() as sampler:
            sampler.start_soon(sample)
            async with trio.open_nursery() as nursery:
                for k in range(CLIENTS):
                    nursery.start_soon(one_client, k)
                await all_open.wait()
                during = await stats(watcher)
            sampler.cancel_scope.cancel()
        assert during["pipelines"] == CLIENTS, during
        assert clean(await wait_for(watcher, clean, "the end of the load"))

    for k in range(CLIENTS):
        assert got[k] == ndjson_reference(k * ITEMS, ITEMS), f"client {k} got wrong data"
    growth = peak - baseline
    print(
        f"\n{CLIENTS} clients x {ITEMS} items: RSS {baseline / 2**20:.1f} MB -> peak "
        f"{peak / 2**20:.1f} MB (+{growth / 2**20:.1f} MB; bound {bound / 2**20:.1f} MB)"
    )
    assert growth <= bound, f"server memory grew by {growth / 2**20:.1f} MB, bound {bound / 2**20:.1f} MB"


async def test_a_client_that_stops_reading_costs_no_cpu_and_no_growing_memory(server: Server) -> None:
    async with client(server) as c, client(server) as watcher:
        async with c.stream("GET", "/stream", params={"n": 10_000_000}) as r:
            chunks = r.aiter_bytes()  # kept: a dropped iterator closes the response
            await chunks.__anext__()
            await trio.sleep(1.0)  # the socket buffers fill up; backpressure stops the pipeline
            rss0, cpu0 = rss(server), cpu_s([server.ps])
            await trio.sleep(2.0)
            rss1, cpu1 = rss(server), cpu_s([server.ps])
            s = await stats(watcher)
            assert s["pipelines"] == 1 and s["snake_threads"] == 0, s
        await wait_until_clean(watcher, time.monotonic())
    print(f"\nstalled client, 2 s: server CPU {cpu1 - cpu0:.3f} s, RSS {(rss1 - rss0) / 2**20:+.2f} MB")
    # Unbounded, the server would produce tens of thousands of lines a second, using a
    # whole core and megabytes a second. Blocked, it holds at most one pipeline's bound.
    assert cpu1 - cpu0 < 0.2, f"the server used {cpu1 - cpu0:.2f} s of CPU while the client read nothing"
    assert rss1 - rss0 < stream_bound_bytes() + 4 * 2**20, f"memory grew by {(rss1 - rss0) / 2**20:.1f} MB"


# -- a failing pipeline -----------------------------------------------------------------


def load_example() -> Any:
    # Imported by name, as worker processes import it to unpickle its functions.
    examples = str(Path(EXAMPLE).parent)
    if examples not in sys.path:
        sys.path.append(examples)
    return importlib.import_module("web_service")


def fail_at_3000(i: int) -> tuple[int, int]:
    if i == 3000:
        raise ValueError("record 3000 is corrupt")
    return i, i


async def test_a_pipeline_error_mid_stream_cuts_the_response_and_logs_the_original_exception(
    caplog: pytest.LogCaptureFixture, no_leaks: None
) -> None:
    # In this process, so that the route can be added and the log read.
    import hypercorn.trio
    from starlette.routing import Route

    ws = load_example()
    service = ws.Service(workers=1)

    async def failing(request: Any) -> Any:
        stream = snake.from_iterable(range(10_000)).map(fail_at_3000).batch(64, collate=None)
        return ws.PipelineResponse(service, stream, ws.ndjson, "application/x-ndjson")

    service.app.router.routes.append(Route("/fail", failing))
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        [url] = await nursery.start(
            functools.partial(hypercorn.trio.serve, service.app, ws.config(0), shutdown_trigger=done.wait)
        )
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            lines = []
            with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
                async with c.stream("GET", "/fail") as r:
                    assert r.status_code == 200  # sent before the pipeline ran
                    async for line in r.aiter_lines():
                        lines.append(json.loads(line))
            # Never mistaken for a complete stream: no final chunk, and no line past the error.
            assert lines == [{"i": i, "fib": i} for i in range(len(lines))]
            assert len(lines) < 3000
            assert clean(await stats(c))
        done.set()
    errors = [r.exc_info[1] for r in caplog.records if r.exc_info and r.exc_info[1] is not None]
    assert len(errors) == 1, caplog.records
    assert type(errors[0]) is ValueError  # the original exception, not a group
    assert "snake: raised in stage #1 map(fail_at_3000) on item index 3000" in errors[0].__notes__
