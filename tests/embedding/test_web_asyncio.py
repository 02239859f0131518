"""examples/web_asyncio.py as a real server: uvicorn + FastAPI on asyncio, in a process of
its own on 127.0.0.1, driven over HTTP by httpx.

Checked: the streamed NDJSON, exactly, against lines computed here; 422s that quote the
bad value; a client that leaves mid-stream (reading, or after it stopped reading) stops
its pipeline within 1 s: no pipeline, trio task, busy thread or busy worker left, while
the shared WorkerPool keeps serving with the same worker processes; so does a client
that leaves mid-/preprocess (its busy workers replaced); concurrent clients each get
exactly their data; SIGINT shuts the server down with the pool's workers gone. And, in
this process, with a server of ASGI spec 2.4 (a disconnect surfaces in send() as an
OSError): the response still closes its pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any, NamedTuple

import httpx
import numpy as np
import psutil
import pytest
from conftest import REPO
from starlette.requests import ClientDisconnect

import snake
import snake.aio

ROOT = REPO
EXAMPLE = ROOT / "examples" / "web_asyncio.py"
#: The spec: the pipeline of a client that left is cancelled within 1 s.
CLEANUP_S = 1.0
#: Start-up and shutdown, generous: other test runs share the 2 cores.
START_S = 60.0


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("web_asyncio_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_example()


class Server(NamedTuple):
    url: str
    proc: subprocess.Popen[str]
    ps: psutil.Process


def live_children(ps: psutil.Process) -> set[int]:
    out = set()
    for p in ps.children(recursive=True):
        try:
            # snake's worker launcher is not a worker: it only forks them.
            if p.status() != psutil.STATUS_ZOMBIE and p.name() != "snake-launcher":
                out.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def start_server() -> Server:
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_S)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("serving on http://127.0.0.1:"):
        proc.kill()
        raise AssertionError(f"the server did not start: {line!r} {proc.communicate()[1]}")
    url = line.split()[-1]
    deadline = time.monotonic() + START_S
    while True:  # the lifespan (pool start) runs before uvicorn accepts requests
        try:
            httpx.get(f"{url}/debug/stats", timeout=5).raise_for_status()
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the server does not answer"
            time.sleep(0.05)
    return Server(url, proc, psutil.Process(proc.pid))


def stop_server(server: Server) -> tuple[int, str, str]:
    server.proc.send_signal(signal.SIGINT)
    out, err = server.proc.communicate(timeout=START_S)
    return server.proc.returncode, out, err


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = start_server()
    try:
        yield srv
    finally:
        if srv.proc.poll() is None:
            rc, _, err = stop_server(srv)
            assert rc == 0, err


def stats(server: Server) -> dict[str, Any]:
    r = httpx.get(f"{server.url}/debug/stats", timeout=10)
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


def want_lines(start: int, n: int) -> list[str]:
    return [f'{{"i": {i}, "fib": {snake.kernels.fib(i % 20)}}}' for i in range(start, start + n)]


def idle(st: dict[str, Any]) -> bool:
    return (
        not st["trio_running"]
        and st["pipelines"] == 0
        and st["snake_tasks"] == 0
        and st["snake_threads"] == 0
        and st["pool"]["running_workers"] == 0
    )


def wait_idle(server: Server, within: float) -> tuple[float, dict[str, Any]]:
    t0 = time.monotonic()
    while True:
        st = stats(server)
        if idle(st) or time.monotonic() - t0 > within + 5:
            return time.monotonic() - t0, st
        time.sleep(0.01)


TEXTS = ["The quick brown fox", "jumps over the lazy dog", "snake pipelines", "", "Ünïcode wörds"]


@pytest.mark.parametrize(("start", "n", "batch"), [(0, 0, 64), (0, 1, 64), (0, 500, 7), (10**12, 5, 2)])
def test_stream_sends_every_line_exactly(server: Server, start: int, n: int, batch: int) -> None:
    r = httpx.get(f"{server.url}/stream", params={"start": start, "n": n, "batch": batch}, timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    assert r.text.splitlines() == want_lines(start, n)


def test_preprocess_runs_on_the_pool_and_is_exact(server: Server) -> None:
    texts = TEXTS * 30
    r = httpx.post(f"{server.url}/preprocess", json={"texts": texts}, timeout=30)
    assert r.status_code == 200
    body = r.json()
    assert body["dim"] == 256
    assert body["features"] == [example.featurize(t).tolist() for t in texts]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "bad"),
    [
        ("GET", "/stream", {"params": {"n": "ten"}}, "ten"),
        ("GET", "/stream", {"params": {"batch": 0}}, "0"),
        ("GET", "/stream", {"params": {"delay": "-1"}}, "-1"),
        ("POST", "/preprocess", {"json": {"texts": [1, "a"]}}, 1),
        ("POST", "/preprocess", {"json": {"texts": []}}, []),
    ],
)
def test_bad_input_is_a_422_quoting_the_value(
    server: Server, method: str, path: str, kwargs: dict[str, Any], bad: object
) -> None:
    r = httpx.request(method, f"{server.url}{path}", timeout=10, **kwargs)
    assert r.status_code == 422
    assert bad in [d["input"] for d in r.json()["detail"]]


def test_a_client_that_leaves_mid_stream_stops_its_pipeline(server: Server) -> None:
    before = stats(server)
    assert idle(before)
    pool_pids = set(before["worker_pids"])
    assert len(pool_pids) == 2 and live_children(server.ps) == pool_pids

    with httpx.stream(
        "GET", f"{server.url}/stream", params={"n": 10_000_000, "delay": 0.001}, timeout=30
    ) as response:
        lines = response.iter_lines()  # kept: a `break` out of it would close the response
        got = [next(lines) for _ in range(300)]
        assert got == want_lines(0, 300)
        during = stats(server)
        assert during["pipelines"] == 1 and during["trio_running"]
        assert during["snake_tasks"] >= 18  # source, 16 par_then runners, their sender, ...
    took, after = wait_idle(server, CLEANUP_S)  # the response is closed: the client left

    assert idle(after), after
    assert took < CLEANUP_S, f"the pipeline took {took:.2f} s to stop"
    # The shared pool was not touched, and keeps serving with the same worker processes.
    assert set(after["worker_pids"]) == pool_pids
    r = httpx.post(f"{server.url}/preprocess", json={"texts": TEXTS}, timeout=30)
    assert r.json()["features"] == [example.featurize(t).tolist() for t in TEXTS]
    assert live_children(server.ps) == pool_pids
    assert set(stats(server)["worker_pids"]) == pool_pids


def test_a_client_that_stopped_reading_and_leaves_stops_its_pipeline(server: Server) -> None:
    # The server fills the socket buffers and waits in send() (backpressure: the pipeline
    # waits too); the client then leaves. The response's aclose() closes the pipeline.
    with httpx.stream(
        "GET", f"{server.url}/stream", params={"n": 10_000_000, "batch": 1024}, timeout=30
    ) as r:
        lines = r.iter_lines()
        assert next(lines) == want_lines(0, 1)[0]
        # The server runs until the socket buffers (megabytes) are full, then waits.
        deadline = time.monotonic() + 60
        while True:
            cpu = sum(server.ps.cpu_times()[:2])
            time.sleep(0.5)
            spent = sum(server.ps.cpu_times()[:2]) - cpu
            if spent < 0.05:
                break
            assert time.monotonic() < deadline, f"the server still spends {spent:.2f} s of CPU per 0.5 s"
        assert stats(server)["pipelines"] == 1, "the pipeline waits, open, for the client"
    took, after = wait_idle(server, CLEANUP_S)
    assert idle(after), after
    assert took < CLEANUP_S, f"the pipeline took {took:.2f} s to stop"


def cpu_s(pids: set[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += sum(psutil.Process(pid).cpu_times()[:2])
    return total


def test_a_client_that_leaves_mid_preprocess_stops_its_pipeline(server: Server) -> None:
    # uvicorn does not cancel a handler whose client left; the example watches for it.
    # About 7 MB of text: seconds of pure-Python work for the pool's 2 worker processes.
    words = ["alpha", "beta", "gamma", "delta", "pipeline", "snake", "trio", "worker"]
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=3000)) for _ in range(400)]
    assert idle(stats(server))

    async def leave_mid_request() -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            post = asyncio.create_task(client.post("/preprocess", json={"texts": texts}))
            async with asyncio.timeout(30):
                while not ((st := stats(server))["pipelines"] == 1 and st["pool"]["running_workers"]):
                    assert not post.done(), "the request finished before the client left"
                    await asyncio.sleep(0.02)
            post.cancel()  # the client goes away: httpx closes the connection
            with contextlib.suppress(asyncio.CancelledError):
                await post
            return st

    busy = asyncio.run(leave_mid_request())
    took, after = wait_idle(server, CLEANUP_S)
    assert idle(after), after
    assert took < CLEANUP_S, f"the pipeline took {took:.2f} s to stop"
    # The busy workers were killed (their calls abandoned): no CPU work goes on.
    children = live_children(server.ps)
    t0 = cpu_s(children)
    time.sleep(0.5)
    assert cpu_s(children) - t0 < 0.1, "worker processes still computing after the client left"
    assert busy["pool"]["running_workers"] <= 2 and len(children) <= 2
    # The pool serves on (the killed workers replaced), with the right results.
    r = httpx.post(f"{server.url}/preprocess", json={"texts": TEXTS}, timeout=30)
    assert r.json()["features"] == [example.featurize(t).tolist() for t in TEXTS]
    assert len(live_children(server.ps)) <= 2
    wait_idle(server, CLEANUP_S)


def test_concurrent_clients_each_get_their_own_data(server: Server) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

            async def stream(start: int, n: int) -> None:
                r = await client.get("/stream", params={"start": start, "n": n, "batch": 5 + start % 7})
                assert r.text.splitlines() == want_lines(start, n)

            async def preprocess(k: int) -> None:
                texts = [f"{t} {k}" for t in TEXTS]
                r = await client.post("/preprocess", json={"texts": texts})
                assert r.json()["features"] == [example.featurize(t).tolist() for t in texts]

            async with asyncio.TaskGroup() as tg:
                for k in range(12):
                    tg.create_task(stream(1000 * k, 200 + 37 * k))
                for k in range(4):
                    tg.create_task(preprocess(k))

    asyncio.run(main())
    took, after = wait_idle(server, CLEANUP_S)
    assert idle(after), after


def test_sigint_shuts_down_and_closes_the_pool() -> None:
    srv = start_server()
    pids = set(stats(srv)["worker_pids"])
    assert len(pids) == 2
    # A stream still open at shutdown: uvicorn waits for it; close it from this side.
    with httpx.stream("GET", f"{srv.url}/stream", params={"n": 10_000_000}, timeout=30) as r:
        assert next(r.iter_lines()) == want_lines(0, 1)[0]
    rc, out, err = stop_server(srv)
    assert rc == 0, err
    assert out.splitlines()[-1] == "stopped; worker processes left: 0"
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_disconnect_surfaced_in_send_closes_the_pipeline() -> None:
    # Servers of ASGI spec 2.4 report a client that left as an OSError from send();
    # Starlette then raises ClientDisconnect and skips the response's background task.
    # The response closes its body itself: no pipeline waits for the garbage collector.
    async def main() -> tuple[int, snake.aio.RuntimeStatistics]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/stream",
            "raw_path": b"/stream",
            "query_string": b"n=10000000",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1")],
            "server": ("127.0.0.1", 80),
            "client": ("127.0.0.1", 50000),
        }
        bodies = 0

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal bodies
            if message["type"] == "http.response.body":
                bodies += 1
                if bodies == 3:
                    raise OSError("the client went away")

        with pytest.raises(ClientDisconnect):
            await example.app(scope, receive, send)
        return bodies, snake.aio.statistics()

    bodies, after = asyncio.run(main())
    assert bodies == 3
    assert after == snake.aio.RuntimeStatistics(running=False, pipelines=0, tasks=0)
