"""The fetch cache on two real nodes: a write on one is never read old from the other.

Both nodes serve one environment and share a store; the invalidation travels on the real
control channel (node B's cache invalidation queue, bound to the live exchange). Reads go to
node B's dispatcher and writes to node A's, so each side is known.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import aiormq

from beds import hookimpl
from beds.codec import encode_request
from beds.dispatch.cache import INVALIDATE
from beds.envelopes import Operation, Request, Response
from beds.registry import AdapterRegistry, TemplateRegistry
from beds.testing import MemoryAdapter, unique_name

if TYPE_CHECKING:
    from beds.node import BedsNode
    from tests.integration.amqp.helpers import StartNode

CACHED = """
name = "board"
store = "shared"
tla = "brd"
key = ["id"]
[capabilities]
cache = true
cache_ttl = 300
[fields.id]
type = "int"
[fields.text]
type = "str"
[operations.create]
params = ["id", "text"]
[operations.update]
params = ["id", "text"]
[queries.by_id]
params = ["id"]
"""

BOUND = 1.0
"""Seconds after a write's reply within which every node reads the new value."""


class SharedStore:
    """One memory store for both nodes (as one database serves two nodes)."""

    def __init__(self) -> None:
        self.adapter = MemoryAdapter("shared")

    @hookimpl
    def beds_register_adapters(self, registry: AdapterRegistry) -> None:
        registry.add(store="shared", factory=lambda settings: self.adapter)

    @hookimpl
    def beds_register_templates(self, registry: TemplateRegistry) -> None:
        registry.add_text(CACHED, source="board.toml")


async def call(node: BedsNode, broker: str, operation: str, payload: dict[str, Any]) -> Response:
    body = encode_request(
        Request(operation=Operation(operation), template="board", payload=payload)
    )
    _, response = await node.dispatchers[broker].handle(body, "application/json")
    return response


async def test_a_write_on_node_a_is_never_read_old_on_node_b(start_node: StartNode) -> None:
    env, shared = unique_name("env"), SharedStore()
    extra = '[stores.shared]\n[auth]\nopen_templates = ["board"]\n'
    async with (
        start_node(extra, env=env, name="a", plugins=(shared,)) as a,
        start_node(extra, env=env, name="b", plugins=(shared,)) as b,
    ):
        assert a.cache is not None
        assert b.cache is not None
        assert (await call(a, "wBroker", "create", {"id": 1, "text": "v0"})).ok
        query = {"query": "by_id", "params": {"id": 1}}
        for version in range(1, 6):
            warm = await call(b, "rBroker", "fetch", query)  # fill B's cache with the old value
            assert warm.ok, warm.error
            assert (await call(b, "rBroker", "fetch", query)).meta.cached
            written = await call(a, "wBroker", "update", {"id": 1, "text": f"v{version}"})
            assert written.ok, written.error
            answered = time.monotonic()
            while True:  # B may answer old for a moment, never after the bound
                read = await call(b, "rBroker", "fetch", query)
                assert read.data is not None
                if read.data[0]["text"] == f"v{version}":
                    break
                assert time.monotonic() - answered < BOUND, "B served the old value too long"
                await asyncio.sleep(0.005)
            for _ in range(20):  # and once new, never old again
                read = await call(b, "rBroker", "fetch", query)
                assert read.data is not None
                assert read.data[0]["text"] == f"v{version}"
        assert b.cache.invalidations >= 5
        assert b.cache.hits >= 5


async def test_a_node_started_later_replays_no_invalidation_and_hears_new_ones(
    start_node: StartNode,
) -> None:
    """Invalidations travel on a queue of each caching node's own, read from the moment it
    attaches: a starting node's cache is empty, so the ones before it are of no use to it."""
    env, shared = unique_name("env"), SharedStore()
    extra = '[stores.shared]\n[auth]\nopen_templates = ["board"]\n'
    async with start_node(extra, env=env, name="a", plugins=(shared,)) as a:
        assert (await call(a, "wBroker", "create", {"id": 1, "text": "v0"})).ok
        for version in range(1, 21):
            assert (await call(a, "wBroker", "update", {"id": 1, "text": f"v{version}"})).ok
        assert a.control is not None
        assert a.control.published[INVALIDATE] == 21
        async with start_node(extra, env=env, name="late", plugins=(shared,)) as late:
            assert late.control is not None
            await asyncio.sleep(1.0)  # time enough for a replay to arrive, were there one
            assert late.control.received[INVALIDATE] == 0
            assert late.control.received["node.status"] > 0  # the control stream is replayed
            query = {"query": "by_id", "params": {"id": 1}}
            assert (await call(late, "rBroker", "fetch", query)).ok
            assert (await call(late, "rBroker", "fetch", query)).meta.cached
            assert (await call(a, "wBroker", "update", {"id": 1, "text": "new"})).ok
            deadline = time.monotonic() + 10
            while late.control.received[INVALIDATE] < 1:
                assert time.monotonic() < deadline, "the late node never heard the invalidation"
                await asyncio.sleep(0.01)
            read = await call(late, "rBroker", "fetch", query)
            assert read.data is not None
            assert read.data[0]["text"] == "new"


async def exists(url: str, queue: str) -> bool:
    """Whether RabbitMQ has ``queue`` (a passive declare, which declares nothing)."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        try:
            await channel.queue_declare(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        except aiormq.exceptions.ChannelLockedResource:
            return True  # exclusive to another connection: there
        return True
    finally:
        await connection.close()


async def test_a_node_declares_only_the_side_reads_it_has_handlers_for(
    start_node: StartNode,
) -> None:
    """A caching node reads invalidations from a queue of its own, gone with its connection,
    and declares no live stream (no live handler): a stream keeps files open in RabbitMQ until
    deleted, so one per kind for every environment ran RabbitMQ out of file descriptors."""
    env, shared = unique_name("env"), SharedStore()
    extra = '[stores.shared]\n[auth]\nopen_templates = ["board"]\n'
    async with start_node(extra, env=env, name="a", plugins=(shared,)) as a:
        assert a.control is not None
        url = a.config.amqp.url
        assert sorted(a.control.side_queues) == ["cache"]
        queue = a.control.side_queues["cache"]
        assert queue.startswith("amq.gen-")
        assert await exists(url, queue)
        assert not await exists(url, f"beds.{env}.live")
        assert await exists(url, f"beds.{env}.control")
    assert not await exists(url, queue)
