"""Live templates on real nodes: a write on one node is a ``record.changed`` on the control stream.

Two nodes serve one environment from one store; node B reads the real control channel (a
RabbitMQ stream) and sees node A's writes of the live template, and none of the other one.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from beds import hookimpl
from beds.codec import encode_request
from beds.dispatch.live import RECORD_CHANGED, RECORDS_CHANGED
from beds.envelopes import Operation, Request, Response
from beds.registry import AdapterRegistry, TemplateRegistry
from beds.testing import MemoryAdapter, unique_name

if TYPE_CHECKING:
    from beds.node import BedsNode
    from beds.transport.control import ControlEvent
    from tests.integration.amqp.helpers import StartNode

BOARD = """
name = "{name}"
store = "shared"
tla = "brd"
key = ["id"]
[capabilities]
live = {live}
[fields.id]
type = "int"
[fields.text]
type = "str"
[operations.create]
params = ["id", "text"]
returns = ["id"]
[operations.delete]
params = ["id"]
[batch]
max_records = 10
[queries.by_id]
params = ["id"]
"""


class SharedStore:
    """One memory store for both nodes, serving a live template and a quiet one."""

    def __init__(self) -> None:
        self.adapter = MemoryAdapter("shared")

    @hookimpl
    def beds_register_adapters(self, registry: AdapterRegistry) -> None:
        registry.add(store="shared", factory=lambda settings: self.adapter)

    @hookimpl
    def beds_register_templates(self, registry: TemplateRegistry) -> None:
        registry.add_text(BOARD.format(name="board", live="true"), source="board.toml")
        registry.add_text(BOARD.format(name="quiet", live="false"), source="quiet.toml")


EXTRA = '[stores.shared]\n[auth]\nopen_templates = ["board", "quiet"]\n'


async def call(node: BedsNode, template: str, operation: str, payload: dict[str, Any]) -> Response:
    request = Request(operation=Operation(operation), template=template, payload=payload)
    body = encode_request(request)
    _, response = await node.dispatchers["wBroker"].handle(body, "application/json")
    return response


async def test_a_write_of_a_live_template_reaches_every_node(start_node: StartNode) -> None:
    env, shared = unique_name("env"), SharedStore()
    async with (
        start_node(EXTRA, env=env, name="a", plugins=(shared,)) as a,
        start_node(EXTRA, env=env, name="b", plugins=(shared,)) as b,
    ):
        assert b.control is not None
        seen: asyncio.Queue[ControlEvent] = asyncio.Queue()
        b.control.subscribe(RECORD_CHANGED, seen.put_nowait)

        assert (await call(a, "quiet", "create", {"id": 1, "text": "shh"})).ok
        created = await call(a, "board", "create", {"id": 7, "text": "hello 🎉"})
        assert created.ok, created.error
        event = await asyncio.wait_for(seen.get(), 10)
        assert event.kind == RECORD_CHANGED
        assert event.origin == "a"
        assert event.user  # vouched for by RabbitMQ: a trusted origin, as every control event
        assert event.data == {
            "template": "board",
            "operation": "create",
            "key": {"id": 7},
            "record": {"id": 7, "text": "hello 🎉"},
            "principal": None,
            "trace_id": created.meta.event_id,
            "at": event.data["at"],
        }
        assert (await call(a, "board", "delete", {"id": 7})).ok
        deleted = await asyncio.wait_for(seen.get(), 10)
        assert (deleted.data["operation"], deleted.data["key"]) == ("delete", {"id": 7})
        assert seen.empty()  # the quiet template's write published nothing
        assert a.live is not None
        assert (a.live.published, a.live.failed) == (2, 0)
        assert a.control is not None
        assert a.control.published[RECORD_CHANGED] == 2


async def test_a_batch_reaches_every_node_packed_in_item_order(start_node: StartNode) -> None:
    env, shared = unique_name("env"), SharedStore()
    async with (
        start_node(EXTRA, env=env, name="a", plugins=(shared,)) as a,
        start_node(EXTRA, env=env, name="b", plugins=(shared,)) as b,
    ):
        assert b.control is not None
        packed: asyncio.Queue[ControlEvent] = asyncio.Queue()
        b.control.subscribe(RECORDS_CHANGED, packed.put_nowait)
        records = [{"id": n, "text": f"item {n}"} for n in range(20, 23)]
        records.insert(1, {"id": 20, "text": "a duplicate: refused, not announced"})
        created = await call(a, "board", "create_many", {"records": records})
        assert created.status == 207, created.error
        event = await asyncio.wait_for(packed.get(), 10)
        assert event.user  # a trusted origin, as every control event
        assert [(e["operation"], e["key"]) for e in event.data["events"]] == [
            ("create", {"id": 20}),
            ("create", {"id": 21}),
            ("create", {"id": 22}),
        ]
        assert {e["trace_id"] for e in event.data["events"]} == {created.meta.event_id}
        assert a.live is not None
        assert (a.live.published, a.live.failed) == (3, 0)
        assert a.control is not None
        assert a.control.published[RECORDS_CHANGED] == 1  # one message for the batch


async def test_a_live_template_is_not_served_without_the_control_channel(
    start_node: StartNode,
) -> None:
    async with start_node(EXTRA + "[control]\nenabled = false\n", plugins=(SharedStore(),)) as node:
        assert "board" not in node.templates
        assert "quiet" in node.templates
        [check] = [c for c in node.checks if c.name == "template board"]
        assert check.status == "warning"  # development; production refuses to start
        assert "live = true" in check.detail
        assert "control.enabled = false" in check.detail
        assert node.live is None
