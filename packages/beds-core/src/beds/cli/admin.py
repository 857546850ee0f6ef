"""``beds admin pause|resume|drain``: operator commands to the nodes of an environment.

Sent to the admin node (template ``beds_operator``, :mod:`beds.broker.operator`) with the
operator's token, which needs the ``admin`` role; the reply lists the nodes that acted, with
what each broker does now.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click
import orjson

from beds.cli import common
from beds.cli.common import (
    EXIT_FAILED,
    config_option,
    load,
    quiet_logging,
    run_async,
    timeout_option,
    url_option,
)
from beds.cli.credentials import send_token, token_option

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from beds.envelopes import Response

__all__ = ("admin",)


@click.group()
def admin() -> None:
    """Operator commands: pause or resume a broker, drain a node (needs the admin role)."""


def _command_options(function: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option(
                "--node", default="*", show_default=True, help="The node to act on ('*': every)."
            ),
            click.option(
                "--wait",
                type=click.FloatRange(0, 30),
                default=2.0,
                show_default=True,
                help="Seconds to collect the nodes' answers.",
            ),
            config_option,
            url_option,
            timeout_option,
            token_option,
        ]
    ):
        function = option(function)
    return function


@admin.command()
@click.argument("broker")
@_command_options
def pause(broker: str, **options: Any) -> None:
    """Stop BROKER ('*': every broker) taking messages; what it holds finishes."""
    _send({"command": "pause", "broker": broker}, **options)


@admin.command()
@click.argument("broker", default="*")
@_command_options
def resume(broker: str, **options: Any) -> None:
    """Let BROKER ('*', the default: every broker) take messages again."""
    _send({"command": "resume", "broker": broker}, **options)


@admin.command()
@_command_options
def drain(**options: Any) -> None:
    """Pause every broker of the node(s) and mark them draining (/ready answers 503)."""
    _send({"command": "drain"}, **options)


def _send(
    command: dict[str, Any],
    *,
    node: str,
    wait: float,
    config_path: Path | None,
    url: str | None,
    timeout: float,
    token: str | None,
) -> None:
    from beds.codec import converter
    from beds.routing import OPERATOR_TEMPLATE

    config = load(config_path)
    quiet_logging()
    sent = send_token(token, config.node.env)
    payload = {**command, "node": node, "wait": wait}

    async def send() -> Response:
        async with common.make_client(config, url, timeout + wait, token=sent) as client:
            return await client.call(OPERATOR_TEMPLATE, "create", payload)

    response = run_async(send())
    document = converter.unstructure(response)
    click.echo(orjson.dumps(document["data"] or document, option=orjson.OPT_INDENT_2).decode())
    if not response.ok:
        sys.exit(EXIT_FAILED)
