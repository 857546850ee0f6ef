"""``beds submit`` and ``beds ticket``: long operations (CALGON) from the terminal.

``beds submit TEMPLATE OPERATION [PARAMS]`` prints the ticket; with ``--wait`` it shows a
progress bar (click's) until the ticket finishes, then prints the ticket with its whole result.
``beds ticket ID`` finds a ticket by its id alone; ``--wait`` and ``--cancel`` as they say.
Exit status: 0 when the ticket succeeded (or is still running without ``--wait``), 1 when it
failed or was cancelled, or the node answered an error.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click
import orjson

from beds.cli import common
from beds.cli.common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    config_option,
    fail,
    load,
    quiet_logging,
    timeout_option,
    url_option,
)
from beds.cli.credentials import run_request, send_token, token_option

if TYPE_CHECKING:
    from pathlib import Path

    from beds.client import BedsClient, TicketHandle

__all__ = ("submit", "ticket")

_POLL_SECONDS = 0.5
_wait_option = click.option(
    "--wait", is_flag=True, help="Show progress until the ticket finishes, then its result."
)


@click.command()
@click.argument("template")
@click.argument("operation")
@click.argument("params", required=False, default="{}")
@_wait_option
@click.option("--idempotency-key", default=None, help="Submit at most once under this key.")
@config_option
@url_option
@timeout_option
@token_option
def submit(
    template: str,
    operation: str,
    params: str,
    wait: bool,
    idempotency_key: str | None,
    config_path: Path | None,
    url: str | None,
    timeout: float,
    token: str | None,
) -> None:
    """Submit TEMPLATE's long operation OPERATION; print its ticket.

    PARAMS is a JSON object of the operation's params (omitted ones take their defaults).
    """
    try:
        values: Any = orjson.loads(params)
    except orjson.JSONDecodeError as exc:
        fail(f"PARAMS is not valid JSON: {exc}", EXIT_CONFIG)
    if not isinstance(values, dict):
        fail("PARAMS must be a JSON object", EXIT_CONFIG)
    config = load(config_path)
    quiet_logging()
    sent = send_token(token, config.node.env)

    async def send() -> dict[str, Any]:
        async with common.make_client(config, url, timeout, token=sent) as client:
            handle = await client.submit(
                template, operation, values, idempotency_key=idempotency_key
            )
            return await _follow(client, handle) if wait else handle.ticket

    _show(run_request(send(), [sent]))


@click.command()
@click.argument("ticket_id", metavar="ID")
@_wait_option
@click.option("--cancel", is_flag=True, help="Cancel it (a running one stops after its step).")
@config_option
@url_option
@timeout_option
@token_option
def ticket(
    ticket_id: str,
    wait: bool,
    cancel: bool,
    config_path: Path | None,
    url: str | None,
    timeout: float,
    token: str | None,
) -> None:
    """Show the ticket ID (state, progress, and its result once it succeeded)."""
    from beds.client import TicketHandle

    config = load(config_path)
    quiet_logging()
    sent = send_token(token, config.node.env)

    async def read() -> dict[str, Any]:
        async with common.make_client(config, url, timeout, token=sent) as client:
            handle = TicketHandle(client, {"ticket": ticket_id})
            if cancel:
                await handle.cancel()
            else:
                await handle.refresh()
            if wait or handle.state == "succeeded":
                return await _follow(client, handle)
            return handle.ticket

    _show(run_request(read(), [sent]))


async def _follow(client: BedsClient, handle: TicketHandle) -> dict[str, Any]:
    """Wait for the ticket with a progress bar on stderr; return it with its whole result."""
    from beds.errors import RequestError

    with click.progressbar(
        length=1000, label=f"ticket {handle.id}", file=sys.stderr, show_eta=False
    ) as bar:
        done = 0

        def moved(progress: float, ticket: dict[str, Any]) -> None:
            nonlocal done
            bar.update(int(progress * 1000) - done)
            done = int(progress * 1000)

        try:
            result = await handle.result(poll=_POLL_SECONDS, on_progress=moved)
        except RequestError:
            if handle.state not in ("failed", "cancelled"):
                raise  # the node refused a read: said as the error it is
            return handle.ticket  # failed or cancelled: the ticket says how
    return {**handle.ticket, "result": result}


def _show(ticket: dict[str, Any]) -> None:
    click.echo(orjson.dumps(ticket, option=orjson.OPT_INDENT_2).decode())
    if ticket.get("state") in ("failed", "cancelled"):
        sys.exit(EXIT_FAILED)
