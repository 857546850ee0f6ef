"""The settle invariant against the real RabbitMQ: every delivery is acked or dead-lettered.

Each test ends with the pool holding nothing unsettled and the node still answering pings
(``settled_and_serving``).
"""

from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING, Any

import aiormq
import orjson
import pytest
from aiormq.abc import ChannelFrame
from loguru import logger
from pamqp.commands import Basic

from beds.errors import HandlerStopped, InternalError
from beds.testing import MemoryAdapter, unique_name

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from beds.client import BedsClient
    from beds.namaste import CallContext, Record
    from beds.node import BedsNode
    from beds.templates import Template
    from tests.integration.amqp.helpers import StartNode

    TakeDeadLetter = Callable[[BedsNode], Awaitable[aiormq.abc.DeliveredMessage]]
    ClientFor = Callable[..., BedsClient]

SHORT_LIMIT = """
[reliability]
handler_budget = 0.2
settle_grace = 0.4
"""


def memory(node: BedsNode) -> MemoryAdapter:
    adapter = node.adapters["memory"]
    assert isinstance(adapter, MemoryAdapter)
    return adapter


def notes(node: BedsNode) -> list[Record]:
    return list(memory(node).tables.get("note", {}).values())


async def settled_and_serving(node: BedsNode, client: BedsClient) -> None:
    """Every pool settled what it took, and the node answers a ping within a second."""
    for _ in range(50):
        if all(pool.settle.unsettled_count == 0 for pool in node.pools.values()):
            break
        await asyncio.sleep(0.05)
    assert {
        name: pool.settle.unsettled_count for name, pool in node.pools.items()
    } == dict.fromkeys(node.pools, 0)
    assert (await client.ping(timeout=1)).ok
    assert node.reconnects == 0


async def publish(
    node: BedsNode,
    body: dict[str, Any],
    *,
    routing_key: str,
    reply_to: str,
    exchange: str | None = None,
    headers: dict[str, Any] | None = None,
) -> None:
    connection = await aiormq.connect(node.config.amqp.url)
    try:
        channel = await connection.channel()
        await channel.basic_publish(
            orjson.dumps(body),
            exchange=node.config.amqp.events_exchange if exchange is None else exchange,
            routing_key=routing_key,
            properties=Basic.Properties(
                content_type="application/json",
                reply_to=reply_to,
                correlation_id=unique_name("c"),
                headers=headers,
            ),
        )
    finally:
        await connection.close()


async def declare(node: BedsNode, arguments: dict[str, Any] | None = None) -> str:
    """A reply queue in the test's vhost (the vhost goes with the run)."""
    name = unique_name("replies")
    connection = await aiormq.connect(node.config.amqp.url)
    try:
        channel = await connection.channel()
        await channel.queue_declare(name, arguments=arguments)
    finally:
        await connection.close()
    return name


def create(text: str) -> dict[str, Any]:
    return {"operation": "create", "template": "note", "payload": {"text": text}}


async def test_a_handler_past_budget_and_grace_is_stopped_answered_and_dead_lettered(
    start_node: StartNode, client_for: ClientFor, dead_letter: TakeDeadLetter
) -> None:
    async with start_node(SHORT_LIMIT) as node, client_for(node) as client:
        adapter = memory(node)
        original = adapter.create
        hung: list[int] = []

        async def hang_once(template: Template, record: Record, ctx: CallContext) -> Record:
            if not hung:
                hung.append(1)
                await asyncio.sleep(60)
            return await original(template, record, ctx)

        adapter.create = hang_once  # type: ignore[method-assign]
        with pytest.raises(HandlerStopped) as stopped:
            await client.create("note", {"text": "hangs"})
        assert "idempotency key" in stopped.value.message
        message = await dead_letter(node)
        assert (message.header.properties.headers or {})["x-beds-error-code"] == "BEDS-504H"
        pool = node.pools["wBroker"]
        assert pool.stopped == 1
        assert pool.size == 2  # the stopped task was replaced
        assert (await client.create("note", {"text": "after"}))["id"] >= 1
        await settled_and_serving(node, client)


