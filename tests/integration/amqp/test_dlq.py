"""``beds dlq list|replay|purge`` against RabbitMQ: the command as an operator runs it.

Each test runs ``python -m beds dlq ...`` in a subprocess whose stdin is not a terminal, with
the config file of its own environment, and deletes that environment's queues and exchanges
afterwards.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiormq
import attrs
import orjson
import pytest
from pamqp.commands import Basic

from beds.dlq import DeadLetterQueue
from beds.errors import StoreUnavailable
from beds.testing import MemoryAdapter, unique_name
from beds.transport.amqp import dead_letter_queue

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from beds.client import BedsClient
    from beds.config import Config
    from beds.namaste import CallContext, Record
    from beds.node import BedsNode
    from beds.templates import Template
    from tests.integration.amqp.helpers import StartNode

    ClientFor = Callable[..., BedsClient]
    ConfigFile = Callable[..., Path]
    Forget = Callable[[Config], None]

FAST_RETRIES = """
[reliability]
retry_attempts = 3
retry_initial_delay = 0.01
retry_max_delay = 0.05
max_deliveries = 3
"""
UNBOUND = "ghost.unbound"
"""A routing key no broker queue of the test role binds (they bind ``*.read``, ``*.write``…)."""


@attrs.frozen
class Run:
    code: int
    out: str
    err: str


async def beds_dlq(config: Path, *args: str) -> Run:
    """Run ``beds dlq ARGS --config CONFIG`` with stdin that is not a terminal."""
    environ = {name: value for name, value in os.environ.items() if not name.startswith("BEDS_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "beds",
        "dlq",
        *args,
        "--config",
        str(config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environ,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


async def listed(config: Path) -> dict[str, Any]:
    run = await beds_dlq(config, "list", "--json")
    assert run.code == 0, run.err
    document: dict[str, Any] = orjson.loads(run.out)
    return document


def config_path(node: BedsNode) -> Path:
    return Path(node.config.files[0])


async def depth(config: Config) -> int:
    async with DeadLetterQueue(config) as dlq:
        return await dlq.depth()


async def wait_for_depth(config: Config, expected: int) -> None:
    for _ in range(100):
        if await depth(config) == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the dead-letter queue holds {await depth(config)}, not {expected}")


def request(text: str) -> bytes:
    """A create request as any AMQP client can send it: no deadline in its meta."""
    return orjson.dumps({"operation": "create", "template": "note", "payload": {"text": text}})


async def publish(
    config: Config, body: bytes, routing_key: str, *, exchange: str | None = None, **props: Any
) -> None:
    """Publish (confirmed) to the environment's events exchange, or to ``exchange``."""
    connection = await aiormq.connect(config.amqp.url)
    try:
        channel = await connection.channel()
        await channel.basic_publish(
            body,
            exchange=config.amqp.events_exchange if exchange is None else exchange,
            routing_key=routing_key,
            properties=Basic.Properties(content_type="application/json", **props),
        )
    finally:
        await connection.close()


async def reply_queue(config: Config) -> str:
    """A queue replies can go to, though nobody reads it (the test vhost goes with the run)."""
    name = unique_name("replies")
    connection = await aiormq.connect(config.amqp.url)
    try:
        channel = await connection.channel()
        await channel.queue_declare(name)
    finally:
        await connection.close()
    return name


async def dead_letter_directly(config: Config, routing_key: str = UNBOUND) -> str:
    """Publish a message straight to the dead-letter exchange; return its message id."""
    message_id = unique_name("m")
    await publish(
        config,
        request("direct"),
        routing_key,
        exchange=config.amqp.dead_letter_exchange,
        message_id=message_id,
        reply_to="nobody",
    )
    return message_id


def memory(node: BedsNode) -> MemoryAdapter:
    adapter = node.adapters["memory"]
    assert isinstance(adapter, MemoryAdapter)
    return adapter


