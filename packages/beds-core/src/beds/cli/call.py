"""``beds call``: send one request through RabbitMQ and print the response envelope as JSON."""

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
    run_async,
    timeout_option,
    url_option,
)
from beds.cli.credentials import send_token, token_option
from beds.envelopes import MAX_DEPTH, Operation

if TYPE_CHECKING:
    from pathlib import Path

    from beds.envelopes import Response

__all__ = ("call",)


@click.command()
@click.argument("template")
@click.argument("operation", type=click.Choice([op.value for op in Operation]))
@click.argument("payload", required=False, default="{}")
@config_option
@url_option
@timeout_option
@token_option
@click.option(
    "--principal",
    default=None,
    help="meta.principal to send (ignored by nodes that authenticate; use --token).",
)
@click.option("--idempotency-key", default=None, help="Idempotency key for a write.")
@click.option(
    "--parent-id",
    default="",
    help="Event id of an existing request: this one joins its lineage tree as a child.",
)
@click.option(
    "--depth",
    type=click.IntRange(0, MAX_DEPTH),
    default=None,
    help="Depth in the tree (default: 1 with --parent-id, else 0).",
)
def call(
    template: str,
    operation: str,
    payload: str,
    config_path: Path | None,
    url: str | None,
    timeout: float,
    token: str | None,
    principal: str | None,
    idempotency_key: str | None,
    parent_id: str,
    depth: int | None,
) -> None:
    """Send one request and print the response envelope as JSON.

    PAYLOAD is a JSON object: a record (create, update), a key (delete) or
    {"query": ..., "params": {...}, "limit": n} (fetch). Exits 1 on an error response.
    Sends --token, else $BEDS_TOKEN, else the token of beds login.
    """
    from beds.codec import converter

    try:
        body: Any = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        fail(f"PAYLOAD is not valid JSON: {exc}", EXIT_CONFIG)
    if not isinstance(body, dict):
        fail("PAYLOAD must be a JSON object", EXIT_CONFIG)
    config = load(config_path)
    quiet_logging()
    sent = send_token(token, config.node.env)

    async def send() -> Response:
        async with common.make_client(config, url, timeout, token=sent) as client:
            return await client.call(
                template,
                operation,
                body,
                principal=principal,
                idempotency_key=idempotency_key,
                parent_id=parent_id,
                depth=depth,
            )

    response = run_async(send())
    click.echo(orjson.dumps(converter.unstructure(response), option=orjson.OPT_INDENT_2).decode())
    if not response.ok:
        sys.exit(EXIT_FAILED)