@pytest.mark.parametrize(
    "arguments",
    [{"x-max-length": 0, "x-overflow": "reject-publish"}, None],
    ids=["refuses-replies", "vanished"],
)
async def test_a_write_whose_reply_cannot_be_delivered_keeps_its_outcome_and_runs_once(
    start_node: StartNode,
    client_for: ClientFor,
    dead_letter: TakeDeadLetter,
    arguments: dict[str, Any] | None,
) -> None:
    async with start_node() as node, client_for(node) as client:
        reply_to = await declare(node, arguments) if arguments else unique_name("gone")
        await publish(node, create("lost reply"), routing_key="note.write", reply_to=reply_to)
        message = await dead_letter(node)
        headers = message.header.properties.headers or {}
        assert headers["x-beds-error-code"] == "BEDS-500R"
        assert headers["x-beds-executed"] is True
        reply = orjson.loads(str(headers["x-beds-reply"]))
        assert reply["status"] == 201
        assert [row["text"] for row in notes(node)] == ["lost reply"]  # ran once
        pool = node.pools["wBroker"]
        assert pool.replies_lost == 1

        # A read's reply is dropped and counted: nothing to keep.
        params = {"id": reply["data"]["id"]}
        fetch = {
            "operation": "fetch",
            "template": "note",
            "payload": {"query": "by_id", "params": params},
        }
        await publish(node, fetch, routing_key="note.read", reply_to=reply_to)
        await settled_and_serving(node, client)
        assert node.pools["wBroker"].dead_lettered == 1
        await settled_and_serving(node, client)


async def test_an_unexpected_failure_settles_the_delivery_with_one_log_line(
    node: BedsNode, client: BedsClient, dead_letter: TakeDeadLetter
) -> None:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="INFO")
    replies = node.pools["wBroker"].replies
    original = replies.send
    failures: list[int] = []

    async def broken_reply(*args: Any) -> None:
        if not failures:
            failures.append(1)
            raise RuntimeError("a bug in the reply path")
        await original(*args)

    replies.send = broken_reply  # type: ignore[method-assign,assignment]
    with pytest.raises(InternalError):
        await client.create("note", {"text": "bug"})
    message = await dead_letter(node)
    assert (message.header.properties.headers or {})["x-beds-error-code"] == "BEDS-500"
    assert (await client.create("note", {"text": "fine"}))["id"] >= 1
    await settled_and_serving(node, client)
    logger.remove(sink)
    failed = [line for line in lines if "failed handling a message" in line]
    assert len(failed) == 1
    assert "RuntimeError: a bug in the reply path" in failed[0]
    assert not any("Traceback" in line for line in lines)  # the trace goes to DEBUG, once


async def test_a_channel_rabbitmq_closes_is_opened_again(
    node: BedsNode, client: BedsClient
) -> None:
    pool = node.pools["wBroker"]
    confirms = pool.settle.confirms
    assert confirms is not None
    with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
        # An unknown exchange: RabbitMQ closes the channel (404).
        await confirms.channel.basic_publish(b"x", exchange=unique_name("nowhere"))
    for _ in range(100):
        if pool.channels_reopened and pool.consuming:
            break
        await asyncio.sleep(0.05)
    assert pool.channels_reopened == 1
    assert (await client.create("note", {"text": "again"}))["id"] >= 1
    await settled_and_serving(node, client)


