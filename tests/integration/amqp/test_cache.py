"""The fetch cache on two real nodes: a write on one is never read old from the other.

Both nodes serve one environment and share a store; the invalidation travels on the real
control channel (a RabbitMQ stream). Reads go to node B's dispatcher and writes to node A's,
so each side is known.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from beds import hookimpl
from beds.codec import encode_request
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
