"""``beds templates``: the installed templates, with their store and distribution."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from beds.cli.common import (
    config_option,
    echo_json,
    exit_code_of,
    fail,
    json_option,
    load,
    quiet_logging,
)

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ("templates",)


@click.command()
@config_option
@json_option
def templates(config_path: Path | None, as_json: bool) -> None:
    """List installed templates with their store and distribution."""
    from beds.node import BedsNode, StartupError

    node = BedsNode(load(config_path))
    quiet_logging("ERROR")
    try:
        node.load_plugins()
    except StartupError as exc:
        fail(str(exc), exit_code_of(exc.checks))
    assert node.registry is not None
    rows = [
        {
            "name": t.name,
            "store": t.store,
            "tla": t.tla,
            "distribution": t.distribution,
            "source": t.source,
        }
        for t in sorted(node.registry.templates.values(), key=lambda t: t.name)
    ]
    if as_json:
        echo_json(rows)
        return
    click.echo(f"{'TEMPLATE':<24} {'STORE':<6} {'TLA':<4} DISTRIBUTION")
    for row in rows:
        click.echo(f"{row['name']:<24} {row['store']:<6} {row['tla']:<4} {row['distribution']}")