async def test_a_forged_routing_header_cannot_bring_a_write_to_a_read_broker(
    node: BedsNode, client: BedsClient
) -> None:
    replies = await declare(node)
    read_queue = node.config.queue_name("rBroker")
    # Straight to the read broker's queue, claiming the write key the body matches.
    await publish(
        node,
        create("forged"),
        routing_key=read_queue,
        exchange="",
        reply_to=replies,
        headers={"x-beds-routing-key": "note.write"},
    )
    # And a create published with the read key.
    await publish(node, create("misrouted"), routing_key="note.read", reply_to=replies)
    answers = await take_replies(node, replies, 2)
    assert sorted(answer["error"]["code"] for answer in answers) == ["BEDS-405", "BEDS-405"]
    assert notes(node) == []
    await settled_and_serving(node, client)


async def take_replies(node: BedsNode, queue: str, count: int) -> list[dict[str, Any]]:
    connection = await aiormq.connect(node.config.amqp.url)
    got: list[dict[str, Any]] = []
    try:
        channel = await connection.channel()
        for _ in range(100):
            message = await channel.basic_get(queue, no_ack=True)
            if message.body:
                got.append(orjson.loads(message.body))
                if len(got) == count:
                    return got
            else:
                await asyncio.sleep(0.05)
    finally:
        await connection.close()
    raise AssertionError(f"{len(got)} of {count} replies arrived")


def _shortstr(raw: bytes) -> bytes:
    return bytes((len(raw),)) + raw


async def publish_raw(
    node: BedsNode, routing_key: bytes, header: bytes, body: bytes = b"{}"
) -> None:
    """Publish frames written by hand: bytes no AMQP library would send (not UTF-8)."""
    connection = await aiormq.connect(node.config.amqp.url)
    try:
        channel = await connection.channel()
        exchange = node.config.amqp.events_exchange.encode()
        method = (
            struct.pack(">HHH", 60, 40, 0) + _shortstr(exchange) + _shortstr(routing_key) + b"\0"
        )
        number = channel.number
        frames = [
            struct.pack(">BHI", 1, number, len(method)) + method + b"\xce",
            struct.pack(">BHI", 2, number, len(header)) + header + b"\xce",
            struct.pack(">BHI", 3, number, len(body)) + body + b"\xce",
        ]
        writer: asyncio.Queue[ChannelFrame] = channel.write_queue  # type: ignore[attr-defined]
        await writer.put(ChannelFrame(payload=b"".join(frames), should_close=False))
        await asyncio.sleep(0.2)  # let the frames leave before the connection closes
    finally:
        await connection.close()


async def test_properties_that_are_not_utf8_are_refused_and_the_connection_lives(
    node: BedsNode, client: BedsClient, dead_letter: TakeDeadLetter
) -> None:
    replies = (await declare(node)).encode()
    body = orjson.dumps(create("bytes"))
    # correlation_id (flag 0x0400) is not UTF-8; reply_to (0x0200) is a real queue.
    flags = 0x0400 | 0x0200
    header = struct.pack(">HHQH", 60, 0, len(body), flags)
    await publish_raw(
        node, b"note.write", header + _shortstr(b"\xff\xfe") + _shortstr(replies), body
    )
    refused = await dead_letter(node)
    assert (refused.header.properties.headers or {})["x-beds-error-code"] == "BEDS-400"
    assert "correlation_id" in str((refused.header.properties.headers or {})["x-beds-reason"])

    # A header table whose key is not UTF-8: the properties do not decode at all.
    table = _shortstr(b"\xff") + b"t\x01"
    header = struct.pack(">HHQH", 60, 0, len(body), 0x2000) + struct.pack(">I", len(table))
    await publish_raw(node, b"note.write", header + table, body)
    undecodable = await dead_letter(node)
    assert (undecodable.header.properties.headers or {})["x-beds-error-code"] == "BEDS-400"

    # A routing key that is not UTF-8 still matches "*.read": refused, never run.
    header = struct.pack(">HHQH", 60, 0, len(body), 0x0200) + _shortstr(replies)
    await publish_raw(node, b"\xffnote.read", header, body)
    [answer] = await take_replies(node, replies.decode(), 1)
    assert answer["error"]["code"] == "BEDS-400"
    assert notes(node) == []
    await settled_and_serving(node, client)
