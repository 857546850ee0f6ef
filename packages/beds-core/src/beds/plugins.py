"""The plugin manager: entry-point loading, the ``hookimpl`` marker and a typed hook facade.

Plugins are modules registered under the ``beds`` entry-point group; the entry point's name is
the plugin's name (``rec``, ``rel``, ``spew``). A plugin module may set ``BEDS_HOOK_API = 1`` to
state the hook API it was written for; a different major version is refused at load.
"""

from __future__ import annotations

import inspect
import os
from importlib import metadata
from typing import TYPE_CHECKING, Any, Final

import attrs
import pluggy
from loguru import logger

from beds import hookspecs
from beds.auth.principal import Principal
from beds.bugs import report_bug
from beds.errors import PluginError, Unauthenticated
from beds.handlers import HandlerRegistry
from beds.registry import AdapterRegistry, TemplateRegistry, distribution_of

if TYPE_CHECKING:
    from collections.abc import Iterable

    from beds.envelopes import Request, Response
    from beds.nodeinfo import NodeInfo
    from beds.templates.model import Template

__all__ = (
    "ENTRY_POINT_GROUP",
    "HOOK_API_VERSION",
    "Hooks",
    "PluginInfo",
    "await_me_maybe",
    "hookimpl",
    "make_plugin_manager",
)

ENTRY_POINT_GROUP: Final = "beds"
HOOK_API_VERSION: Final = 1
hookimpl: Final = pluggy.HookimplMarker("beds")
"""Marker for hook implementations: ``from beds import hookimpl``."""


def _disabled_from_env() -> set[str]:
    return {
        name.strip()
        for name in os.environ.get("BEDS_DISABLED_PLUGINS", "").split(",")
        if name.strip()
    }


def _check_api(name: str, plugin: object) -> None:
    declared = getattr(plugin, "BEDS_HOOK_API", HOOK_API_VERSION)
    if declared != HOOK_API_VERSION:
        raise PluginError(
            f"plugin {name!r} was written for BEDS hook API {declared}; "
            f"this beds-core provides {HOOK_API_VERSION}"
        )


def make_plugin_manager(
    *,
    load_entry_points: bool = True,
    disabled: Iterable[str] = (),
    strict: bool = True,
) -> pluggy.PluginManager:
    """Build a plugin manager with the BEDS hook specifications.

    Args:
        load_entry_points: load every plugin registered under the ``beds`` entry-point group.
            Tests pass ``False`` and register plugins themselves.
        disabled: plugin names to block, in addition to ``BEDS_DISABLED_PLUGINS`` (comma list).
        strict: a plugin that fails to load is fatal (production); otherwise it is logged and
            skipped (development).

    Raises:
        PluginError: a plugin failed to load (strict), declares another hook API, or implements
            a hook that does not exist.
    """
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    for name in {*disabled, *_disabled_from_env()}:
        pm.set_blocked(name)
    if load_entry_points:
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
                _check_api(ep.name, plugin)
                pm.register(plugin, name=ep.name)
            except Exception as exc:
                if strict:
                    raise PluginError(
                        f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}"
                    ) from exc
                logger.warning("plugin {} ({}) skipped: {}", ep.name, ep.value, exc)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(str(exc)) from exc
    if os.environ.get("BEDS_TRACE_PLUGINS") == "1":
        pm.add_hookcall_monitoring(
            lambda name, impls, kwargs: logger.debug(
                "hook {} → {}", name, [i.plugin_name for i in impls]
            ),
            lambda outcome, name, impls, kwargs: None,
        )
    return pm


async def await_me_maybe(value: Any) -> Any:
    """Await ``value`` if it is awaitable, else return it (hooks may return either)."""
    if inspect.isawaitable(value):
        return await value
    return value


@attrs.frozen(kw_only=True)
class PluginInfo:
    """One registered plugin, for ``beds plugins``."""

    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...]


