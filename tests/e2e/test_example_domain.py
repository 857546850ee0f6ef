"""Full CRUD on the example domain through RabbitMQ, with a node in this process (embedded)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from beds.client import BedsClient
from beds.config import load_config
from beds.envelopes import Operation
from beds.errors import (
    Conflict,
    NotFound,
    UnknownTemplate,
    UnsupportedOperation,
    ValidationFailed,
)
from beds.node import BedsNode
from beds.testing import unique_name
from tests.helpers import client_of_node


@pytest.fixture
async def node(node_config: Path) -> AsyncIterator[BedsNode]:
    async with BedsNode(load_config(node_config, environ={})) as running:
        yield running


@pytest.fixture
async def client(node: BedsNode) -> AsyncIterator[BedsClient]:
    async with client_of_node(node, timeout=10) as c:
        yield c


def test_ipl_checklist_is_all_ok(node: BedsNode) -> None:
    assert [c for c in node.checks if c.status != "ok"] == []
    names = [c.name for c in node.checks]
    assert names.index("rabbitmq") < names.index("store rel") < names.index("brokers")
    assert {"template spew_post objects", "template spew_profile objects"} <= set(names)


async def test_spew_post_crud(client: BedsClient) -> None:
    author = unique_name("ann")[:30]
    created = await client.create("spew_post", {"author": author, "body": "first 🎉"})
    assert set(created) == {"id", "created_at"}
    assert created["created_at"].endswith("Z")

    [row] = await client.fetch("spew_post", "by_id", {"id": created["id"]})
    assert row["author"] == author
    assert row["body"] == "first 🎉"

    updated = await client.update("spew_post", {"id": created["id"], "body": "edited"})
    assert updated["id"] == created["id"]
    await client.create("spew_post", {"author": author, "body": "second"})
    rows = await client.fetch("spew_post", "by_author", {"author": author}, limit=10)
    assert sorted(r["body"] for r in rows) == ["edited", "second"]
    [count] = await client.fetch("spew_post", "count_by_author", {"author": author})
    assert list(count.values()) == [2]

    assert await client.delete("spew_post", {"id": created["id"]}) == {"deleted": 1}
    assert await client.fetch("spew_post", "by_id", {"id": created["id"]}) == []
    with pytest.raises(NotFound):
        await client.delete("spew_post", {"id": created["id"]})
    with pytest.raises(NotFound):
        await client.update("spew_post", {"id": created["id"], "body": "ghost"})


async def test_spew_profile_crud(client: BedsClient) -> None:
    handle = unique_name("h")[:30]
    created = await client.create("spew_profile", {"handle": handle, "display_name": "Ann"})
    assert created["handle"] == handle
    assert len(created["id"]) == 24
    with pytest.raises(Conflict):
        await client.create("spew_profile", {"handle": handle, "display_name": "Twin"})

    [row] = await client.fetch("spew_profile", "by_handle", {"handle": handle})
    assert row["display_name"] == "Ann"
    assert row["bio"] is None

    updated = await client.update("spew_profile", {"handle": handle, "bio": "hi"})
    assert updated == {"handle": handle, "display_name": "Ann", "bio": "hi"}

    assert await client.delete("spew_profile", {"handle": handle}) == {"deleted": 1}
    assert await client.fetch("spew_profile", "by_handle", {"handle": handle}) == []
    with pytest.raises(NotFound):
        await client.update("spew_profile", {"handle": handle, "bio": "ghost"})


@pytest.mark.parametrize(
    ("template", "operation", "payload", "error"),
    [
        ("no_such_template", "fetch", {}, UnknownTemplate),
        ("spew_post", "create", {"author": "ann"}, ValidationFailed),
        ("spew_post", "create", {"author": "ann", "body": "x" * 281}, ValidationFailed),
        ("spew_post", "create", {"author": "ann", "body": 42}, ValidationFailed),
        ("spew_post", "create", {"author": "ann", "body": "hi", "id": 7}, ValidationFailed),
        ("spew_post", "create", {"author": "ann", "body": "hi", "color": "red"}, ValidationFailed),
        ("spew_post", "fetch", {"query": "by_mood", "params": {}}, ValidationFailed),
        ("spew_post", "fetch", {"query": "by_id", "params": {"id": "1"}}, ValidationFailed),
        (
            "spew_post",
            "fetch",
            {"query": "by_author", "params": {"author": "a"}, "limit": 101},
            ValidationFailed,
        ),
        ("spew_profile", "create", {"handle": "UPPER", "display_name": "x"}, ValidationFailed),
        ("spew_post", "submit", {}, UnsupportedOperation),  # it declares no long operation
        ("spew_profile", "submit", {"operation": "nope"}, ValidationFailed),
        ("spew_stats", "submit", {"operation": "daily", "params": {"days": 0}}, ValidationFailed),
    ],
)
async def test_bad_inputs_are_refused_before_the_database(
    client: BedsClient,
    template: str,
    operation: str,
    payload: dict[str, object],
    error: type[Exception],
) -> None:
    first = await client.call(template, Operation(operation), payload)
    second = await client.call(template, Operation(operation), payload)
    assert not first.ok
    assert first.error is not None
    assert first.error.code == error.CODE  # type: ignore[attr-defined]
    assert first.error == second.error, "the same bad input must get the same error"


async def test_concurrent_writes_and_reads(client: BedsClient) -> None:
    author = unique_name("load")[:30]
    created = await asyncio.gather(
        *(client.create("spew_post", {"author": author, "body": f"post {i}"}) for i in range(100))
    )
    assert len({c["id"] for c in created}) == 100
    rows = await client.fetch("spew_post", "by_author", {"author": author}, limit=100)
    assert len(rows) == 100