def failing_create(adapter: MemoryAdapter, failures: list[BaseException]) -> None:
    """Make the next creates raise the given exceptions, one each, then work again."""
    original = adapter.create

    async def create(template: Template, record: Record, ctx: CallContext) -> Record:
        if failures:
            raise failures.pop(0)
        return await original(template, record, ctx)

    adapter.create = create  # type: ignore[method-assign]


async def notes(client: BedsClient, text: str) -> int:
    return len(await client.fetch("note", "by_text", {"text": text}))


@pytest.fixture
async def forget() -> AsyncIterator[Forget]:
    """``forget(config)``: delete that environment's queues and exchanges after the test."""
    configs: list[Config] = []
    yield configs.append
    for config in configs:
        connection = await aiormq.connect(config.amqp.url)
        try:
            channel = await connection.channel()
            queues = [config.queue_name(broker) for broker in config.brokers]
            for queue in (dead_letter_queue(config), *queues):
                await channel.queue_delete(queue)
            amqp = config.amqp
            for exchange in (amqp.events_exchange, amqp.logs_exchange, amqp.dead_letter_exchange):
                await channel.exchange_delete(exchange)
        finally:
            await connection.close()


async def test_a_poison_message_is_listed_left_in_place_and_replayed(
    start_node: StartNode, client_for: ClientFor, forget: Forget
) -> None:
    async with start_node(FAST_RETRIES) as node, client_for(node) as client:
        forget(node.config)
        config, dead = config_path(node), dead_letter_queue(node.config)
        # Three deliveries kill the task holding the request: the fourth makes it poison.
        failing_create(memory(node), [asyncio.CancelledError() for _ in range(3)])
        text, message_id = unique_name("p"), unique_name("m")
        await publish(
            node.config, request(text), "note.write", message_id=message_id, reply_to="nobody"
        )
        await wait_for_depth(node.config, 1)

        table = await beds_dlq(config, "list")
        assert table.code == 0, table.err
        assert f"{dead}: 1 message, showing 1" in table.out
        row = table.out.splitlines()[-1]
        assert message_id in row
        assert "note.write" in row
        assert "BEDS-500 poison message: delivered 4 times without an outcome" in row
        assert text in row  # the body's preview

        document = await listed(config)
        assert document["queue"] == dead
        assert document["depth"] == 1
        [letter] = document["messages"]
        assert letter["message_id"] == message_id
        assert letter["routing_key"] == "note.write"  # the original key, not the queue's
        assert letter["source"] == "beds"
        assert letter["reason"] == "BEDS-500"
        assert "poison message" in letter["detail"]
        assert letter["queue"] == node.config.queue_name("wBroker")
        assert letter["node"] == node.config.node.name
        assert letter["redelivered"]  # listed before, and given back
        await wait_for_depth(node.config, 1)

        replay = await beds_dlq(config, "replay", "--yes")
        assert replay.code == 0, replay.err
        assert f"replayed 1 message to exchange {node.config.amqp.events_exchange}" in replay.out
        assert f"left in {dead}" in replay.out
        for _ in range(50):
            if await notes(client, text):
                break
            await asyncio.sleep(0.1)
        assert await notes(client, text) == 1
        # Its caller ("nobody") is gone: the write ran, and its outcome is kept as a dead
        # letter that a replay leaves alone (replaying it would run the write again).
        await wait_for_depth(node.config, 1)
        [kept] = (await listed(config))["messages"]
        assert kept["reason"] == "BEDS-500R"
        assert kept["executed"] is True
        assert '"status":201' in kept["reply"]
        again = await beds_dlq(config, "replay", "--yes")
        assert again.code == 0, again.err
        assert "replayed 0 messages" in again.out
        assert "not replayed (it ran; only its reply was lost" in again.out
        assert await notes(client, text) == 1