class Hooks:
    """Typed facade over ``pm.hook`` (``pm.hook.*`` is ``Any`` to mypy)."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm

    def register_adapters(self) -> AdapterRegistry:
        """Collect every plugin's adapter factories, naming the plugin on duplicates.

        The hook is called through pluggy like every other (hook-call monitoring, wrappers and
        ``BEDS_TRACE_PLUGINS`` see it), once per plugin in pluggy's order (last registered
        first) through :meth:`pluggy.PluginManager.subset_hook_caller`, so that the registry
        knows which plugin registers each store.
        """
        registry = AdapterRegistry()
        name = "beds_register_adapters"
        # Wrappers (of any plugin) stay in every call and wrap each plugin's registration.
        impls = [
            impl
            for impl in getattr(self.pm.hook, name).get_hookimpls()
            if not (impl.wrapper or impl.hookwrapper)
        ]
        for impl in reversed(impls):
            others = [other.plugin for other in impls if other is not impl]
            registry.current_plugin = impl.plugin_name
            self.pm.subset_hook_caller(name, remove_plugins=others)(registry=registry)
        return registry

    def register_templates(self, registry: TemplateRegistry | None = None) -> TemplateRegistry:
        """Collect every plugin's templates and schema files."""
        registry = registry if registry is not None else TemplateRegistry()
        self.pm.hook.beds_register_templates(registry=registry)
        return registry

    def register_handlers(self) -> HandlerRegistry:
        """Collect every plugin's template handlers."""
        registry = HandlerRegistry()
        self.pm.hook.beds_register_handlers(registry=registry)
        return registry

    def authenticate(self, credential: str) -> Principal | None:
        """The principal a plugin's ``beds_authenticate`` proves (``None``: no plugin knows it).

        Raises:
            Unauthenticated: a plugin refused the credential, or answered something that is not
                a principal (reported as a bug).
        """
        principal = self.pm.hook.beds_authenticate(credential=credential)
        if principal is None or isinstance(principal, Principal):
            return principal
        report_bug(
            TypeError(f"beds_authenticate returned {type(principal).__name__}, not a Principal"),
            "a plugin authenticator answered wrongly",
        )
        raise Unauthenticated("the request's credential is not valid")

    def implemented(self, hook: str) -> bool:
        """Return whether any registered plugin implements ``hook``."""
        caller = getattr(self.pm.hook, hook, None)
        return caller is not None and bool(caller.get_hookimpls())

    async def node_started(self, node: NodeInfo) -> None:
        """Run every ``beds_node_started`` implementation."""
        for result in self.pm.hook.beds_node_started(node=node):
            await await_me_maybe(result)

    async def node_stopping(self, node: NodeInfo) -> None:
        """Run every ``beds_node_stopping`` implementation."""
        for result in self.pm.hook.beds_node_stopping(node=node):
            await await_me_maybe(result)

    async def before_dispatch(self, request: Request, template: Template) -> None:
        """Run every ``beds_before_dispatch`` implementation; a RequestError refuses the request."""
        for result in self.pm.hook.beds_before_dispatch(request=request, template=template):
            await await_me_maybe(result)

    async def after_dispatch(self, request: Request, response: Response) -> None:
        """Run every ``beds_after_dispatch`` implementation."""
        for result in self.pm.hook.beds_after_dispatch(request=request, response=response):
            await await_me_maybe(result)

    def plugins(self) -> list[PluginInfo]:
        """Describe every registered plugin: name, distribution, version and hooks."""
        infos = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda item: str(item[0])):
            if plugin is None:
                continue
            distribution = distribution_of(getattr(plugin, "__name__", type(plugin).__module__))
            try:
                version = metadata.version(distribution) if distribution else ""
            except metadata.PackageNotFoundError:
                version = ""
            infos.append(
                PluginInfo(
                    name=str(name),
                    distribution=distribution,
                    version=version,
                    hooks=tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or ())),
                )
            )
        return infos
