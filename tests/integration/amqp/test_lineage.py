"""Lineage over the real RabbitMQ: what a request causes, requests included, carries its parent.

The node publishes its events in batches on the logs exchange; the test reads them from a
queue of its own bound there (``log.#``), as an admin node's logs broker would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import aiormq
import pytest

from beds import hookimpl
from beds.client import BedsClient
from beds.lineage import Event, decode_events

if TYPE_CHECKING:
    from beds.envelopes import Request, Response
    from beds.node import BedsNode
    from tests.integration.amqp.helpers import StartNode

    ClientFor = Callable[..., BedsClient]

LINEAGE = """
[lineage]
flush_interval = 0.02
"""


class Collected:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def where(self, **fields: Any) -> list[Event]:
        return [e for e in self.events if all(getattr(e, k) == v for k, v in fields.items())]

    async def until(self, count: int, **fields: Any) -> list[Event]:
        for _ in range(200):
            found = self.where(**fields)
            if len(found) >= count:
                return found
            await asyncio.sleep(0.025)
        raise AssertionError(f"no {count} events with {fields} in {self.events}")


@contextlib.asynccontextmanager
async def collect_events(node: BedsNode) -> AsyncIterator[Collected]:
    collected = Collected()
    connection = await aiormq.connect(node.config.amqp.url)
    try:
        channel = await connection.channel()
        declared = await channel.queue_declare("", exclusive=True, auto_delete=True)
        queue = declared.queue
        assert queue is not None
        await channel.queue_bind(queue, node.config.amqp.logs_exchange, routing_key="log.#")

        async def on_batch(message: aiormq.abc.DeliveredMessage) -> None:
            collected.events.extend(decode_events(message.body))

        await channel.basic_consume(queue, on_batch, no_ack=True)
        yield collected
    finally:
        await connection.close()


class FetchAfterCreate:
    """A plugin whose hook sends another request while the node handles a create."""

    def __init__(self) -> None:
        self.client: BedsClient | None = None
        self.fetched: list[Any] = []

    @hookimpl
    async def beds_after_dispatch(self, request: Request, response: Response) -> None:
        if request.operation.value == "create" and response.ok and self.client is not None:
            self.fetched.append(
                await self.client.fetch("note", "by_id", {"id": response.data["id"]})
            )


async def test_a_request_sent_while_handling_one_is_its_child(
    start_node: StartNode, client_for: ClientFor
) -> None:
    plugin = FetchAfterCreate()
    async with (
        start_node(LINEAGE, plugins=(plugin,)) as node,
        collect_events(node) as events,
        client_for(node) as client,
        client_for(node) as inner,
    ):
        plugin.client = inner
        response = await client.call("note", "create", {"text": "parent"})
        assert response.ok, response.error
        assert plugin.fetched == [[{"id": response.data["id"], "text": "parent"}]]

        [create] = await events.until(1, kind="request", operation="create")
        assert create.event_id == response.meta.event_id
        assert (create.parent_id, create.depth) == ("", 0)
        [fetch] = await events.until(1, kind="request", operation="fetch")
        assert fetch.parent_id == create.event_id, "the hook's request is not the create's child"
        assert fetch.depth == 1
        db_calls = await events.until(2, kind="db")
        assert {(e.parent_id, e.depth, e.message) for e in db_calls} == {
            (create.event_id, 1, "memory create"),
            (fetch.event_id, 2, "memory fetch"),
        }


async def test_a_client_joins_an_existing_tree_with_parent_id(
    start_node: StartNode, client_for: ClientFor
) -> None:
    async with (
        start_node(LINEAGE) as node,
        collect_events(node) as events,
        client_for(node) as client,
    ):
        root = await client.call("note", "create", {"text": "root"})
        child = await client.call(
            "note",
            "fetch",
            {"query": "by_text", "params": {"text": "root"}},
            parent_id=root.meta.event_id,
        )
        grandchild = await client.call(
            "note",
            "fetch",
            {"query": "by_text", "params": {"text": "root"}},
            parent_id=child.meta.event_id,
            depth=2,
        )
        outside = await client.call("note", "fetch", {"query": "by_text", "params": {"text": "x"}})
        requests = {e.event_id: e for e in await events.until(4, kind="request")}
        assert (requests[child.meta.event_id].parent_id, requests[child.meta.event_id].depth) == (
            root.meta.event_id,
            1,
        )
        assert requests[grandchild.meta.event_id].parent_id == child.meta.event_id
        assert requests[grandchild.meta.event_id].depth == 2
        assert requests[outside.meta.event_id].parent_id == "", "a call outside a node is a root"


async def test_a_request_chain_deeper_than_the_limit_is_refused_by_the_client(
    client_for: ClientFor, node: BedsNode
) -> None:
    async with client_for(node) as client:
        with pytest.raises(ValueError, match="depth should be in range"):
            await client.call(
                "note",
                "fetch",
                {"query": "by_text", "params": {"text": "x"}},
                parent_id="n.e.1",
                depth=65,
            )
