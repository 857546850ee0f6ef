"""Lineage of a browser-made post: one tree from the HTTP request down to the procedure.

An appServer node and an admin node (its ``adminLogsBroker`` stores the logs exchange's events
in ``msLogs`` on the session's MongoDB wire server) run in this process; the edge runs on a
real uvicorn socket with its own BEDS client and lineage publisher, as ``beds http`` runs it.
``beds lineage`` is the real command, in a subprocess (in a thread: the nodes answering it run
on this test's event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import orjson
import pytest
import uvicorn
from pymongo import MongoClient

from beds.config import load_config
from beds.node import BedsNode
from beds.testing import unique_name
from beds_http.app import create_app
from tests.e2e.helpers import beds
from tests.integration.http.helpers import delete_environment, free_port

pytestmark = [pytest.mark.rabbitmq, pytest.mark.mariadb, pytest.mark.mongodb]

PASSWORD = "Tr0ub4dor&3-lineage"


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """``app`` on a uvicorn socket of a free loopback port; its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.get_running_loop().create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


def stored_events(mongo_uri: str, database: str, env: str) -> list[dict[str, Any]]:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        return list(client[database]["msLogs"].find({"env": env}))
    finally:
        client.close()


def forget_events(mongo_uri: str, database: str, env: str) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        client[database]["msLogs"].delete_many({"env": env})
    finally:
        client.close()


async def tree_of(config: Path, event_id: str, ready: Any) -> list[dict[str, Any]]:
    """``beds lineage EVENT_ID --json``, asked until ``ready(tree)`` (events arrive in batches)."""
    tree: list[dict[str, Any]] = []
    for _ in range(100):
        result = await asyncio.to_thread(
            beds, "lineage", event_id, "--config", str(config), "--json", "--timeout", "3"
        )
        if result.returncode == 0:
            tree = orjson.loads(result.stdout)
            if ready(tree):
                return tree
        await asyncio.sleep(0.2)
    raise AssertionError(f"the tree of {event_id} did not fill in: {tree}")


@pytest.fixture
async def deployment(
    tmp_path: Path,
    http_schema_config: str,
    amqp_url: str,
    mongo_server_uri: str,
    mongo_database: str,
) -> AsyncIterator[tuple[Path, str]]:
    """An appServer node, an admin node and the edge of one environment: (config, edge URL)."""
    env = unique_name("httplin")
    path = tmp_path / "beds.toml"
    path.write_text(
        http_schema_config.replace("{env}", env)
        + "\n[lineage]\nflush_interval = 0.02\n\n[http]\nrequest_timeout = 10\n",
        encoding="utf-8",
    )
    config = load_config(path, environ={})
    app_config = attrs.evolve(config, node=attrs.evolve(config.node, name="app1"))
    admin_config = attrs.evolve(config, node=attrs.evolve(config.node, role="admin", name="adm1"))
    try:
        async with (
            BedsNode(admin_config),
            BedsNode(app_config),
            serving(create_app(config)) as url,
        ):
            yield path, url
    finally:
        await delete_environment(amqp_url, env)
        await asyncio.to_thread(forget_events, mongo_server_uri, mongo_database, env)


async def test_a_post_made_through_the_edge_is_one_tree_http_amqp_procedure(
    deployment: tuple[Path, str], mongo_server_uri: str, mongo_database: str
) -> None:
    config, url = deployment
    env = load_config(config, environ={}).node.env
    handle = unique_name("lin").replace("-", "_")[:20].lower()
    trace_id = os.urandom(16).hex()
    async with httpx.AsyncClient(base_url=url, timeout=15) as http:
        signed = await http.post(
            "/v1/auth/signup", json={"handle": handle, "password": PASSWORD, "display_name": "L"}
        )
        assert signed.status_code == 201, signed.text
        login = await http.post("/v1/auth/login", json={"handle": handle, "password": PASSWORD})
        assert login.status_code == 200, login.text
        token = login.json()["data"]["token"]

        posted = await http.post(
            "/v1/spew_post",
            json={"body": "traced from a browser #lineage"},
            headers={
                "Authorization": f"Bearer {token}",
                "traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01",
            },
        )
        assert posted.status_code == 201, posted.text
        node_event = posted.headers["x-beds-event-id"]
        span = posted.headers["traceparent"].split("-")[2]
        assert posted.headers["traceparent"].split("-")[1] == trace_id, "the trace continues"

        # A read with a query value, anonymous: its event names the route, never the value.
        read = await http.get("/v1/spew_post/by_author", params={"author": handle})
        assert read.status_code == 200, read.text
        read_event = read.headers["x-beds-event-id"]

    http_id = f"http.{env}.{trace_id}-{span}"

    def complete(tree: list[dict[str, Any]]) -> bool:
        return {"http", "request", "db"} <= {event["kind"] for event in tree}

    # Asked by the node's event id (the response header): the tree reaches up to the HTTP root.
    tree = await tree_of(config, node_event, complete)
    root = tree[0]
    assert (root["kind"], root["event_id"], root["parent_id"], root["depth"]) == (
        "http",
        http_id,
        "",
        0,
    )
    assert (root["operation"], root["message"], root["status"], root["code"]) == (
        "POST",
        "/v1/spew_post",
        201,
        "",
    )
    assert root["data"] == {"trace_id": trace_id, "principal": handle}
    assert root["ms"] > 0
    [request] = [event for event in tree if event["kind"] == "request"]
    assert (request["event_id"], request["parent_id"], request["depth"]) == (
        node_event,
        http_id,
        1,
    )
    assert (request["template"], request["operation"], request["status"]) == (
        "spew_post",
        "create",
        201,
    )
    [db] = [event for event in tree if event["kind"] == "db"]
    assert (db["parent_id"], db["depth"], db["message"]) == (node_event, 2, "rel create spp_create")

    # The readable form, from the HTTP event's own id: one tree, HTTP → AMQP → procedure.
    text = await asyncio.to_thread(beds, "lineage", http_id, "--config", str(config))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"http    POST /v1/spew_post → 201 by {handle} trace {trace_id}")
    assert any(line.startswith("  request create spew_post → 201 on app1") for line in lines)
    assert any(line.startswith("    db      rel create spp_create") for line in lines)

    read_tree = await tree_of(config, read_event, complete)
    read_root = read_tree[0]
    assert (read_root["kind"], read_root["operation"], read_root["message"]) == (
        "http",
        "GET",
        "/v1/spew_post/by_author",
    )
    assert "principal" not in read_root["data"], "an anonymous request names nobody"
    assert handle not in orjson.dumps(read_root).decode(), "a query value reached lineage"
    [read_db] = [event for event in read_tree if event["kind"] == "db"]
    assert read_db["message"] == "rel fetch spp_posts_v"

    # Nothing secret in anything stored for this environment: no token, no password.
    stored = await asyncio.to_thread(stored_events, mongo_server_uri, mongo_database, env)
    assert {event["kind"] for event in stored} >= {"http", "request", "db"}
    dumped = orjson.dumps(stored, default=str).decode()
    assert token not in dumped
    assert token.split(".")[-1] not in dumped, "a token's signature reached lineage"
    assert PASSWORD not in dumped
    https = [event for event in stored if event["kind"] == "http"]
    assert "traced from a browser" not in orjson.dumps(https, default=str).decode()
