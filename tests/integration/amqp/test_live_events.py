"""Live templates on real nodes: a write on one node is a ``record.changed`` on the live stream.

Two nodes serve one environment from one store; node B reads the real live stream (a RabbitMQ
stream beside the control one, declared by its first reader) and sees node A's writes of the
live template, and none of the other one. A node without a live handler never receives them.
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
    from beds.transport.control_event import ControlEvent
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
        await b.control.side_reads_started()

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
        await b.control.side_reads_started()
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


async def test_live_updates_reach_only_their_readers_from_a_short_window(
    start_node: StartNode,
) -> None:
    """B reads the live stream (declaring it); C, starting to read later, gets only the last
    ``live_replay_seconds``; A, without a live handler, gets none."""
    env, shared = unique_name("env"), SharedStore()
    short = EXTRA + "[control]\nlive_replay_seconds = 1\n"
    async with (
        start_node(short, env=env, name="a", plugins=(shared,)) as a,
        start_node(short, env=env, name="b", plugins=(shared,)) as b,
    ):
        assert b.control is not None
        b.control.subscribe(RECORD_CHANGED, lambda event: None)
        await b.control.side_reads_started()
        assert (await call(a, "board", "create", {"id": 1, "text": "long ago"})).ok
        await asyncio.sleep(3.5)  # AMQP times are whole seconds: well past the 1 s window
        assert (await call(a, "board", "create", {"id": 2, "text": "just now"})).ok
        async with start_node(short, env=env, name="c", plugins=(shared,)) as c:
            assert c.control is not None
            seen: asyncio.Queue[ControlEvent] = asyncio.Queue()
            c.control.subscribe(RECORD_CHANGED, seen.put_nowait)  # C starts reading
            assert (await asyncio.wait_for(seen.get(), 10)).data["key"] == {"id": 2}
            assert (await call(a, "board", "create", {"id": 3, "text": "live"})).ok
            assert (await asyncio.wait_for(seen.get(), 10)).data["key"] == {"id": 3}
            await asyncio.sleep(0.5)
            assert seen.empty()  # the write before the window was not replayed
        assert b.control.received[RECORD_CHANGED] == 3
        # A reads the control stream (its own heartbeats arrive) but no live update reached it.
        assert a.control is not None
        assert a.control.received["node.status"] > 0
        assert a.control.received[RECORD_CHANGED] == a.control.received[RECORDS_CHANGED] == 0
        assert sorted(a.control.side_queues) == []


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
