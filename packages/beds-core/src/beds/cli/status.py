"""``beds status``: the live status of a running node, read from its telemetry ``/status``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import orjson

from beds.cli.common import EXIT_CONFIG, config_option, fail, json_option, load
from beds.errors import BedsError, ConfigError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ("status",)


@click.command()
@config_option
@click.option(
    "--url",
    default=None,
    help="The node's telemetry URL, such as http://127.0.0.1:9464 "
    "(default: telemetry.host and telemetry.port from the config).",
)
@click.option(
    "--watch",
    type=click.FloatRange(min=0.1),
    default=None,
    metavar="SECONDS",
    help="Print the status again every SECONDS until interrupted.",
)
@json_option
def status(config_path: Path | None, url: str | None, watch: float | None, as_json: bool) -> None:
    """Print the live status of a running node (from its telemetry endpoint /status)."""
    import time

    # Looked up on the module when called: tests stand in for fetch_status.
    from beds.telemetry import status as status_module

    try:
        target = status_module.status_url(
            url, None if url is not None else load(config_path).telemetry
        )
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)

    def render() -> str:
        document = status_module.fetch_status(target)
        if as_json:
            return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()
        return status_module.format_status(document)

    if watch is None:
        try:
            click.echo(render())
        except BedsError as exc:
            fail(str(exc))
        return
    try:
        while True:
            try:
                text = render()
            except BedsError as exc:
                text = f"beds: error: {exc}"
            click.clear()
            click.echo(f"{target}, every {watch:g} s (Ctrl-C stops)\n\n{text}")
            time.sleep(watch)
    except KeyboardInterrupt:
        pass
