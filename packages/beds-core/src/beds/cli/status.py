"""``beds status``: the live status of a running node, read from its telemetry ``/status``.

With ``--all``: every node of the environment, from their heartbeats on the control stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import orjson

from beds.cli.common import EXIT_CONFIG, config_option, fail, json_option, load, run_async
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
@click.option(
    "--all",
    "every_node",
    is_flag=True,
    help="Every node of the environment (their latest heartbeats on the control stream), "
    "without any node's HTTP port.",
)
@json_option
def status(
    config_path: Path | None,
    url: str | None,
    watch: float | None,
    every_node: bool,
    as_json: bool,
) -> None:
    """Print the live status of a running node (from its telemetry endpoint /status)."""
    import time

    if every_node:
        _all_nodes(config_path, as_json)
        return

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


def _all_nodes(config_path: Path | None, as_json: bool) -> None:
    """``--all``: one line per node that sent a heartbeat within ``control.replay_seconds``."""
    import time

    from beds.heartbeat import read_peers

    try:
        config = load(config_path)
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    document = run_async(read_peers(config))  # a BedsError exits 1 with its message
    if as_json:
        click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return
    peers = document["peers"]
    if not peers:
        click.echo(f"no node of environment {config.node.env} sent a heartbeat lately")
        return
    now = time.time()
    click.echo(f"{'NODE':<16} {'ROLE':<12} {'STATE':<13} {'SEEN':>7}  {'HANDLED':>9}  UNSETTLED")
    for name, beat in sorted(peers.items()):
        brokers = beat.get("brokers") or {}
        handled = sum(int(b.get("handled", 0)) for b in brokers.values())
        unsettled = sum(int(b.get("unsettled", 0)) for b in brokers.values())
        seen = f"{now - float(beat['at']):.0f}s ago"
        click.echo(
            f"{name:<16} {beat.get('role', '?'):<12} {beat.get('state', '?'):<13} "
            f"{seen:>7}  {handled:>9}  {unsettled}"
        )
