"""The ``beds`` entry point of beds-rel: registers the REL (MariaDB/MySQL) store adapter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from beds import hookimpl
from beds_rel.adapter import RelAdapter

if TYPE_CHECKING:
    from beds.namaste import StoreSettings
    from beds.registry import AdapterRegistry
    from beds_rel.provision import RelProvisioner

__all__ = ("beds_register_adapters", "beds_store_provisioner")

BEDS_HOOK_API = 1


@hookimpl
def beds_register_adapters(registry: AdapterRegistry) -> None:
    """Register :class:`~beds_rel.adapter.RelAdapter` as the ``rel`` store."""
    registry.add(store=RelAdapter.store, factory=RelAdapter.from_settings)


@hookimpl
def beds_store_provisioner(settings: StoreSettings) -> RelProvisioner | None:
    """The REL store's service accounts (``beds provision mariadb``), for ``[stores.rel]``."""
    if settings.store != RelAdapter.store:
        return None
    from beds_rel.provision import RelProvisioner  # only for beds provision and beds check

    return RelProvisioner(settings)
