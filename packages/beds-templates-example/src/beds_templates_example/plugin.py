"""Registers the SPEW templates and schema shipped in this package."""

from beds import hookimpl
from beds.registry import TemplateRegistry


@hookimpl
def beds_register_templates(registry: TemplateRegistry) -> None:
    """Add ``templates/*.toml`` and ``schema/<store>/*`` from this package."""
    registry.add_package(__package__)