async def test_a_request_that_expired_unconsumed_is_replayed_to_a_running_node(
    start_node: StartNode, client_for: ClientFor, forget: Forget
) -> None:
    async with start_node() as first:
        forget(first.config)
        env, config = first.config.node.env, config_path(first)
    # The topology stays, but no node consumes: the request expires in the broker queue.
    text = unique_name("e")
    replies = await reply_queue(first.config)
    await publish(first.config, request(text), "note.write", expiration="100", reply_to=replies)
    await wait_for_depth(first.config, 1)
    [letter] = (await listed(config))["messages"]
    assert letter["source"] == "rabbitmq"
    assert letter["reason"] == "expired"
    assert letter["routing_key"] == "note.write"
    assert letter["queue"] == first.config.queue_name("wBroker")

    async with start_node(env=env) as second, client_for(second) as client:
        replay = await beds_dlq(config, "replay", "--yes")
        assert replay.code == 0, replay.err
        assert "replayed 1 message" in replay.out
        for _ in range(50):
            if await notes(client, text):
                break
            await asyncio.sleep(0.1)
        assert await notes(client, text) == 1
        await wait_for_depth(second.config, 0)


async def test_replay_can_give_expired_requests_a_new_deadline(
    start_node: StartNode, client_for: ClientFor, forget: Forget
) -> None:
    async with start_node() as first:
        forget(first.config)
        env, config = first.config.node.env, config_path(first)
    text = unique_name("d")
    # As BedsClient sends it: a deadline as short as its expiration, long passed at replay.
    body = orjson.dumps(
        {
            "operation": "create",
            "template": "note",
            "payload": {"text": text},
            "meta": {"deadline": time.time() + 0.1},
        }
    )
    replies = await reply_queue(first.config)
    await publish(first.config, body, "note.write", expiration="100", reply_to=replies)
    await wait_for_depth(first.config, 1)
    async with start_node(env=env) as second, client_for(second) as client:
        replay = await beds_dlq(config, "replay", "--yes", "--deadline", "30")
        assert replay.code == 0, replay.err
        for _ in range(50):
            if await notes(client, text):
                break
            await asyncio.sleep(0.1)
        assert await notes(client, text) == 1  # run, not answered BEDS-504
        await wait_for_depth(second.config, 0)


async def test_replay_selects_by_message_id_and_limit(
    start_node: StartNode, client_for: ClientFor, forget: Forget
) -> None:
    async with start_node(FAST_RETRIES) as node, client_for(node, timeout=60) as client:
        forget(node.config)
        config, dead = config_path(node), dead_letter_queue(node.config)
        # Each create fails transiently three times: answered BEDS-503, and dead-lettered.
        failing_create(memory(node), [StoreUnavailable("down") for _ in range(6)])
        first, second = unique_name("t"), unique_name("t")
        for text in (first, second):
            with pytest.raises(StoreUnavailable):
                await client.create("note", {"text": text})
        await wait_for_depth(node.config, 2)
        letters = (await listed(config))["messages"]
        assert [letter["reason"] for letter in letters] == ["BEDS-503", "BEDS-503"]
        ids = {first: letters[0]["message_id"], second: letters[1]["message_id"]}  # in order

        replay = await beds_dlq(config, "replay", "--yes", "--message-id", ids[first])
        assert replay.code == 0, replay.err
        assert "replayed 1 message" in replay.out
        assert f"1 message left in {dead}" in replay.out
        for _ in range(50):
            if await notes(client, first):
                break
            await asyncio.sleep(0.1)
        assert await notes(client, first) == 1
        assert await notes(client, second) == 0
        assert [d["message_id"] for d in (await listed(config))["messages"]] == [ids[second]]

        unknown = await beds_dlq(config, "replay", "--yes", "--message-id", "no-such-id")
        assert unknown.code == 1
        assert f"no message with message id no-such-id in {dead}" in unknown.err
        await wait_for_depth(node.config, 1)

        rest = await beds_dlq(config, "replay", "--yes", "--limit", "1")
        assert rest.code == 0, rest.err
        assert "replayed 1 message" in rest.out
        for _ in range(50):
            if await notes(client, second):
                break
            await asyncio.sleep(0.1)
        assert await notes(client, second) == 1
        await wait_for_depth(node.config, 0)


