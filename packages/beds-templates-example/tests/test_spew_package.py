"""Tests a template package needs, written for SPEW (shown in docs/writing-a-domain.md).

A domain package can copy this file into its own ``tests/`` folder and change the names.
"""

from __future__ import annotations

from importlib import metadata

import pytest

from beds.envelopes import Operation
from beds.errors import ValidationFailed
from beds.namaste import CallContext
from beds.plugins import Hooks, make_plugin_manager
from beds.registry import TemplateRegistry
from beds.templates import validate_fetch, validate_write
from beds.testing import MemoryAdapter
from beds_templates_example import plugin


def test_plugin_is_discovered_through_its_entry_point() -> None:
    entry_points = {ep.name: ep.value for ep in metadata.entry_points(group="beds")}
    assert entry_points.get("spew") == "beds_templates_example.plugin"


@pytest.fixture
def registry() -> TemplateRegistry:
    """The package's templates and schema, loaded through its hook and nothing else."""
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(plugin, name="spew")
    return Hooks(pm).register_templates()


def test_templates_load_and_validate(registry: TemplateRegistry) -> None:
    assert sorted(registry.templates) == ["spew_note", "spew_post", "spew_profile"]
    assert {name: t.store for name, t in registry.templates.items()} == {
        "spew_note": "rel",
        "spew_post": "rel",
        "spew_profile": "rec",
    }
    assert sorted(registry.schema) == ["rec", "rel"]


def test_payloads_are_checked_against_the_template(registry: TemplateRegistry) -> None:
    post = registry.templates["spew_post"]
    record = validate_write(post, Operation.CREATE, {"author": "ann", "body": "hi"})
    assert record == {"author": "ann", "body": "hi"}
    with pytest.raises(ValidationFailed) as caught:
        validate_write(post, Operation.CREATE, {"author": "Ann", "body": "x" * 281})
    assert caught.value.details == (
        "$.payload.author: must match [a-z0-9_]+",
        "$.payload.body: must be at most 280 characters, got 281",
    )


async def test_crud_against_the_memory_adapter(registry: TemplateRegistry) -> None:
    post = registry.templates["spew_post"]
    adapter = MemoryAdapter(store=post.store)  # no database: checks the declarations only
    adapter.prepare(post)
    ctx = CallContext(event_id="test.dev.1")

    created = await adapter.create(
        post, validate_write(post, Operation.CREATE, {"author": "ann", "body": "hi"}), ctx
    )
    assert created["id"] == 1

    query = validate_fetch(post, {"query": "by_author", "params": {"author": "ann"}})
    assert [row["body"] for row in await adapter.fetch(post, query, ctx)] == ["hi"]

    key = validate_write(post, Operation.DELETE, {"id": created["id"]})
    assert await adapter.delete(post, key, ctx) == {"deleted": 1}
