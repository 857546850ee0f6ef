"""The REC adapter as the admin node's lineage store (msLogs) on a real MongoDB wire server."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest

from beds.lineage import Event, EventStore, collect_tree, format_tree
from beds.namaste import StoreSettings
from beds.registry import TemplateRegistry
from beds_rec import RecAdapter

pytestmark = pytest.mark.mongodb


@pytest.fixture
async def rec(mongo_server_uri: str, mongo_database: str) -> AsyncIterator[RecAdapter]:
    adapter = RecAdapter(
        StoreSettings(store="rec", options={"uri": mongo_server_uri, "database": mongo_database})
    )
    registry = TemplateRegistry()
    registry.add_package("beds_templates_example")
    await adapter.start()
    try:
        await adapter.apply_schema(registry.schema["rec"])
        yield adapter
    finally:
        await adapter.aclose()


def tree_events() -> list[Event]:
    """A request from a client, its database call and a log record, and a nested request."""
    run = uuid.uuid4().hex[:8]
    now = time.time()

    def event(name: str, parent: str, depth: int, kind: str, offset: float) -> Event:
        return Event(
            event_id=f"n1.test.{run}{name}",
            parent_id=f"n1.test.{run}{parent}" if parent else "",
            depth=depth,
            kind=kind,  # type: ignore[arg-type]
            node="n1",
            env="test",
            at=now + offset,
            ms=1.5 if kind in ("request", "db") else None,
            template="spew_post",
            operation="create",
            status=201 if kind == "request" else 0,
            message="rel" if kind == "db" else f"{kind} {name}",
        )

    return [
        event("root", "", 0, "request", 0),
        event("db", "root", 1, "db", 0.001),
        event("log", "root", 1, "log", 0.002),
        event("child", "root", 1, "request", 0.003),
        event("childdb", "child", 2, "db", 0.004),
    ]


async def test_events_are_stored_once_and_read_back_as_a_tree(rec: RecAdapter) -> None:
    assert isinstance(rec, EventStore)
    events = tree_events()
    records = [event.to_record() for event in events]
    await rec.store_events(records)
    await rec.store_events(records[:2])  # a redelivered batch: no duplicates, no error
    for start in (events[0], events[4]):  # from the root or from a leaf: the whole tree
        tree = await collect_tree(rec, start.event_id)
        assert [event.event_id for event in tree] == [
            events[0].event_id,
            events[1].event_id,
            events[2].event_id,
            events[3].event_id,
            events[4].event_id,
        ]
        assert tree == [events[0], events[1], events[2], events[3], events[4]]
    text = format_tree(await collect_tree(rec, events[0].event_id))
    assert text.splitlines()[0].startswith("request create spew_post → 201 on n1 1.5 ms")
    assert text.splitlines()[4].startswith("    db      rel 1.5 ms")


async def test_an_unknown_event_has_no_tree(rec: RecAdapter) -> None:
    assert await collect_tree(rec, "n1.test.nothing") == []
