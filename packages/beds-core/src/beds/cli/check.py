"""``beds check``: run the start-up checks without serving and print the checklist."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

import click

from beds.cli.common import (
    config_option,
    echo_json,
    exit_code_of,
    json_option,
    load,
    node_option,
    quiet_logging,
)

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ("check",)

_MARKS = {"ok": "ok  ", "warning": "WARN", "failed": "FAIL"}


@click.command()
@config_option
@node_option
@json_option
def check(config_path: Path | None, role: str | None, as_json: bool) -> None:
    """Run the start-up checks without serving and print the checklist."""
    from beds.node import BedsNode

    config = load(config_path, role)
    quiet_logging()
    checks = asyncio.run(BedsNode(config).check())
    if as_json:
        echo_json(
            [{"name": item.name, "status": item.status, "detail": item.detail} for item in checks]
        )
    else:
        for item in checks:
            line = f"[{_MARKS[item.status]}] {item.name}"
            click.echo(f"{line}: {item.detail}" if item.detail else line)
    if any(item.status != "ok" for item in checks):
        sys.exit(exit_code_of(checks))
