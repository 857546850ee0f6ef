"""Telemetry of a real node on RabbitMQ: probes, metrics, /status and ``beds status``.

The node serves the in-memory ``note`` template (the broker-runtime fixtures of
``amqp/helpers.py``, imported here), with telemetry on a free port and a fast queue poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiormq
import orjson
import pytest
from pamqp.commands import Basic
from prometheus_client.parser import text_string_to_metric_families

from beds.config import load_config
from beds.envelopes import Operation
from beds.errors import NotFound, StoreUnavailable
from beds.node import BedsNode
from beds.plugins import make_plugin_manager
from beds.testing import MemoryAdapter, unique_name
from tests.integration.amqp.helpers import (
    MemoryPlugin,
    beds_log_on_failure,
    client_of,
    start_node,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from beds.namaste import CallContext, Record
    from beds.templates import Template
    from tests.integration.amqp.helpers import StartNode

__all__ = ("beds_log_on_failure", "start_node")  # fixtures, shared with amqp/

TELEMETRY = """
[telemetry]
port = 0
queue_poll_seconds = 0.1

[reliability]
retry_attempts = 2
retry_initial_delay = 0.01
retry_max_delay = 0.02
handler_budget = 0.2
"""


def get(url: str) -> tuple[int, bytes]:
    """GET ``url`` (blocking: call it through ``asyncio.to_thread``)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def fetch(node: BedsNode, path: str) -> tuple[int, bytes]:
    assert node.telemetry_url is not None
    return await asyncio.to_thread(get, node.telemetry_url + path)


async def status_of(node: BedsNode) -> dict[str, Any]:
    code, body = await fetch(node, "/status")
    assert code == 200
    document: dict[str, Any] = orjson.loads(body)
    return document


async def samples(node: BedsNode) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``/metrics``: (name, labels) → value."""
    code, body = await fetch(node, "/metrics")
    assert code == 200
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The one sample called ``name`` whose labels include ``labels``."""
    matches = [v for (n, ls), v in found.items() if n == name and set(labels.items()) <= ls]
    assert len(matches) == 1, f"{name} {labels}: {len(matches)} samples"
    return matches[0]


async def eventually(check: Any, timeout: float = 5.0) -> Any:
    """Await ``check()`` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still {result!r} after {timeout} s")
        await asyncio.sleep(0.05)


def memory(node: BedsNode) -> MemoryAdapter:
    adapter = node.adapters["memory"]
    assert isinstance(adapter, MemoryAdapter)
    return adapter


@contextlib.asynccontextmanager
async def unstarted_node(tmp_path: Path, amqp_url: str) -> AsyncIterator[BedsNode]:
    """A node that is not started yet (the test starts it), stopped at the end."""
    env = unique_name("env")
    path = tmp_path / "beds.toml"
    path.write_text(
        f"""
