"""``beds plugins``: the plugins loaded from the ``beds`` entry-point group."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from beds.cli.common import config_option, echo_json, fail, json_option, load, quiet_logging
from beds.errors import BedsError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ("plugins",)


@click.command()
@config_option
@json_option
def plugins(config_path: Path | None, as_json: bool) -> None:
    """List loaded plugins with their distribution, version and hooks."""
    from beds.plugins import Hooks, make_plugin_manager

    config = load(config_path)
    quiet_logging("WARNING")  # a plugin skipped in development is logged as a warning
    try:
        hooks = Hooks(
            make_plugin_manager(disabled=config.plugins.disabled, strict=config.production)
        )
    except BedsError as exc:
        fail(str(exc))
    infos = hooks.plugins()
    if as_json:
        echo_json(
            [
                {
                    "name": info.name,
                    "distribution": info.distribution,
                    "version": info.version,
                    "hooks": list(info.hooks),
                }
                for info in infos
            ]
        )
        return
    for info in infos:
        click.echo(f"{info.name:<10} {info.distribution} {info.version}  [{', '.join(info.hooks)}]")
