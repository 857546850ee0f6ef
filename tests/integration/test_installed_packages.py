"""The packages as installed together: entry points, plugin discovery, the example package."""

from __future__ import annotations

from importlib import metadata

import pytest

from beds.envelopes import Operation
from beds.errors import PluginError
from beds.plugins import Hooks, make_plugin_manager
from beds.registry import TemplateRegistry, distribution_of
from beds.templates import FieldType


def test_adding_the_example_package_twice_fails() -> None:
    registry = TemplateRegistry()
    registry.add_package("beds_templates_example")
    with pytest.raises(PluginError, match="'spew_boost' is declared twice"):
        registry.add_package("beds_templates_example")


def test_installed_plugins_are_found_through_entry_points() -> None:
    pm = make_plugin_manager()
    names = {name for name, _ in pm.list_name_plugin()}
    assert names >= {"spew", "rec", "rel"}

    hooks = Hooks(pm)
    assert {"spew_post", "spew_profile"} <= set(hooks.register_templates().templates)
    adapters = hooks.register_adapters()
    assert {"rec", "rel"} <= set(adapters.factories)
    assert adapters.owners["rec"] == "rec"
    assert adapters.owners["rel"] == "rel"

    infos = {info.name: info for info in hooks.plugins()}
    assert infos["spew"].distribution == "beds-templates-example"
    assert infos["spew"].version == metadata.version("beds-templates-example")
    assert infos["spew"].hooks == ("beds_register_templates",)
    assert infos["rec"].distribution == "beds-rec"
    assert infos["rel"].distribution == "beds-rel"


def test_installed_plugins_can_be_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEDS_DISABLED_PLUGINS", "rec,rel")
    pm = make_plugin_manager()
    names = {name for name, plugin in pm.list_name_plugin() if plugin is not None}
    assert "spew" in names
    assert not names & {"rec", "rel"}


def test_example_package_templates_load() -> None:
    registry = TemplateRegistry()
    added = registry.add_package("beds_templates_example")

    assert [t.name for t in added] == [
        "spew_boost",
        "spew_follow",
        "spew_like",
        "spew_note",
        "spew_post",
        "spew_profile",
        "spew_stats",
    ]
    assert registry.templates == {t.name: t for t in added}
    note, post, profile = (
        registry.templates[n] for n in ("spew_note", "spew_post", "spew_profile")
    )
    assert (note.store, note.capabilities.locking, note.capabilities.journal) == ("rel", True, True)
    for template in added:
        assert template.distribution == "beds-templates-example"
        assert template.source == f"beds_templates_example/templates/{template.name}.toml"

    assert (post.store, post.tla, post.key) == ("rel", "spp", ("id",))
    assert post.fields["body"].type is FieldType.STR
    assert post.fields["body"].max_length == 280
    assert post.fields["created_at"].generated
    assert post.fields["author"].pattern is not None
    assert post.fields["author"].pattern.pattern == "[a-z0-9_]+"
    assert set(post.operations) == {Operation.CREATE, Operation.UPDATE, Operation.DELETE}
    assert post.operations[Operation.CREATE].params == ("author", "body", "parent_id")
    assert post.operations[Operation.CREATE].returns == ("id", "created_at")
    assert post.operations[Operation.CREATE].binding == {
        "procedure": "spp_create",
        "batch_procedure": "spp_create_many",
    }
    assert list(post.queries) == [
        "by_id",
        "by_author",
        "mine",
        "count_by_author",
        "recent",
        "replies",
        "home",
        "by_hashtag",
        "author_stats",
    ]
    assert post.queries["mine"].principal == "author"  # bound to the caller's handle
    assert post.default_query == "by_id"
    assert post.queries["by_author"].max_limit == 100
    assert post.queries["count_by_author"].binding == {
        "function": "spp_count_by_author",
        "returns": "post_count",
    }

    assert (profile.store, profile.tla, profile.key) == ("rec", "spf", ("handle",))
    assert profile.store_options == {"collection": "spf_profiles", "indexes": ["spf_handle_uq"]}
    assert profile.fields["bio"].nullable
    assert not profile.fields["bio"].required
    assert [key.field for key in profile.queries["by_display_name"].order_by] == ["handle"]


def test_example_package_ships_schema_per_store() -> None:
    registry = TemplateRegistry()
    registry.add_package("beds_templates_example")
    assert set(registry.schema) == {"rec", "rel"}
    for store, files in registry.schema.items():
        assert files
        for schema_file in files:
            assert schema_file.name.startswith(f"beds_templates_example/schema/{store}/")
            assert schema_file.distribution == "beds-templates-example"
            assert schema_file.text
    assert [f.name for f in registry.schema["rel"]] == sorted(
        f.name for f in registry.schema["rel"]
    )


@pytest.mark.parametrize(
    ("package", "distribution"),
    [
        ("beds_templates_example", "beds-templates-example"),
        ("beds_templates_example.plugin", "beds-templates-example"),
        ("beds_rel", "beds-rel"),
        ("beds_rec", "beds-rec"),
    ],
)
def test_distribution_of_an_installed_plugin_package(package: str, distribution: str) -> None:
    assert distribution_of(package) == distribution
