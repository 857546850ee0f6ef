"""The ``beds`` entry point of beds-rec: registers the REC (MongoDB) store adapter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from beds import hookimpl
from beds_rec.adapter import RecAdapter

if TYPE_CHECKING:
    from beds.registry import AdapterRegistry

__all__ = ("beds_register_adapters",)

BEDS_HOOK_API = 1


@hookimpl
def beds_register_adapters(registry: AdapterRegistry) -> None:
    """Register :class:`~beds_rec.adapter.RecAdapter` as the ``rec`` store."""
    registry.add(store=RecAdapter.store, factory=RecAdapter.from_settings)
