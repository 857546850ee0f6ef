"""HTTP benchmark: SPEW through beds-http, against BedsClient over AMQP and a plain peer app.

Three ways to run the same two operations on the same MariaDB, in one run:

- ``http``: ``beds http`` (uvicorn on loopback) in front of a ``beds run`` node; the load
  generator is an aiohttp client (``GET /v1/spew_post/recent``, ``POST /v1/spew_post`` with a
  member's Bearer token);
- ``amqp``: the same node called by :class:`beds.client.BedsClient` (``fetch recent``,
  ``create``), the same token;
- ``peer``: ``benchmarks.peers.http_mariadb``, Starlette + asyncmy straight to MariaDB (the
  same view and procedure), what a user would build instead.

Each point runs ``--seconds`` at concurrency 16 and 64 (one worker task per in-flight
request) and reports requests/s, p50 and p99 latency; the ratios are http/amqp (the edge's
cost over the AMQP path) and http/peer (BEDS + edge against the plain app). Results go to
``OUT/http.json`` and a printed table.

    python -m benchmarks.http_edge [--seconds 5] [--out docs/benchmarks]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from beds.client import BedsClient
from benchmarks.resources import PYTHON, ROOT, Resources, wait_line
from benchmarks.work import POST_TEXT

CONCURRENCY = (16, 64)
PASSWORD = "bench-Passw0rd-http"
Call = Callable[[], Awaitable[bool]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def wait_http(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {seconds:g} s")


async def drive(call: Call, concurrency: int, seconds: float) -> dict[str, Any]:
    """``concurrency`` workers calling ``call`` back to back for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.monotonic() < stop:
            start = time.perf_counter()
            ok = await call()
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - began
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 2) if ordered else None,
        "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 2) if ordered else None,
    }


async def member_token(session: aiohttp.ClientSession, edge: str) -> tuple[str, str]:
    handle = "bench_" + uuid.uuid4().hex[:10]
    signup = {"handle": handle, "password": PASSWORD}
    # The node binds its queues when it is ready: until then the edge answers 503.
    deadline = time.monotonic() + 90
    while True:
        async with session.post(f"{edge}/v1/auth/signup", json=signup) as reply:
            if reply.status == 201:
                break
            if reply.status != 503 or time.monotonic() > deadline:
                raise RuntimeError(f"sign-up failed: {reply.status} {await reply.text()}")
        await asyncio.sleep(0.5)
    async with session.post(f"{edge}/v1/auth/login", json=signup) as reply:
        assert reply.status == 200, await reply.text()
        return handle, (await reply.json())["data"]["token"]


async def measure(res: Resources, edge: str, peer: str, seconds: float) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        handle, token = await member_token(session, edge)
        bearer = {"Authorization": f"Bearer {token}"}
        client = BedsClient(res.amqp_url, env="bench", token=token, timeout=30)
        await client.connect()
        try:

            async def http_get(url: str, headers: dict[str, str] | None = None) -> bool:
                async with session.get(url, headers=headers) as reply:
                    await reply.read()
                    return reply.status == 200

            async def http_post(url: str, body: dict[str, Any], headers: dict[str, str]) -> bool:
                async with session.post(url, json=body, headers=headers) as reply:
                    await reply.read()
                    return reply.status == 201

            async def amqp_fetch() -> bool:
                return len(await client.fetch("spew_post", "recent", limit=50)) > 0

            async def amqp_create() -> bool:
                return "id" in await client.create("spew_post", {"body": POST_TEXT})

            post = {"body": POST_TEXT}
            targets: dict[str, dict[str, Call]] = {
                "timeline": {
                    "http": lambda: http_get(f"{edge}/v1/spew_post/recent?limit=50"),
                    "amqp": amqp_fetch,
                    "peer": lambda: http_get(f"{peer}/recent"),
                },
                "create": {
                    "http": lambda: http_post(f"{edge}/v1/spew_post", post, bearer),
                    "amqp": amqp_create,
                    "peer": lambda: http_post(
                        f"{peer}/posts", {"author": handle, "body": POST_TEXT}, {}
                    ),
                },
            }
            results: dict[str, Any] = {}
            for operation, calls in targets.items():
                for concurrency in CONCURRENCY:
                    point: dict[str, Any] = {}
                    for kind, call in calls.items():
                        await drive(call, concurrency, min(1.0, seconds))  # warm-up
                        point[kind] = await drive(call, concurrency, seconds)
                        print(f"{operation} c={concurrency} {kind}: {point[kind]}", flush=True)
                    http, amqp, plain = (point[k]["rps"] for k in ("http", "amqp", "peer"))
                    point["http_over_amqp"] = round(http / amqp, 3) if amqp else None
                    point["http_over_peer"] = round(http / plain, 3) if plain else None
                    results[f"{operation}.c{concurrency}"] = point
            return results
        finally:
            await client.close()


def print_table(results: dict[str, Any]) -> None:
    print(
        f"{'point':<16} {'http rps':>9} {'amqp rps':>9} {'peer rps':>9} "
        f"{'http/amqp':>9} {'http/peer':>9} {'http p99':>9}"
    )
    for key, point in results.items():
        print(
            f"{key:<16} {point['http']['rps']:>9} {point['amqp']['rps']:>9} "
            f"{point['peer']['rps']:>9} {point['http_over_amqp']:>9} "
            f"{point['http_over_peer']:>9} {point['http']['p99_ms']:>9}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per point (5)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    options = parser.parse_args(argv)
    res = Resources()
    try:
        res.open(rel_pool=16, instances=16, prefetch=32)
        with res.config.open("a", encoding="utf-8") as config:
            config.write("\n[http]\nrequest_timeout = 30\n")
        node = res.start("node", [PYTHON, "-m", "beds", "run", "--config", str(res.config)])
        edge_port, peer_port = free_port(), free_port()
        res.start(
            "edge",
            [PYTHON, "-m", "beds", "http", "--config", str(res.config), "--port", str(edge_port)],
        )
        peer = res.start(
            "peer",
            [PYTHON, "-m", "benchmarks.peers.http_mariadb", res.mysql_url, str(peer_port), "16"],
        )
        wait_line(peer, "ready")
        edge_url, peer_url = f"http://127.0.0.1:{edge_port}", f"http://127.0.0.1:{peer_port}"
        asyncio.run(wait_http(f"{edge_url}/healthz"))
        asyncio.run(wait_http(f"{peer_url}/recent"))
        node.check_alive()
        results = asyncio.run(measure(res, edge_url, peer_url, options.seconds))
    finally:
        res.close()
    document = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds_per_point": options.seconds,
        "concurrency": list(CONCURRENCY),
        "results": results,
    }
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "http.json").write_text(json.dumps(document, indent=2) + "\n")
    print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
