"""Registries, the plugin manager, entry-point loading and the typed hook facade."""

from __future__ import annotations

import asyncio
import sys
import types
from importlib import metadata
from typing import Any

import pluggy
import pytest
import tomlkit

from beds import hookimpl, hookspecs
from beds.envelopes import Operation, Request, Response
from beds.errors import PluginError, Unauthorized
from beds.namaste import NamasteCore, StoreSettings
from beds.plugins import (
    ENTRY_POINT_GROUP,
    HOOK_API_VERSION,
    Hooks,
    _check_api,
    await_me_maybe,
    make_plugin_manager,
)
from beds.registry import AdapterRegistry, TemplateRegistry
from beds.templates import Template

NODE: Any = object()  # the lifecycle hooks pass a NodeInfo through untouched


def make_adapter(settings: StoreSettings) -> NamasteCore:
    raise NotImplementedError


def other_adapter(settings: StoreSettings) -> NamasteCore:
    raise NotImplementedError


# -- registries ----------------------------------------------------------------------------------


def test_duplicate_template_names_both_sources(demo_declaration: dict[str, Any]) -> None:
    registry = TemplateRegistry()
    text = tomlkit.dumps(demo_declaration)
    first = registry.add_text(text, source="pkg_a/templates/item.toml", distribution="pkg-a")
    with pytest.raises(PluginError) as info:
        registry.add_text(text, source="pkg_b/templates/item.toml")
    assert str(info.value) == (
        "template 'demo_item' is declared twice: "
        "pkg_a/templates/item.toml and pkg_b/templates/item.toml"
    )
    assert registry.templates == {"demo_item": first}
    assert first.distribution == "pkg-a"


def test_package_without_templates_adds_nothing() -> None:
    registry = TemplateRegistry()
    assert registry.add_package("beds", templates="no_such_folder", schema="nor_this") == []
    assert registry.templates == {}
    assert registry.schema == {}


def test_duplicate_store_names_both_plugins() -> None:
    registry = AdapterRegistry()
    registry.current_plugin = "first"
    registry.add(store="rel", factory=make_adapter)
    registry.current_plugin = "second"
    with pytest.raises(PluginError) as info:
        registry.add(store="rel", factory=other_adapter)
    assert str(info.value) == "store 'rel' is registered by both 'first' and 'second'"
    assert registry.factories == {"rel": make_adapter}
    assert registry.owners == {"rel": "first"}


# -- the plugin manager with inline plugins ------------------------------------------------------


class AdapterPlugin:
    def __init__(self, store: str, factory: Any = make_adapter) -> None:
        self.store = store
        self.factory = factory

    @hookimpl
    def beds_register_adapters(self, registry: AdapterRegistry) -> None:
        registry.add(store=self.store, factory=self.factory)


class DomainPlugin:
    def __init__(self, text: str) -> None:
        self.text = text

    @hookimpl
    def beds_register_templates(self, registry: TemplateRegistry) -> None:
        registry.add_text(self.text, source="inline.toml")


def test_inline_plugins_register_adapters_and_templates(
    beds_plugin_manager: pluggy.PluginManager, demo_declaration: dict[str, Any]
) -> None:
    beds_plugin_manager.register(AdapterPlugin("memory"), name="memory-store")
    beds_plugin_manager.register(DomainPlugin(tomlkit.dumps(demo_declaration)), name="demo")
    hooks = Hooks(beds_plugin_manager)

    adapters = hooks.register_adapters()
    assert adapters.factories == {"memory": make_adapter}
    assert adapters.owners == {"memory": "memory-store"}

    templates = hooks.register_templates()
    assert list(templates.templates) == ["demo_item"]
    assert templates.templates["demo_item"].source == "inline.toml"

    existing = TemplateRegistry()
    assert hooks.register_templates(existing) is existing
    assert "demo_item" in existing.templates


def test_duplicate_store_across_plugins_names_both(
    beds_plugin_manager: pluggy.PluginManager,
) -> None:
    beds_plugin_manager.register(AdapterPlugin("rel"), name="rel")
    beds_plugin_manager.register(AdapterPlugin("rel", other_adapter), name="my-rel-fork")
    with pytest.raises(PluginError) as info:
        Hooks(beds_plugin_manager).register_adapters()
    # Implementations run in pluggy's order (last registered first), so the fork got there first.
    assert str(info.value) == "store 'rel' is registered by both 'my-rel-fork' and 'rel'"


def test_implemented(beds_plugin_manager: pluggy.PluginManager) -> None:
    hooks = Hooks(beds_plugin_manager)
    assert not hooks.implemented("beds_register_adapters")
    beds_plugin_manager.register(AdapterPlugin("memory"), name="memory-store")
    assert hooks.implemented("beds_register_adapters")
    assert not hooks.implemented("beds_before_dispatch")
    assert not hooks.implemented("beds_no_such_hook")


