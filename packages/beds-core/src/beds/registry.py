"""Registries handed to the registration hooks: adapters by store, templates by name."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from importlib import metadata, resources
from typing import TYPE_CHECKING

import attrs

from beds.errors import PluginError
from beds.migrations import check_versions
from beds.namaste import NamasteCore, SchemaFile, StoreSettings
from beds.templates.loader import parse_template
from beds.templates.model import Template

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ("AdapterFactory", "AdapterRegistry", "TemplateRegistry")

AdapterFactory = Callable[[StoreSettings], NamasteCore]
"""Builds a store's adapter from its configuration table."""


@functools.cache
def _distributions() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()


@functools.cache
def _entry_point_distributions() -> Mapping[str, str]:
    """Top-level import package → distribution, from the ``beds`` entry points.

    Editable installs (a uv workspace) are ``.pth`` path entries, which
    ``packages_distributions()`` cannot see; their entry points still name them.
    """
    found: dict[str, str] = {}
    for ep in metadata.entry_points(group="beds"):
        if ep.dist is not None:
            found.setdefault(ep.module.partition(".")[0], ep.dist.name)
    return found


def distribution_of(package: str) -> str:
    """Return the installed distribution that provides an import package ('' if unknown)."""
    top = package.partition(".")[0]
    names = _distributions().get(top, [])
    return names[0] if names else _entry_point_distributions().get(top, "")


@attrs.define
class AdapterRegistry:
    """Store name → adapter factory, filled by ``beds_register_adapters``."""

    factories: dict[str, AdapterFactory] = attrs.field(factory=dict)
    owners: dict[str, str] = attrs.field(factory=dict)
    current_plugin: str = "<unknown>"

    def add(self, *, store: str, factory: AdapterFactory) -> None:
        """Register the factory that builds the adapter for ``store``.

        Raises:
            PluginError: another plugin already registered ``store``.
        """
        if store in self.factories:
            raise PluginError(
                f"store {store!r} is registered by both {self.owners[store]!r} "
                f"and {self.current_plugin!r}"
            )
        self.factories[store] = factory
        self.owners[store] = self.current_plugin


@attrs.define
class TemplateRegistry:
    """Template name → template, plus the DBA schema files per store, from template packages."""

    templates: dict[str, Template] = attrs.field(factory=dict)
    schema: dict[str, list[SchemaFile]] = attrs.field(factory=dict)

    def add(self, template: Template) -> None:
        """Register one parsed template.

        Raises:
            PluginError: a template of the same name is already registered.
        """
        existing = self.templates.get(template.name)
        if existing is not None:
            raise PluginError(
                f"template {template.name!r} is declared twice: "
                f"{existing.source} and {template.source}"
            )
        self.templates[template.name] = template

    def add_text(self, text: str, *, source: str, distribution: str = "") -> Template:
        """Parse and register a template declaration given as TOML text."""
        template = parse_template(text, source=source, distribution=distribution)
        self.add(template)
        return template

    def add_package(
        self, package: str, templates: str = "templates", schema: str = "schema"
    ) -> list[Template]:
        """Register ``<package>/<templates>/*.toml`` and ``<package>/<schema>/<store>/*``.

        Args:
            package: the import name of a template package (pass ``__package__``).
            templates: folder of template declarations inside the package.
            schema: folder of DBA schema files, one sub-folder per store, each named
                ``NNN_name.ext``: ``NNN`` is its migration version (:mod:`beds.migrations`).

        Returns:
            The templates added.

        Raises:
            TemplateError: a schema file without a version prefix, or two with one version.
        """
        root = resources.files(package)
        distribution = distribution_of(package)
        added = [
            self.add_text(
                item.read_text(encoding="utf-8"),
                source=f"{package}/{templates}/{item.name}",
                distribution=distribution,
            )
            for item in _sorted_files(root.joinpath(templates), ".toml")
        ]
        schema_root = root.joinpath(schema)
        if schema_root.is_dir():
            for store_dir in sorted(schema_root.iterdir(), key=lambda t: t.name):
                if store_dir.is_dir():
                    files = [
                        SchemaFile(
                            name=f"{package}/{schema}/{store_dir.name}/{item.name}",
                            text=item.read_text(encoding="utf-8"),
                            distribution=distribution,
                        )
                        for item in _sorted_files(store_dir, "")
                    ]
                    # The number prefix is the migration version (beds.migrations).
                    check_versions(files)
                    self.schema.setdefault(store_dir.name, []).extend(files)
        return added


def _sorted_files(folder: Traversable, suffix: str) -> list[Traversable]:
    if not folder.is_dir():
        return []
    return sorted(
        (
            item
            for item in folder.iterdir()
            if item.is_file()
            and item.name.endswith(suffix)
            and not item.name.startswith(("_", "."))
        ),
        key=lambda item: item.name,
    )
