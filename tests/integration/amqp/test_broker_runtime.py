"""The broker runtime over real RabbitMQ, with an in-memory store (stores have own tests)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import aiormq
import orjson
import pytest
from pamqp.commands import Basic

from beds.client import BedsClient
from beds.envelopes import Operation
from beds.errors import (
    BrokerUnavailable,
    NotFound,
    PublishError,
    ReplyTimeout,
    UnknownTemplate,
    ValidationFailed,
)
from beds.namaste import CallContext, Record
from beds.node import BedsNode
from beds.templates import Template
from beds.testing import MemoryAdapter, unique_name

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    TakeDeadLetter = Callable[[BedsNode], Awaitable[aiormq.abc.DeliveredMessage]]


async def test_crud_round_trip(client: BedsClient) -> None:
    created = await client.create("note", {"text": "hello"})
    assert set(created) == {"id"}
    rows = await client.fetch("note", "by_id", {"id": created["id"]})
    assert rows == [{"id": created["id"], "text": "hello"}]
    await client.update("note", {"id": created["id"], "text": "bye"})
    assert (await client.fetch("note", "by_text", {"text": "bye"}))[0]["id"] == created["id"]
    assert await client.delete("note", {"id": created["id"]}) == {"deleted": 1}
    with pytest.raises(NotFound):
        await client.delete("note", {"id": created["id"]})


async def test_ping_is_answered_without_a_store(client: BedsClient, node: BedsNode) -> None:
    response = await client.ping()
    assert response.ok
    assert response.data == {"pong": "t1"}


async def test_many_requests_in_flight_on_one_connection(client: BedsClient) -> None:
    results = await asyncio.gather(*(client.create("note", {"text": f"n{i}"}) for i in range(200)))
    assert len({r["id"] for r in results}) == 200
    assert client.pending == 0


async def test_bad_inputs_get_deterministic_errors(client: BedsClient) -> None:
    with pytest.raises(UnknownTemplate):
        await client.fetch("nope", "by_id", {"id": 1})
    first = await client.call("note", Operation.CREATE, {"text": "x" * 21, "colour": 1})
    second = await client.call("note", Operation.CREATE, {"text": "x" * 21, "colour": 1})
    assert first.error == second.error
    assert first.error is not None
    assert first.error.code == ValidationFailed.CODE
    assert first.error.details == (
        "$.payload.colour: is not a field of this operation",
        "$.payload.text: must be at most 20 characters, got 21",
    )


async def test_a_channel_closed_by_rabbitmq_does_not_leak_its_connection(amqp_url: str) -> None:
    # Publishing to an exchange that does not exist makes RabbitMQ close the channel only.
    client = BedsClient(amqp_url, exchange=unique_name("missing"), timeout=2)
    connections = []
    try:
        for _ in range(3):
            with pytest.raises(BrokerUnavailable):
                await client.ping()
            connections.append(client._connection)
    finally:
        await client.close()
    assert len({id(connection) for connection in connections}) == 3
    assert all(connection is not None and connection.is_closed for connection in connections)


async def test_unroutable_request_fails_fast(amqp_url: str) -> None:
    async with BedsClient(amqp_url, exchange="amq.topic", timeout=5) as c:
        with pytest.raises(PublishError):
            await c.fetch("note", "by_id", {"id": 1})


async def test_timeout_leaves_nothing_behind(
    node: BedsNode, dead_letter: TakeDeadLetter, client_for: Callable[..., BedsClient]
) -> None:
    # A broker type with no consumers: bind a queue nobody reads, so the request waits.
    async with client_for(node, timeout=0.3) as c:
        pool = node.pools["rBroker"]
        await pool.stop(0)
        with pytest.raises(ReplyTimeout):
            await c.fetch("note", "by_id", {"id": 1})
        assert c.pending == 0
    # The expired request is not dropped silently: RabbitMQ dead-letters it.
    message = await dead_letter(node)
    deaths: Any = (message.header.properties.headers or {})["x-death"]
    assert deaths[0]["reason"] in (b"expired", "expired")


async def raw_publish(
    node: BedsNode, body: bytes, *, reply_to: str | None, routing_key: str
) -> None:
    connection = await aiormq.connect(node.config.amqp.url)
    try:
        channel = await connection.channel()
        await channel.basic_publish(
            body,
            exchange=node.config.amqp.events_exchange,
            routing_key=routing_key,
            properties=Basic.Properties(
                content_type="application/json", reply_to=reply_to, message_id="m1"
            ),
        )
    finally:
        await connection.close()


async def test_not_json_gets_an_error_reply_and_the_broker_lives(
    node: BedsNode, client: BedsClient
) -> None:
    connection = await aiormq.connect(node.config.amqp.url)
    try:
        channel = await connection.channel()
        replies: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_reply(message: aiormq.abc.DeliveredMessage) -> None:
            replies.put_nowait(message.body)

        await channel.basic_consume("amq.rabbitmq.reply-to", on_reply, no_ack=True)
        await channel.basic_publish(
            b"\x00not json{",
            exchange=node.config.amqp.events_exchange,
            routing_key="note.read",
            properties=Basic.Properties(
                content_type="application/json",
                reply_to="amq.rabbitmq.reply-to",
                correlation_id="c1",
            ),
        )
        reply = orjson.loads(await asyncio.wait_for(replies.get(), 5))
    finally:
        await connection.close()
    assert reply["ok"] is False
    assert reply["error"]["code"] == "BEDS-400"
    assert node.pools["rBroker"].size == 2
    assert (await client.ping()).ok


async def test_no_reply_to_is_dead_lettered_with_a_reason(
    node: BedsNode, client: BedsClient, dead_letter: TakeDeadLetter
) -> None:
    await raw_publish(node, b'{"operation": "ping"}', reply_to=None, routing_key="note.read")
    message = await dead_letter(node)
    headers = message.header.properties.headers or {}
    assert headers["x-beds-error-code"] == "BEDS-400"
    assert "reply_to" in str(headers["x-beds-reason"])
    assert message.body == b'{"operation": "ping"}'
    assert (await client.ping()).ok


async def test_a_dying_broker_task_is_replaced_and_its_message_redelivered(
    node: BedsNode, client: BedsClient
) -> None:
    pool = node.pools["wBroker"]
    memory = next(iter(node.adapters.values()))
    assert isinstance(memory, MemoryAdapter)
    original = memory.create
    crashes: list[int] = []

    async def crash_once(template: Template, record: Record, ctx: CallContext) -> Record:
        if not crashes:
            crashes.append(1)
            raise asyncio.CancelledError  # escapes the handler: the task dies
        return await original(template, record, ctx)

    memory.create = crash_once  # type: ignore[method-assign]
    created = await client.create("note", {"text": "survivor"})
    assert created["id"] >= 1
    assert pool.replaced == 1
    assert pool.size == 2