def test_hook_specs_are_all_declared(beds_plugin_manager: pluggy.PluginManager) -> None:
    assert hookspecs.__all__
    for name in hookspecs.__all__:
        assert name.startswith("beds_")
        caller = getattr(beds_plugin_manager.hook, name)
        assert caller.spec is not None
        assert caller.spec.namespace is hookspecs
    # Every hook function in the module is exported.
    declared = {n for n in vars(hookspecs) if n.startswith("beds_")}
    assert declared == set(hookspecs.__all__)


def test_unknown_hook_on_an_inline_plugin_fails_validation(
    beds_plugin_manager: pluggy.PluginManager,
) -> None:
    class Typo:
        @hookimpl
        def beds_register_adapter(self, registry: AdapterRegistry) -> None:
            """Missing the final s."""

    beds_plugin_manager.register(Typo(), name="typo")
    with pytest.raises(pluggy.PluginValidationError, match="beds_register_adapter"):
        beds_plugin_manager.check_pending()


def test_wrong_hook_arguments_are_refused(beds_plugin_manager: pluggy.PluginManager) -> None:
    class WrongArgs:
        @hookimpl
        def beds_register_adapters(self, registry: Any, extra: Any) -> None:
            """Asks for an argument the hook does not pass."""

    with pytest.raises(pluggy.PluginValidationError):
        beds_plugin_manager.register(WrongArgs(), name="wrong")


async def test_lifecycle_hooks_await_async_implementations(
    beds_plugin_manager: pluggy.PluginManager,
) -> None:
    seen: list[str] = []

    class Sync:
        @hookimpl
        def beds_node_started(self, node: Any) -> None:
            seen.append("sync started")

        @hookimpl
        def beds_node_stopping(self, node: Any) -> None:
            seen.append("sync stopping")

    class Async:
        @hookimpl
        async def beds_node_started(self, node: Any) -> None:
            await asyncio.sleep(0)
            assert node is NODE
            seen.append("async started")

        @hookimpl
        async def beds_after_dispatch(self, request: Request, response: Response) -> None:
            seen.append(f"after {request.template} {response.status}")

    beds_plugin_manager.register(Sync(), name="sync")
    beds_plugin_manager.register(Async(), name="async")
    hooks = Hooks(beds_plugin_manager)

    await hooks.node_started(NODE)
    assert sorted(seen) == ["async started", "sync started"]
    await hooks.node_stopping(NODE)
    assert seen[-1] == "sync stopping"
    request = Request(operation=Operation.FETCH, template="spew_post")
    await hooks.after_dispatch(request, Response(ok=True, status=200))
    assert seen[-1] == "after spew_post 200"


async def test_before_dispatch_can_refuse(
    beds_plugin_manager: pluggy.PluginManager, demo_template: Template
) -> None:
    class Gate:
        @hookimpl
        async def beds_before_dispatch(self, request: Request, template: Template) -> None:
            if request.meta.principal is None:
                raise Unauthorized("no principal")

    beds_plugin_manager.register(Gate(), name="gate")
    hooks = Hooks(beds_plugin_manager)
    with pytest.raises(Unauthorized, match="no principal"):
        await hooks.before_dispatch(
            Request(operation=Operation.DELETE, template="demo_item"), demo_template
        )


async def test_await_me_maybe() -> None:
    async def answer() -> int:
        return 42

    assert await await_me_maybe(7) == 7
    assert await await_me_maybe(None) is None
    assert await await_me_maybe(answer()) == 42
    future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    future.set_result("done")
    assert await await_me_maybe(future) == "done"
    marker = object()
    assert await await_me_maybe(marker) is marker


def test_plugins_describes_inline_plugins(beds_plugin_manager: pluggy.PluginManager) -> None:
    beds_plugin_manager.register(AdapterPlugin("memory"), name="memory-store")
    [info] = Hooks(beds_plugin_manager).plugins()
    assert info.name == "memory-store"
    assert info.hooks == ("beds_register_adapters",)
    assert (info.distribution, info.version) == ("", "")


# -- hook API version and blocking ---------------------------------------------------------------


def test_check_api() -> None:
    _check_api("current", types.SimpleNamespace(BEDS_HOOK_API=HOOK_API_VERSION))
    _check_api("undeclared", types.SimpleNamespace())
    with pytest.raises(PluginError) as info:
        _check_api("old", types.SimpleNamespace(BEDS_HOOK_API=0))
    assert str(info.value) == (
        f"plugin 'old' was written for BEDS hook API 0; this beds-core provides {HOOK_API_VERSION}"
    )


