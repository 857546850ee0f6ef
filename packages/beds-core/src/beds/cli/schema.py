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
from beds.errors import BedsError

if TYPE_CHECKING:
    from pathlib import Path

    from beds.node import BedsNode

__all__ = ("schema",)


@click.group()
def schema() -> None:
    """DBA schema shipped by template packages (development databases)."""


@schema.command("apply")
@config_option
def schema_apply(config_path: Path | None) -> None:
    """Install the schema of every installed template package into the configured stores."""
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
    """Apply each store's files in store-name order, printing each file once its store applied it.

    Every adapter is closed afterwards, whatever happened.
    """
    try:
        node.load_plugins()
        assert node.registry is not None
        for store, adapter in sorted(node.adapters.items()):
            files = node.registry.schema.get(store, [])
            if files:
                for name in await adapter.apply_schema(files):
                    click.echo(f"applied {store}: {name}")
    finally:
        for adapter in node.adapters.values():
            await adapter.aclose()