async def test_a_dead_letter_no_queue_takes_stays_and_the_replay_fails(
    start_node: StartNode, forget: Forget
) -> None:
    async with start_node() as node:
        forget(node.config)
        config, dead = config_path(node), dead_letter_queue(node.config)
        message_id = await dead_letter_directly(node.config)
        await wait_for_depth(node.config, 1)
        [letter] = (await listed(config))["messages"]
        assert letter["source"] == "unknown"
        assert letter["routing_key"] == UNBOUND

        replay = await beds_dlq(config, "replay", "--yes")
        assert replay.code == 1
        assert "replayed 0 messages" in replay.out
        assert f"not replayed (no queue is bound for {UNBOUND!r}): message id {message_id}" in (
            replay.out
        )
        assert f"1 message left in {dead}" in replay.out
        assert f"1 message could not be routed and stayed in {dead}" in replay.err
        [still] = (await listed(config))["messages"]
        assert still["message_id"] == message_id
        assert still["replays"] == 0  # not replayed: the very same message


async def test_changes_need_yes_when_stdin_is_not_a_terminal_and_purge_empties(
    start_node: StartNode, forget: Forget
) -> None:
    async with start_node() as node:
        forget(node.config)
        config, dead = config_path(node), dead_letter_queue(node.config)
        for _ in range(2):
            await dead_letter_directly(node.config)
        await wait_for_depth(node.config, 2)

        for command in ("purge", "replay"):
            refused = await beds_dlq(config, command)
            assert refused.code == 2
            assert f"refusing to {command} without --yes: stdin is not a terminal" in refused.err
            assert refused.out == ""
            await wait_for_depth(node.config, 2)

        purge = await beds_dlq(config, "purge", "--yes")
        assert purge.code == 0, purge.err
        assert f"purged 2 messages from {dead}" in purge.out
        await wait_for_depth(node.config, 0)

        for args in (["list"], ["purge", "--yes"], ["replay", "--yes"]):
            empty = await beds_dlq(config, *args)
            assert empty.code == 0, empty.err
            assert f"dead-letter queue {dead} is empty" in empty.out
        assert await listed(config) == {"queue": dead, "depth": 0, "messages": []}


async def test_a_quorum_dead_letter_queue_is_listed_and_purged(
    start_node: StartNode, forget: Forget
) -> None:
    async with start_node(queue_type="quorum") as node:
        forget(node.config)
        config = config_path(node)
        message_id = await dead_letter_directly(node.config)
        await wait_for_depth(node.config, 1)
        for _ in range(2):
            [letter] = (await listed(config))["messages"]
            assert letter["message_id"] == message_id
        await wait_for_depth(node.config, 1)
        purge = await beds_dlq(config, "purge", "--yes")
        assert purge.code == 0, purge.err
        assert "purged 1 message" in purge.out


async def test_an_environment_without_topology_names_beds_run(config_file: ConfigFile) -> None:
    env = unique_name("never")
    config = config_file(env)
    for args in (["list"], ["replay", "--yes"], ["purge", "--yes"]):
        run = await beds_dlq(config, *args)
        assert run.code == 1, args
        assert run.out == ""
        assert f"the dead-letter queue beds.{env}.dead does not exist" in run.err
        assert "(beds run)" in run.err


async def test_an_unreachable_rabbitmq_is_reported_without_the_password(
    config_file: ConfigFile,
) -> None:
    config = config_file(unique_name("env"), url="amqp://guest:s3cret-pw@127.0.0.1:1/")
    run = await beds_dlq(config, "list")
    assert run.code == 1
    assert run.err.startswith("beds: error: RabbitMQ at amqp://guest:***@127.0.0.1:1/")
    assert "is not reachable" in run.err
    assert "s3cret-pw" not in run.out + run.err