def test_disabled_names_are_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEDS_DISABLED_PLUGINS", " rec, ,spew ")
    pm = make_plugin_manager(load_entry_points=False, disabled=["extra"])
    assert {name for name in ("rec", "spew", "extra") if pm.is_blocked(name)} == {
        "rec",
        "spew",
        "extra",
    }
    assert not pm.is_blocked("rel")
    assert pm.register(AdapterPlugin("rec"), name="rec") is None
    assert not Hooks(pm).implemented("beds_register_adapters")


# -- entry points ------------------------------------------------------------------------------


def fake_entry_points(
    monkeypatch: pytest.MonkeyPatch, **plugins: object
) -> list[metadata.EntryPoint]:
    """Make ``make_plugin_manager`` see only these plugins, each as ``<module>:<name>``."""
    module = types.ModuleType("beds_fake_plugins")
    vars(module).update(plugins)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    eps = [
        metadata.EntryPoint(name=name, value=f"{module.__name__}:{name}", group=ENTRY_POINT_GROUP)
        for name in plugins
    ]

    def entry_points(*, group: str) -> list[metadata.EntryPoint]:
        assert group == ENTRY_POINT_GROUP
        return eps

    monkeypatch.setattr("beds.plugins.metadata", types.SimpleNamespace(entry_points=entry_points))
    return eps


class UnknownHook:
    @hookimpl
    def beds_no_such_hook(self) -> None:
        """Not a BEDS hook."""


class OldApi:
    BEDS_HOOK_API = HOOK_API_VERSION + 1

    @hookimpl
    def beds_register_adapters(self, registry: AdapterRegistry) -> None:
        registry.add(store="old", factory=make_adapter)


def test_entry_point_plugin_with_an_unknown_hook_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, typo=UnknownHook())
    with pytest.raises(PluginError, match="beds_no_such_hook"):
        make_plugin_manager()


def test_entry_point_plugin_for_another_hook_api_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_entry_points(monkeypatch, old=OldApi())
    with pytest.raises(PluginError) as info:
        make_plugin_manager()
    assert str(info.value).startswith(
        "plugin 'old' (beds_fake_plugins:old) failed to load: "
        f"plugin 'old' was written for BEDS hook API {HOOK_API_VERSION + 1}"
    )


def test_broken_entry_point_is_fatal_when_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, good=AdapterPlugin("memory"))
    eps = [
        metadata.EntryPoint(name="ghost", value="beds_no_such_module.plugin", group="beds"),
        metadata.EntryPoint(name="good", value="beds_fake_plugins:good", group="beds"),
    ]
    monkeypatch.setattr(
        "beds.plugins.metadata", types.SimpleNamespace(entry_points=lambda group: eps)
    )
    with pytest.raises(PluginError, match=r"plugin 'ghost' \(beds_no_such_module.plugin\)"):
        make_plugin_manager()

    pm = make_plugin_manager(strict=False)
    assert not pm.has_plugin("ghost")
    assert pm.has_plugin("good")


def test_blocked_entry_point_is_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, old=OldApi(), good=AdapterPlugin("memory"))
    monkeypatch.setenv("BEDS_DISABLED_PLUGINS", "old")
    pm = make_plugin_manager()
    assert [name for name, plugin in pm.list_name_plugin() if plugin is not None] == ["good"]
    assert pm.is_blocked("old")


def test_trace_plugins_monitors_hook_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, good=AdapterPlugin("memory"))
    monkeypatch.setenv("BEDS_TRACE_PLUGINS", "1")
    pm = make_plugin_manager()
    assert Hooks(pm).register_adapters().owners == {"memory": "good"}
    # The monitor wraps hook callers: a traced manager still calls every implementation.
    assert pm.hook.beds_register_templates(registry=TemplateRegistry()) == []


def test_constants() -> None:
    assert ENTRY_POINT_GROUP == "beds"
    assert HOOK_API_VERSION == 1


def test_adapter_registration_goes_through_the_hook_caller(
    beds_plugin_manager: pluggy.PluginManager,
) -> None:
    beds_plugin_manager.register(AdapterPlugin("rel"), name="rel")
    beds_plugin_manager.register(AdapterPlugin("rec"), name="rec")
    calls: list[tuple[str, list[str]]] = []
    beds_plugin_manager.add_hookcall_monitoring(
        lambda name, impls, kwargs: calls.append((name, [i.plugin_name for i in impls])),
        lambda outcome, name, impls, kwargs: None,
    )
    registry = Hooks(beds_plugin_manager).register_adapters()
    assert registry.owners == {"rec": "rec", "rel": "rel"}
    # One monitored call per plugin, in pluggy's order (last registered first).
    assert calls == [("beds_register_adapters", ["rec"]), ("beds_register_adapters", ["rel"])]
