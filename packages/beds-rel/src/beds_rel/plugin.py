"""The ``rel`` plugin: registers the REL (MariaDB/MySQL) adapter under the store name ``rel``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from beds import hookimpl
from beds_rel.adapter import RelAdapter

if TYPE_CHECKING:
    from beds.registry import AdapterRegistry

BEDS_HOOK_API = 1


@hookimpl
def beds_register_adapters(registry: AdapterRegistry) -> None:
    """Register :class:`RelAdapter` as the factory for templates with ``store = "rel"``."""
    registry.add(store=RelAdapter.store, factory=RelAdapter.from_settings)
