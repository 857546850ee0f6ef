"""Operator commands through a real RabbitMQ: an admin-class broker publishes them on the control
stream, the nodes they name pause, resume or drain, and the operator gets their answers."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from beds.config import load_config
from beds.errors import ValidationFailed
from beds.node import BedsNode
from beds.plugins import make_plugin_manager
from beds.routing import OPERATOR_TEMPLATE
from beds.testing import TestIdentity, unique_name
from tests.helpers import until
from tests.integration.amqp.helpers import MemoryPlugin, client_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from beds.envelopes import Response
    from tests.integration.amqp.helpers import StartNode


@contextlib.asynccontextmanager
async def ops_node(tmp_path: Path, amqp_url: str, env: str) -> AsyncIterator[BedsNode]:
    """A node of a role whose one broker serves the admin class (as the seed adminBrokerIn)."""
    path = tmp_path / f"{unique_name('ops')}.toml"
    path.write_text(
        f"""
schema_version = 1
[node]
name = "ops"
role = "ops"
env = "{env}"
drain_seconds = 2
[amqp]
url = "{amqp_url}"
events_exchange = "beds.events.{env}"
logs_exchange = "beds.logs.{env}"
dead_letter_exchange = "beds.dlx.{env}"
control_exchange = "beds.control.{env}"
[lineage]
enabled = false
[roles.ops.brokers.opsIn]
instances = 1
bindings = ["*.admin"]
""",
        encoding="utf-8",
    )
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(MemoryPlugin())
    async with BedsNode(load_config(path, environ={}), plugin_manager=pm) as node:
        yield node


async def command(ops: BedsNode, token: str | None = None, **payload: Any) -> Response:
    async with client_of(ops, timeout=15) as client:
        return await client.call(OPERATOR_TEMPLATE, "create", {"wait": 1.0, **payload}, token=token)


async def test_a_paused_broker_takes_nothing_until_it_is_resumed(
    start_node: StartNode, tmp_path: Path, amqp_url: str
) -> None:
    env = unique_name("env")
    async with start_node(env=env, name="app-1") as app, ops_node(tmp_path, amqp_url, env) as ops:
        async with client_of(app) as client:
            created = await client.create("note", {"text": "kept"})
        paused = await command(ops, command="pause", broker="rBroker", node="app-1")
        assert paused.ok, paused.error
        assert paused.data["answered"] == [
            {
                "node": "app-1",
                "command": "pause",
                "brokers": {"mBroker": "consuming", "rBroker": "paused", "wBroker": "consuming"},
            }
        ]
        assert app.pools["rBroker"].paused
        assert not app.pools["rBroker"].consuming
        assert app.state == "ready"  # one paused broker is an operator's choice, not a failure
        async with client_of(app, timeout=20) as client:
            read = asyncio.create_task(client.fetch("note", "by_id", {"id": created["id"]}))
            await asyncio.sleep(1.0)
            assert not read.done()  # waits in the queue
            assert (await client.create("note", {"text": "writes go on"}))["id"]
            resumed = await command(ops, command="resume", broker="rBroker", node="app-1")
            assert resumed.data["answered"][0]["brokers"]["rBroker"] == "consuming"
            assert await asyncio.wait_for(read, 10) == [{"id": created["id"], "text": "kept"}]


async def test_drain_pauses_every_broker_and_marks_the_node(
    start_node: StartNode, tmp_path: Path, amqp_url: str
) -> None:
    env = unique_name("env")
    async with (
        start_node(env=env, name="app-1") as first,
        start_node(env=env, name="app-2") as second,
        ops_node(tmp_path, amqp_url, env) as ops,
    ):
        drained = await command(ops, command="drain", node="app-2")
        assert [answer["node"] for answer in drained.data["answered"]] == ["app-2"]
        assert second.state == "draining"
        assert not any(pool.consuming for pool in second.pools.values())
        assert first.state == "ready"
        async with client_of(first) as client:  # the environment still serves: app-1 does
            for number in range(5):
                assert (await client.create("note", {"text": f"n{number}"}))["id"]
        everyone = await command(ops, command="resume", broker="*")
        assert {answer["node"] for answer in everyone.data["answered"]} == {"app-1", "app-2", "ops"}
        await until(lambda: second.state == "ready")
        # A node that starts now replays the stream: it does not apply the old commands.
        async with start_node(env=env, name="app-3") as late:
            await asyncio.sleep(0.5)
            assert late.state == "ready"
            assert not any(pool.paused for pool in late.pools.values())


async def test_only_admins_send_commands_and_bad_ones_are_refused(
    start_node: StartNode, tmp_path: Path, amqp_url: str
) -> None:
    env = unique_name("env")
    async with start_node(env=env, name="app-1") as app, ops_node(tmp_path, amqp_url, env) as ops:
        member = TestIdentity.development(env).token("mia", ("member",))
        refused = await command(ops, token=member, command="drain")
        assert refused.error is not None
        assert refused.error.code == "BEDS-403"
        bad = await command(ops, command="reboot", broker="a b", extra=1)
        assert bad.error is not None
        assert bad.error.code == ValidationFailed.CODE
        assert list(bad.error.details) == [
            "$.payload.extra: is not a command key",
            "$.payload.command: must be one of drain, pause, resume",
            "$.payload.broker: must be a name or '*'",
        ]
        unknown = await command(ops, command="pause", broker="nope", node="app-1")
        assert unknown.data["answered"] == [
            {"node": "app-1", "command": "pause", "error": "this node runs no broker 'nope'"}
        ]
        assert app.state == "ready"
        assert not any(pool.paused for pool in app.pools.values())
