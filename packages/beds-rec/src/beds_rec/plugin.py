"""The ``beds`` entry point of beds-rec: registers the REC (MongoDB) store adapter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from beds import hookimpl
from beds_rec.adapter import RecAdapter

if TYPE_CHECKING:
    from beds.namaste import StoreSettings
    from beds.registry import AdapterRegistry
    from beds_rec.provision import RecProvisioner

__all__ = ("beds_register_adapters", "beds_store_provisioner")

BEDS_HOOK_API = 1


@hookimpl
def beds_register_adapters(registry: AdapterRegistry) -> None:
    """Register :class:`~beds_rec.adapter.RecAdapter` as the ``rec`` store."""
    registry.add(store=RecAdapter.store, factory=RecAdapter.from_settings)


@hookimpl
def beds_store_provisioner(settings: StoreSettings) -> RecProvisioner | None:
    """The REC store's service accounts (``beds provision mongodb``), for ``[stores.rec]``."""
    if settings.store != RecAdapter.store:
        return None
    from beds_rec.provision import RecProvisioner  # only for beds provision and beds check

    return RecProvisioner(settings)