schema_version = 1
[node]
name = "t1"
env = "{env}"
drain_seconds = 5
[amqp]
url = "{amqp_url}"
events_exchange = "beds.events.{env}"
logs_exchange = "beds.logs.{env}"
dead_letter_exchange = "beds.dlx.{env}"
[roles.appServer.brokers.rBroker]
instances = 1
[roles.appServer.brokers.wBroker]
instances = 1
{TELEMETRY}
""",
        encoding="utf-8",
    )
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(MemoryPlugin())
    node = BedsNode(load_config(path, environ={}), plugin_manager=pm)
    try:
        yield node
    finally:
        await node.stop()


async def test_ready_only_between_ipl_and_stop(
    tmp_path: Path, amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stores_may_start = asyncio.Event()

    async def slow_start(self: MemoryAdapter) -> None:
        await stores_may_start.wait()

    monkeypatch.setattr(MemoryAdapter, "start", slow_start)
    async with unstarted_node(tmp_path, amqp_url) as node:
        starting = asyncio.create_task(node.start())
        await eventually(lambda: asyncio.sleep(0, node.telemetry_url))
        assert await fetch(node, "/health") == (200, b'{"status":"alive","node":"t1"}')
        code, body = await fetch(node, "/ready")  # IPL waits for the store
        assert (code, orjson.loads(body)) == (503, {"ready": False, "state": "starting"})

        stores_may_start.set()
        await starting
        code, body = await fetch(node, "/ready")
        assert (code, orjson.loads(body)) == (200, {"ready": True, "state": "ready"})

        # A request in flight keeps the node draining; meanwhile it is not ready, but alive.
        release = asyncio.Event()
        original = memory(node).create

        async def held(template: Template, record: Record, ctx: CallContext) -> Record:
            await release.wait()
            return await original(template, record, ctx)

        memory(node).create = held  # type: ignore[method-assign]
        async with client_of(node) as client:
            call = asyncio.create_task(client.create("note", {"text": "draining"}))
            await eventually(lambda: asyncio.sleep(0, node.pools["wBroker"].in_flight))
            url = node.telemetry_url
            stopping = asyncio.create_task(node.stop())
            await eventually(lambda: asyncio.sleep(0, node.state == "stopping"))
            code, body = await fetch(node, "/ready")
            assert (code, orjson.loads(body)) == (503, {"ready": False, "state": "stopping"})
            assert (await fetch(node, "/health"))[0] == 200
            release.set()
            assert (await call)["id"] >= 1
            await stopping
        assert url is not None
        with pytest.raises(urllib.error.URLError):
            await asyncio.to_thread(get, url + "/health")  # closed with the node


async def test_not_ready_while_reconnecting(
    start_node: StartNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beds.transport.amqp import connect_to as real_connect_to

    may_reconnect = asyncio.Event()

    async def held_connect(*args: Any, **kwargs: Any) -> Any:
        await may_reconnect.wait()
        return await real_connect_to(*args, **kwargs)

    async with start_node(TELEMETRY) as node:
        monkeypatch.setattr("beds.node.connect_to", held_connect)
        connection = node.connection
        assert connection is not None
        await connection.close()  # as if RabbitMQ dropped it

        async def reconnecting() -> bool:
            code, body = await fetch(node, "/ready")
            return (code, orjson.loads(body)["state"]) == (503, "reconnecting")

        await eventually(reconnecting)
        assert (await fetch(node, "/health"))[0] == 200
        may_reconnect.set()
        await eventually(lambda: asyncio.sleep(0, node.reconnects == 1 and node.ready))
        code, body = await fetch(node, "/ready")
        assert (code, orjson.loads(body)["state"]) == (200, "ready")
        found = await samples(node)
        assert value(found, "beds_node_reconnects_total") == 1


async def test_counters_match_the_requests(start_node: StartNode) -> None:
    async with start_node(TELEMETRY) as node, client_of(node) as client:
        for number in range(7):
            await client.create("note", {"text": f"n{number}"})
        with pytest.raises(NotFound):
            await client.update("note", {"id": 999, "text": "nobody"})
        assert (await client.ping()).ok

        found = await samples(node)
        ids = {"node": "t1", "role": "appServer"}
        assert value(found, "beds_broker_messages_total", broker="wBroker", **ids) == 8
        assert value(found, "beds_broker_messages_total", broker="rBroker", **ids) == 1
        assert value(found, "beds_broker_errors_total", broker="wBroker", code="BEDS-404") == 1
        assert value(found, "beds_broker_handler_seconds_count", broker="wBroker") == 8
        assert value(found, "beds_broker_handler_seconds_bucket", broker="wBroker", le="+Inf") == 8
        assert value(found, "beds_store_call_seconds_count", store="memory") == 8  # ping: none
        assert value(found, "beds_broker_in_flight", broker="wBroker") == 0
        assert value(found, "beds_broker_retries_total", broker="wBroker") == 0
        assert value(found, "beds_node_ready", **ids) == 1
        assert value(found, "beds_node_info", env=node.config.node.env) == 1

        status = await status_of(node)
        brokers = {broker["name"]: broker for broker in status["brokers"]}
        assert brokers["wBroker"]["handled"] == 8
        assert brokers["wBroker"]["errors"] == {"BEDS-404": 1}
        assert brokers["rBroker"]["handled"] == 1
        assert status["ready"] is True
        assert status["node"] == "t1"


async def test_queue_depth_is_polled(start_node: StartNode) -> None:
    async with start_node(TELEMETRY) as node:
        # Park messages in the queue: stop the wBroker pool's consumer.
        pool = node.pools["wBroker"]
        await pool.stop(0)
        connection = await aiormq.connect(node.config.amqp.url)
        try:
            channel = await connection.channel()
            for _ in range(3):
                await channel.basic_publish(
                    b"{}",
                    exchange=node.config.amqp.events_exchange,
                    routing_key="note.write",
                    properties=Basic.Properties(reply_to="nobody"),
                )
        finally:
            await connection.close()

        async def depth() -> float | None:
            found = await samples(node)
            queue = node.config.queue_name("wBroker")
            matches = [
                v
                for (n, ls), v in found.items()
                if n == "beds_queue_messages" and ("queue", queue) in ls
            ]
            return matches[0] if matches and matches[0] == 3 else None

        assert await eventually(depth) == 3
        code, body = await fetch(node, "/ready")
        assert (code, orjson.loads(body)["state"]) == (503, "not consuming: wBroker")
        status = await status_of(node)
        assert {b["name"]: b["queue_depth"] for b in status["brokers"]}["wBroker"] == 3


async def test_a_slow_handler_shows_in_status_with_its_event_id(start_node: StartNode) -> None:
    async with start_node(TELEMETRY) as node, client_of(node) as client:
        release = asyncio.Event()
        original = memory(node).create

        async def slow(template: Template, record: Record, ctx: CallContext) -> Record:
            await release.wait()
            return await original(template, record, ctx)

        memory(node).create = slow  # type: ignore[method-assign]
        call = asyncio.create_task(client.call("note", Operation.CREATE, {"text": "slow"}))

        async def late() -> list[dict[str, Any]]:
            status = await status_of(node)
            broker = status["brokers"][1]
            assert broker["name"] == "wBroker"
            late: list[dict[str, Any]] = broker["over_budget"]
            return late

        (entry,) = await eventually(late)
        assert entry["seconds"] > 0.2
        assert (entry["template"], entry["operation"]) == ("note", "create")
        found = await samples(node)
        assert value(found, "beds_broker_in_flight_over_budget", broker="wBroker") == 1
        assert value(found, "beds_broker_in_flight", broker="wBroker") == 1

        release.set()
        response = await call
        assert response.ok
        assert entry["event_id"] == response.meta.event_id
        found = await samples(node)
        assert value(found, "beds_broker_over_budget_total", broker="wBroker") == 1
        assert value(found, "beds_broker_in_flight_over_budget", broker="wBroker") == 0


async def test_dead_letters_are_counted_and_the_queue_is_measured(start_node: StartNode) -> None:
    async with start_node(TELEMETRY) as node, client_of(node) as client:
        failures = [StoreUnavailable("down"), StoreUnavailable("down")]
        original = memory(node).create

        async def failing(template: Template, record: Record, ctx: CallContext) -> Record:
            if failures:
                raise failures.pop(0)
            return await original(template, record, ctx)

        memory(node).create = failing  # type: ignore[method-assign]
        with pytest.raises(StoreUnavailable):
            await client.create("note", {"text": "lost?"})  # tried twice, then dead-lettered

        dead_queue = f"beds.{node.config.node.env}.dead"

        async def measured() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
            found = await samples(node)
            try:
                if value(found, "beds_dead_letter_messages", queue=dead_queue) == 1:
                    return found
            except AssertionError:
                pass
            return None

        found = await eventually(measured)
        assert (
            value(found, "beds_broker_dead_letters_total", broker="wBroker", code="BEDS-503") == 1
        )
        assert value(found, "beds_broker_retries_total", broker="wBroker") == 1
        assert value(found, "beds_broker_errors_total", broker="wBroker", code="BEDS-503") == 1
        age = value(found, "beds_dead_letter_oldest_age_seconds", queue=dead_queue)
        assert 0 <= age < 60

        await asyncio.sleep(0.5)  # several polls: reading the head loses nothing
        status = await status_of(node)
        assert status["dead_letter_queue"]["depth"] == 1
        assert status["dead_letter_queue"]["oldest_age_seconds"] >= 0.5
        assert {b["name"]: b["dead_lettered"] for b in status["brokers"]}["wBroker"] == {
            "BEDS-503": 1
        }


async def test_a_busy_port_is_a_warning_in_development(start_node: StartNode) -> None:
    async with start_node(TELEMETRY) as first:
        assert first.telemetry is not None
        port = first.telemetry.server.port
        async with start_node(f"[telemetry]\nport = {port}\n") as second:
            check = next(c for c in second.checks if c.name == "telemetry")
            assert check.status == "warning"
            assert f"cannot listen on 127.0.0.1:{port}" in check.detail
            assert second.telemetry_url is None
            assert second.ready


async def test_beds_status_prints_the_running_node(start_node: StartNode) -> None:
    async with start_node(TELEMETRY) as node, client_of(node) as client:
        await client.create("note", {"text": "status"})
        assert node.telemetry_url is not None
        await eventually(
            lambda: asyncio.sleep(0, node.telemetry is not None and node.telemetry.poller.dead)
        )

        async def beds(*args: str) -> tuple[int, str, str]:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "beds",
                "status",
                *args,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await process.communicate()
            assert process.returncode is not None
            return process.returncode, out.decode(), err.decode()

        code, out, err = await beds("--url", node.telemetry_url)
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].startswith(f"node t1 (role appServer, env {node.config.node.env}")
        assert lines[0].endswith(": ready")
        header = next(line for line in lines if line.startswith("BROKER"))
        assert "QUEUE DEPTH" in header
        assert "HANDLED" in header
        assert "OVER BUDGET" in header
        write = next(line for line in lines if line.startswith("wBroker"))
        assert write.split()[1:4] == ["0", "0", "1"]  # queue depth, in flight, handled
        assert f"dead-letter queue beds.{node.config.node.env}.dead: 0 messages" in out

        code, out, err = await beds("--url", node.telemetry_url + "/status", "--json")
        assert code == 0, err
        assert orjson.loads(out)["brokers"][1]["handled"] == 1

        code, out, err = await beds("--url", "http://127.0.0.1:9/")
        assert code == 1
        assert err.startswith("beds: error: no node answers at http://127.0.0.1:9/status")
