"""The ``beds`` entry point of beds-rel: registers the REL (MariaDB/MySQL) store adapter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from beds import hookimpl
from beds_rel.adapter import RelAdapter

if TYPE_CHECKING:
    from beds.registry import AdapterRegistry

__all__ = ("beds_register_adapters",)

BEDS_HOOK_API = 1


@hookimpl
def beds_register_adapters(registry: AdapterRegistry) -> None:
    """Register :class:`~beds_rel.adapter.RelAdapter` as the ``rel`` store."""
    registry.add(store=RelAdapter.store, factory=RelAdapter.from_settings)
