"""The HTTP edge against a real node over RabbitMQ: SPEW through REST, live events over SSE.

The edge runs on a real uvicorn socket; the node stores in the session's MariaDB. What the
edge refuses itself must not move the node's request counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from beds.testing import unique_name
from tests.integration.http.helpers import Edge, delete_environment, free_port

pytestmark = [pytest.mark.rabbitmq, pytest.mark.mariadb, pytest.mark.mongodb]

PASSWORD = "Tr0ub4dor&3-http"


async def member(http: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    """Sign up and log in a new member; their handle and Authorization header."""
    handle = unique_name("h")[:20]
    reply = await http.post(
        "/v1/auth/signup", json={"handle": handle, "password": PASSWORD, "display_name": "H"}
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["data"]["handle"] == handle
    reply = await http.post("/v1/auth/login", json={"handle": handle, "password": PASSWORD})
    assert reply.status_code == 200, reply.text
    session = reply.json()["data"]
    assert session["handle"] == handle
    assert "member" in session["roles"]
    return handle, {"Authorization": f"Bearer {session['token']}"}


async def test_spew_through_the_edge(http: httpx.AsyncClient) -> None:
    ann, ann_auth = await member(http)
    me = await http.get("/v1/auth/me", headers=ann_auth)
    assert me.status_code == 200, me.text
    assert me.json()["data"]["handle"] == ann

    reply = await http.post("/v1/spew_post", json={"body": "hello #edge"}, headers=ann_auth)
    assert reply.status_code == 201, reply.text
    post_id = reply.json()["data"]["id"]
    assert reply.headers["x-beds-event-id"]

    reply = await http.get("/v1/spew_post/by_author", params={"author": ann})
    assert reply.status_code == 200, reply.text
    assert [p["id"] for p in reply.json()["data"]] == [post_id]

    reply = await http.post("/v1/spew_like", json={"post_id": post_id}, headers=ann_auth)
    assert reply.status_code == 201, reply.text

    # Someone else's post cannot be deleted: the node's ownership rule, as a problem.
    _, bob_auth = await member(http)
    reply = await http.delete("/v1/spew_post", params={"id": post_id}, headers=bob_auth)
    assert reply.status_code == 403, reply.text
    assert reply.json()["code"].startswith("BEDS-403")

    reply = await http.post("/v1/auth/logout", headers=ann_auth)
    assert reply.status_code == 204
    reply = await http.get("/v1/auth/me", headers=ann_auth)
    assert (reply.status_code, reply.json()["code"]) == (401, "BEDS-401")
    reply = await http.post("/v1/spew_post", json={"body": "after logout"}, headers=ann_auth)
    assert reply.status_code == 401


async def test_a_wrong_password_is_401_without_saying_why(http: httpx.AsyncClient) -> None:
    handle, _ = await member(http)
    reply = await http.post("/v1/auth/login", json={"handle": handle, "password": "nope-nope"})
    assert reply.status_code == 401
    assert reply.json()["code"] == "BEDS-401"
    assert "nope" not in reply.text


@contextlib.asynccontextmanager
async def stream(
    http: httpx.AsyncClient, headers: dict[str, str], query: str
) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    """Read ``GET /v1/events?{query}`` in the background into a queue of parsed events."""
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    opened = asyncio.Event()

    async def read() -> None:
        async with http.stream("GET", f"/v1/events?{query}", headers=headers) as reply:
            assert reply.status_code == 200, await reply.aread()
            assert reply.headers["content-type"].startswith("text/event-stream")
            opened.set()
            event: dict[str, Any] = {}
            async for line in reply.aiter_lines():
                if not line:
                    if "data" in event:
                        await events.put(event)
                    event = {}
                elif line.startswith(("id: ", "event: ", "data: ")):
                    name, _, value = line.partition(": ")
                    event[name] = orjson.loads(value) if name == "data" else value

    task = asyncio.get_running_loop().create_task(read())
    await asyncio.wait(
        {task, asyncio.ensure_future(opened.wait())},
        timeout=10,
        return_when=asyncio.FIRST_COMPLETED,
    )
    if task.done():
        task.result()
    try:
        yield events
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def next_post(events: asyncio.Queue[dict[str, Any]], body: str) -> dict[str, Any]:
    """The next event of a spew_post record with ``body`` (others are skipped)."""
    async with asyncio.timeout(15):
        while True:
            event = await events.get()
            record = event["data"].get("record") or {}
            if event["data"]["template"] == "spew_post" and record.get("body") == body:
                return event


async def test_live_events_stream_new_posts_and_resume(http: httpx.AsyncClient) -> None:
    ann, ann_auth = await member(http)
    bob, bob_auth = await member(http)
    query = "template=spew_post&template=spew_like"
    async with stream(http, ann_auth, query) as events:
        await asyncio.sleep(0.3)  # the subscription is registered once the stream opened
        reply = await http.post("/v1/spew_post", json={"body": "live one"}, headers=bob_auth)
        assert reply.status_code == 201, reply.text
        first = await next_post(events, "live one")
        assert first["event"] == "record.changed"
        assert first["data"]["operation"] == "create"
        assert first["data"]["principal"] == bob
        assert first["data"]["key"] == {"id": reply.json()["data"]["id"]}
        assert "trace_id" not in first["data"]
        await http.post("/v1/spew_post", json={"body": "live two"}, headers=bob_auth)
        second = await next_post(events, "live two")
    # Resume after the first: the second is replayed (and nothing before the first).
    resumed_headers = {**ann_auth, "Last-Event-ID": first["id"]}
    async with stream(http, resumed_headers, query) as events:
        replayed = await next_post(events, "live two")
        assert replayed["id"] == second["id"]
    # Anonymous callers may follow spew_post too (anyone may fetch it).
    async with stream(http, {}, "template=spew_post") as events:
        await asyncio.sleep(0.3)
        await http.post("/v1/spew_post", json={"body": "for everyone"}, headers=ann_auth)
        assert (await next_post(events, "for everyone"))["data"]["principal"] == ann


async def test_logging_out_ends_the_stream_of_that_session(http: httpx.AsyncClient) -> None:
    _, auth = await member(http)
    lines: list[str] = []
    async with http.stream("GET", "/v1/events?template=spew_post", headers=auth) as reply:
        assert reply.status_code == 200
        await asyncio.sleep(0.3)
        logout = await http.post("/v1/auth/logout", headers=auth)
        assert logout.status_code == 204
        async with asyncio.timeout(15):
            async for line in reply.aiter_lines():
                lines.append(line)
    assert ": closed: the session was revoked" in lines


async def test_a_forged_token_gets_no_stream(http: httpx.AsyncClient) -> None:
    reply = await http.get(
        "/v1/events?template=spew_post", headers={"Authorization": "Bearer abc.def.ghi"}
    )
    assert (reply.status_code, reply.json()["code"]) == (401, "BEDS-401")


LONG = "k" * 201
REFUSED: list[tuple[str, str, dict[str, str], bytes]] = [
    ("POST", "/v1/spew_post", {"Content-Type": "application/json"}, b"{oops"),
    ("POST", "/v1/spew_post", {"Content-Type": "text/plain"}, b"{}"),
    ("POST", "/v1/spew_post", {"Content-Type": "application/json"}, b"[" * 100 + b"]" * 100),
    ("POST", "/v1/spew_post", {"Content-Type": "application/json"}, b'"' + b"x" * 300_000 + b'"'),
    ("GET", "/v1/no_such_template/q", {}, b""),
    ("GET", "/v1/spew_post/no_such_query", {}, b""),
    ("GET", "/v1/spew_post/by_id?id=seven", {}, b""),
    ("GET", "/v1/spew_post/by_author?author=a&cursor=%00", {}, b""),
    ("GET", "/v1/spew_post/by_author?author=a", {"Authorization": "Token x"}, b""),
    ("GET", "/v1/spew_post/by_author?author=a", {"Origin": "https://evil.example"}, b""),
    ("POST", "/v1/spew_post", {"Content-Type": "application/json", "Idempotency-Key": LONG}, b"{}"),
]


async def test_refused_requests_never_reach_the_node(edge: Edge, http: httpx.AsyncClient) -> None:
    _, auth = await member(http)
    await asyncio.sleep(0.2)
    before = edge.node_requests()
    for method, path, headers, body in REFUSED:
        reply = await http.request(method, path, headers=headers, content=body)
        assert 400 <= reply.status_code < 500, (path, reply.text)
        assert reply.headers["content-type"] == "application/problem+json"
    await asyncio.sleep(0.2)
    assert edge.node_requests() == before
    metrics = (await http.get("/metrics")).text
    for reason in (
        "json",
        "content_type",
        "json_depth",
        "body_size",
        "route",
        "params",
        "cursor",
        "token",
        "cors",
        "header",
    ):
        assert f'beds_http_refused_total{{reason="{reason}"}}' in metrics, reason
    # A request the edge accepts does reach it.
    reply = await http.get("/v1/spew_post/recent", headers=auth)
    assert reply.status_code == 200, reply.text
    await asyncio.sleep(0.2)
    assert edge.node_requests() == before + 1


async def healthy(client: httpx.AsyncClient) -> httpx.Response:
    """``GET /healthz`` once it answers 200 (the edge connects in the background), or fail."""
    for _ in range(100):
        with contextlib.suppress(httpx.TransportError):
            health = await client.get("/healthz")
            if health.status_code == 200:
                return health
        await asyncio.sleep(0.1)
    raise AssertionError("the edge did not become healthy in 10 s")


async def test_health_metrics_openapi_docs_and_page(http: httpx.AsyncClient) -> None:
    health = await healthy(http)
    assert health.json() == {"ok": True, "checks": {"amqp": True, "live": True}}
    document = (await http.get("/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    assert "/v1/spew_post/home" in document["paths"]
    assert "/v1/beds_user/credentials" not in document["paths"]  # internal query
    assert (await http.get("/docs")).status_code == 200
    assert (await http.get("/")).headers["content-type"].startswith("text/html")
    trace = "0af7651916cd43dd8448eb211c80319c"
    reply = await http.get(
        "/v1/spew_post/recent", headers={"traceparent": f"00-{trace}-b7ad6b7169203331-01"}
    )
    assert reply.headers["traceparent"].startswith(f"00-{trace}-")


async def test_beds_http_serves_until_sigterm(
    tmp_path: Path, http_schema_config: str, amqp_url: str
) -> None:
    env = unique_name("http")
    path = tmp_path / "beds.toml"
    path.write_text(http_schema_config.replace("{env}", env), encoding="utf-8")
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "beds",
        "http",
        "--config",
        str(path),
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("BEDS_")},
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line.strip() == (
            f"beds http: serving http://127.0.0.1:{port}/ (SPEW page at /, API docs at /docs)"
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await healthy(client)).json()["ok"] is True
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
        await delete_environment(amqp_url, env)
    assert code == 0
