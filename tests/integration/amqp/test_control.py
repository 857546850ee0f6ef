"""The control-event channel on a real RabbitMQ stream: heartbeats, replay, origin checks."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import aiormq
import orjson
from pamqp.commands import Basic

from beds.heartbeat import HEARTBEAT, read_peers
from beds.testing import unique_name
from beds.transport.control_event import ControlEvent, encode_event
from tests.helpers import until

if TYPE_CHECKING:
    from beds.node import BedsNode
    from tests.integration.amqp.helpers import StartNode

FAST_BEATS = """
[control]
heartbeat_seconds = 0.1
"""


def peers(node: BedsNode) -> dict[str, dict[str, Any]]:
    assert node.heartbeat is not None
    return node.heartbeat.peers


async def test_nodes_hear_each_other_and_a_late_node_learns_the_past(
    start_node: StartNode,
) -> None:
    env = unique_name("env")
    async with start_node(FAST_BEATS, env=env, name="first") as first:
        await until(lambda: "first" in peers(first))
        async with start_node(FAST_BEATS, env=env, name="second") as second:
            await until(lambda: {"first", "second"} <= set(peers(first)))
            await until(lambda: {"first", "second"} <= set(peers(second)))
            beat = peers(first)["second"]
            assert beat["role"] == "appServer"
            assert beat["state"] == "ready"
            assert set(beat["brokers"]) == {"rBroker", "wBroker", "mBroker"}
            assert beat["user"] == "guest"  # vouched for by RabbitMQ
    # Both stopped. A node that starts now replays the stream and learns of both.
    async with start_node(FAST_BEATS, env=env, name="late") as late:
        await until(lambda: {"first", "second", "late"} <= set(peers(late)))
        assert late.control is not None
        assert late.control.received[HEARTBEAT] >= 3


async def test_the_environments_heartbeats_can_be_read_without_a_node(
    start_node: StartNode,
) -> None:
    async with start_node(FAST_BEATS, name="reader-target") as node:
        await until(lambda: "reader-target" in peers(node))
        status = await read_peers(node.config, quiet=0.3)
    assert status["env"] == node.config.node.env
    assert status["peers"]["reader-target"]["state"] in ("ready", "stopping")


async def publish_raw(
    node: BedsNode, body: bytes, user_id: str | None, routing_key: str = "test.note"
) -> None:
    connection = await aiormq.connect(node.config.amqp.url)
    try:
        channel = await connection.channel()
        await channel.basic_publish(
            body,
            exchange=node.config.amqp.control_exchange,
            routing_key=routing_key,
            properties=Basic.Properties(content_type="application/json", user_id=user_id),
        )
    finally:
        await connection.close()


async def test_events_without_a_vouched_origin_or_malformed_are_refused_and_counted(
    start_node: StartNode,
) -> None:
    async with start_node() as node:
        control = node.control
        assert control is not None
        heard: list[ControlEvent] = []
        control.subscribe("test.note", heard.append)
        env = node.config.node.env
        good = encode_event(ControlEvent(kind="test.note", origin="x", env=env, data={"n": 1}))
        other = encode_event(ControlEvent(kind="test.note", origin="x", env="elsewhere"))
        await publish_raw(node, other, user_id="guest")  # another environment's event
        await publish_raw(node, good, user_id=None)  # no origin RabbitMQ vouched for
        await publish_raw(node, b'{"kind": "test.note", "user": "admin"}', user_id="guest")
        await publish_raw(node, orjson.dumps({"kind": "BAD KIND"}), user_id="guest")
        await publish_raw(node, good, user_id="guest")
        await until(lambda: len(heard) == 1)
        assert heard[0].data == {"n": 1}
        assert heard[0].user == "guest"
        assert control.refused == {"untrusted": 1, "malformed": 2, "other-env": 1}


async def test_only_trusted_users_are_heard(start_node: StartNode) -> None:
    trusted = FAST_BEATS + 'trusted_users = ["beds-app"]\n'
    async with start_node(trusted) as node:
        control = node.control
        assert control is not None
        await until(lambda: control.refused["untrusted"] >= 2)  # its own beats, as guest
        assert peers(node) == {}


async def test_trust_per_kind_and_untrusted_events_are_dead_lettered_with_a_code(
    start_node: StartNode,
) -> None:
    from beds.dlq import DeadLetterQueue

    # guest (every test connection) is trusted for test.note only: other kinds need beds-app.
    trust = (
        '[control]\ntrusted_users = ["beds-app"]\n'
        '[control.trusted_by_kind]\n"test.note" = ["guest"]\n'
    )
    async with start_node(trust) as node:
        control = node.control
        assert control is not None
        heard: list[ControlEvent] = []
        control.subscribe("test.note", heard.append)
        control.subscribe("auth.revoke", heard.append)
        env = node.config.node.env
        note = encode_event(ControlEvent(kind="test.note", env=env, data={"n": 1}))
        revoke = encode_event(ControlEvent(kind="auth.revoke", env=env, data={"sid": "x"}))
        # A revocation dressed as a note: its kind is not its routing key.
        await publish_raw(node, revoke, user_id="guest")
        await publish_raw(node, note, user_id="guest")
        await publish_raw(node, revoke, user_id="guest", routing_key="auth.revoke")
        await until(lambda: len(heard) == 1 and control.refused["untrusted"] >= 1)
        assert [event.kind for event in heard] == ["test.note"]
        assert control.refused["malformed"] == 1
        async with DeadLetterQueue(node.config) as dead:
            await until_async(lambda: dead.depth(), lambda depth: depth >= 1)
            letters = await dead.peek()
    refused = [letter for letter in letters if letter.routing_key == "auth.revoke"]
    assert refused, letters
    assert refused[0].reason == "BEDS-403O"
    assert refused[0].node == node.config.node.name


async def until_async(probe: Any, accept: Any, seconds: float = 5.0) -> None:
    """Wait until ``accept(await probe())`` is true (polling)."""
    for _ in range(int(seconds / 0.05)):
        if accept(await probe()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition did not become true in time")


async def test_events_past_the_stream_prefetch_are_all_read_live_and_replayed(
    start_node: StartNode,
) -> None:
    """The stream's acks go one per loop turn: credit keeps flowing past the prefetch (100)."""
    events = 1000
    env = unique_name("env")
    async with start_node(env=env, name="reader") as node:
        control = node.control
        assert control is not None
        connection = await aiormq.connect(node.config.amqp.url)
        try:
            channel = await connection.channel()
            for n in range(events):
                note = ControlEvent(kind="test.note", origin="x", env=env, data={"n": n})
                await channel.basic_publish(
                    encode_event(note),
                    exchange=node.config.amqp.control_exchange,
                    routing_key="test.note",
                    properties=Basic.Properties(content_type="application/json", user_id="guest"),
                )
        finally:
            await connection.close()
        await until(lambda: control.received["test.note"] == events)
    async with start_node(env=env, name="late") as late:
        assert late.control is not None
        await until(
            lambda: late.control is not None and late.control.received["test.note"] == events
        )
