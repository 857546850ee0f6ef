"""The rel plugin registers its adapter under the store name "rel", found by entry point."""

from __future__ import annotations

from importlib.metadata import entry_points

import beds_rel
from beds.namaste import StoreSettings
from beds.registry import AdapterRegistry
from beds_rel import plugin
from beds_rel.adapter import RelAdapter


def test_plugin_is_installed_under_the_beds_entry_point() -> None:
    found = {ep.name: ep.value for ep in entry_points(group="beds")}
    assert found.get("rel") == "beds_rel.plugin"


def test_plugin_registers_the_rel_factory() -> None:
    registry = AdapterRegistry()
    plugin.beds_register_adapters(registry)
    factory = registry.factories["rel"]
    adapter = factory(StoreSettings(store="rel", options={"url": "mysql://u@h/db"}))
    assert isinstance(adapter, RelAdapter)
    assert repr(adapter) == "RelAdapter(u@h:3306/db)"


def test_public_api() -> None:
    assert beds_rel.__all__ == (
        "RelAdapter",
        "RelSettings",
        "Statement",
        "__version__",
        "map_exceptions",
        "parse_settings",
        "split_statements",
    )
    for name in beds_rel.__all__:
        assert getattr(beds_rel, name) is not None
