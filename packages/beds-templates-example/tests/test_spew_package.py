"""Tests a template package needs, written for SPEW (shown in docs/writing-a-domain.md).

A domain package can copy this file into its own ``tests/`` folder and change the names.
"""

from __future__ import annotations

from decimal import Decimal
from importlib import metadata

import pytest

from beds.dispatch.calgon import long_params
from beds.envelopes import Operation
from beds.errors import ValidationFailed
from beds.namaste import CallContext
from beds.plugins import Hooks, make_plugin_manager
from beds.registry import TemplateRegistry
from beds.templates import validate_fetch, validate_write
from beds.testing import MemoryAdapter, TestIdentity
from beds.testing.local import LocalNode
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
    assert {name: t.store for name, t in registry.templates.items()} == {
        "spew_boost": "rel",
        "spew_follow": "rel",
        "spew_like": "rel",
        "spew_note": "rel",
        "spew_post": "rel",
        "spew_profile": "rec",
        "spew_stats": "rel",
    }
    assert sorted(registry.schema) == ["rec", "rel"]


def test_payloads_are_checked_against_the_template(registry: TemplateRegistry) -> None:
    post = registry.templates["spew_post"]
    record = validate_write(post, Operation.CREATE, {"author": "ann", "body": "hi"})
    assert record == {"author": "ann", "body": "hi", "parent_id": None}  # not a reply
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


def test_boosts_take_exact_decimals_any_json_and_booleans(registry: TemplateRegistry) -> None:
    boost = registry.templates["spew_boost"]
    targeting = {"languages": ["en", "fr"], "topics": ["cats"], "max_per_day": 3}
    record = validate_write(
        boost,
        Operation.CREATE,
        {"owner": "ann", "post_id": 7, "budget": "12.50", "targeting": targeting, "active": True},
    )
    assert record == {
        "owner": "ann",
        "post_id": 7,
        "budget": Decimal("12.50"),  # exact: never a float
        "targeting": targeting,
        "active": True,
    }
    with pytest.raises(ValidationFailed) as caught:
        validate_write(
            boost,
            Operation.CREATE,
            {"owner": "ann", "post_id": 7, "budget": 12.5, "targeting": {1, 2}, "active": "yes"},
        )
    assert caught.value.details == (
        "$.payload.active: must be true or false, got string",
        "$.payload.budget: must be a decimal number written as a string",
        "$.payload.targeting: must be a JSON value, got set",
    )


def test_the_rel_answers_beyond_a_first_result_set_are_declared(
    registry: TemplateRegistry,
) -> None:
    """OUT and INOUT parameters and result sets are REL bindings: beds-core passes them on."""
    post, boost = registry.templates["spew_post"], registry.templates["spew_boost"]
    stats = post.queries["author_stats"]
    assert stats.binding == {
        "procedure": "spp_author_stats",
        "result_sets": ["posts", "per_day"],
        "out": ["total"],
    }
    assert not stats.pageable  # it answers one record
    assert boost.operations[Operation.CREATE].binding == {"procedure": "spb_create", "out": ["id"]}
    assert boost.queries["quote"].binding == {
        "procedure": "spb_quote",
        "inout": ["budget"],
        "out": ["reach"],
    }


def test_long_operations_are_submitted_with_every_param_defaulted(
    registry: TemplateRegistry,
) -> None:
    """``beds submit spew_stats daily`` and ``beds submit spew_profile census`` need no params."""
    daily = registry.templates["spew_stats"].long_operations["daily"]
    census = registry.templates["spew_profile"].long_operations["census"]
    assert (daily.steps, census.steps) == (4, 4)
    assert long_params(daily, {}, "$.payload.params") == {"days": 30, "author": None}
    assert long_params(census, {}, "$.payload.params") == {"min_length": 1}
    assert census.binding["pipeline"][-1] == {"$sort": {"initial": 1}}
    with pytest.raises(ValidationFailed) as caught:
        long_params(census, {"min_length": 0, "country": "NL"}, "$.payload.params")
    assert caught.value.details == (
        "$.payload.params.country: is not a param of census",
        "$.payload.params.min_length: must be at least 1",
    )


async def test_the_social_templates_are_live_and_bind_the_caller(
    registry: TemplateRegistry,
) -> None:
    """A member likes and follows as themselves; the home timeline is the caller's only."""
    like, follow, post = (registry.templates[n] for n in ("spew_like", "spew_follow", "spew_post"))
    assert all(t.capabilities.live for t in (like, follow, post))
    memory = MemoryAdapter(store="rel")  # no database: checks the declarations only
    node = LocalNode([like, follow, post], {"rel": memory}, identity=TestIdentity(env="test"))
    liked = await node.call("spew_like", "create", {"post_id": 7}, who="ann")
    assert liked.ok, liked.error
    assert liked.data["liker"] == "ann"
    someone_else = await node.call("spew_like", "create", {"liker": "bob", "post_id": 7})
    assert someone_else.error is not None
    assert someone_else.error.code == "BEDS-403"
    home = await node.call("spew_post", "fetch", {"query": "home", "params": {"viewer": "bob"}})
    assert home.error is not None
    assert home.error.code == "BEDS-403"
    tag = await node.call("spew_post", "fetch", {"query": "by_hashtag", "params": {"tag": "#x"}})
    assert tag.error is not None
    assert tag.error.details == ("$.payload.params.tag: must match \\w+",)
