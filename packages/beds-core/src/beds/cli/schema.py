"""``beds schema apply``: install the DBA schema shipped by template packages (development)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import click

from beds.cli.common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    config_option,
    exit_code_of,
    fail,
    load,
    quiet_logging,
)
from beds.config.stores import split_connection
from beds.errors import BedsError
from beds.provision.needs import package_of

if TYPE_CHECKING:
    from pathlib import Path

    from beds.namaste import SchemaFile
    from beds.node import BedsNode
    from beds.registry import TemplateRegistry

__all__ = ("schema",)


@click.group()
def schema() -> None:
    """DBA schema shipped by template packages (development databases)."""


@schema.command("apply")
@config_option
def schema_apply(config_path: Path | None) -> None:
    """Install the schema of every installed template package into the configured stores.

    A package's files go to the databases its templates use (docs/configuration.md, "Named
    databases").
    """
    from beds.node import BedsNode, StartupError

    config = load(config_path)
    if config.production:
        fail(
            "schema apply is for development databases; in production the DBA installs schema",
            EXIT_CONFIG,
        )
    quiet_logging("WARNING")
    try:
        asyncio.run(_apply(BedsNode(config)))
    except StartupError as exc:
        fail(str(exc), exit_code_of(exc.checks))
    except BedsError as exc:
        fail(str(exc))
    except Exception as exc:  # a store driver's own error: one line, never a traceback
        reason = " ".join(str(exc).split()) or "no message"
        fail(f"schema apply failed: {type(exc).__name__}: {reason}", EXIT_FAILED)


async def _apply(node: BedsNode) -> None:
    """Apply each connection's files in name order, printing each file once it is applied.

    Every adapter is closed afterwards, whatever happened.
    """
    try:
        node.load_plugins()
        assert node.registry is not None
        for connection, adapter in sorted(node.adapters.items()):
            files = files_for(node.registry, connection)
            if files:
                for name in await adapter.apply_schema(files):
                    click.echo(f"applied {connection}: {name}")
    finally:
        for adapter in node.adapters.values():
            await adapter.aclose()


def files_for(registry: TemplateRegistry, connection: str) -> list[SchemaFile]:
    """The schema files a connection gets (``rel``, or ``rel.warehouse``).

    A package's files for a store (``schema/<store>/``) go to every connection of that store its
    templates use, and to the store's default connection when none of them names a database.
    """
    store = split_connection(connection)[0]
    targets: dict[str, set[str]] = {}
    for template in registry.templates.values():
        if template.store == store:
            targets.setdefault(package_of(template), set()).add(template.connection)
    return [
        file
        for file in registry.schema.get(store, [])
        if connection in targets.get(file.distribution or file.name.partition("/")[0], {store})
    ]
