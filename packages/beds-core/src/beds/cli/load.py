"""``beds load``: send JSON Lines from stdin as batches; print one JSON line per item's result."""

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
from beds.config.model import MAX_BATCH_RECORDS
from beds.envelopes import Operation
from beds.values import json_type

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

    from beds.client import BatchResult

__all__ = ("Line", "load_command", "read_lines")

_OPERATIONS = {
    "create": Operation.CREATE_MANY,
    "update": Operation.UPDATE_MANY,
    "delete": Operation.DELETE_MANY,
    "fetch": Operation.FETCH_MANY,
}

Line = tuple[int, dict[str, Any] | None, str]
"""One input line: its number (from 1), its object (``None``: refused) and why it was refused."""


def read_lines(lines: Iterable[bytes]) -> list[Line]:
    """The JSON Lines of ``lines``: each non-blank line's object, or why it is not one."""
    read: list[Line] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            read.append((number, None, f"not valid JSON ({exc})"))
            continue
        if isinstance(value, dict):
            read.append((number, value, ""))
        else:
            read.append((number, None, f"must be a JSON object, got {json_type(value)}"))
    return read


def _refused(number: int, reason: str) -> dict[str, Any]:
    return {
        "line": number,
        "ok": False,
        "status": 400,
        "error": {"code": "BEDS-400", "message": f"line {number}: {reason}", "details": []},
    }


def _answered(number: int, result: BatchResult) -> dict[str, Any]:
    document = result.to_json()
    del document["index"]
    return {"line": number, **document}


@click.command("load")
@click.argument("template")
@click.argument("operation", type=click.Choice(list(_OPERATIONS)), default="create")
@config_option
@url_option
@timeout_option
@token_option
@click.option(
    "--chunk",
    type=click.IntRange(1, MAX_BATCH_RECORDS),
    default=500,
    show_default=True,
    help="Records per message (at most the node's amqp.max_batch_records).",
)
@click.option(
    "--in-flight",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Messages waiting for their reply at once.",
)
@click.option(
    "--idempotency-key",
    default=None,
    help="Send message n with KEY:n, so the same load sent again writes nothing twice.",
)
@click.option(
    "--consistency",
    type=click.Choice(["primary", "secondary", "cached"]),
    default=None,
    help="fetch: where to read (default: the template's).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar on stderr.")
def load_command(
    template: str,
    operation: str,
    config_path: Path | None,
    url: str | None,
    timeout: float,
    token: str | None,
    chunk: int,
    in_flight: int,
    idempotency_key: str | None,
    consistency: str | None,
    quiet: bool,
) -> None:
    """Send the JSON Lines on stdin to TEMPLATE as batches of OPERATION (default: create).

    Each line is one record (create, update) or one key (delete, fetch). Prints one JSON line
    per input line on stdout, in input order: {"line": n, "ok": ..., "status": ..., "data" or
    "error": ...}. A line that is not a JSON object is reported with its number and skipped
    (counted as failed). Exits 0 when every line succeeded, 1 when any failed.
    """
    config = load(config_path)
    quiet_logging()
    sent = send_token(token, config.node.env)
    lines = read_lines(sys.stdin.buffer)
    for number, _, reason in lines:
        if reason:
            click.echo(f"beds: line {number}: {reason}; skipped", err=True)
    good = [(number, item) for number, item, _ in lines if item is not None]
    failed = len(lines) - len(good)
    extra = {"consistency": consistency} if consistency is not None else None

    async def send() -> int:
        failures = 0
        position = 0  # the next input line to print
        async with common.make_client(config, url, timeout, token=sent) as client:
            with click.progressbar(
                length=len(good), label=f"{operation} {template}", file=sys.stderr, hidden=quiet
            ) as bar:
                results = client.stream_many(
                    template,
                    _OPERATIONS[operation],
                    (item for _, item in good),
                    chunk=chunk,
                    in_flight=in_flight,
                    idempotency_key=idempotency_key,
                    extra=extra,
                )
                async for part in results:
                    for result in part:
                        number = good[result.index][0]
                        position = _print_until(lines, position, number)
                        click.echo(orjson.dumps(_answered(number, result)).decode())
                        failures += not result.ok
                    bar.update(len(part))
        _print_until(lines, position, sys.maxsize)
        return failures

    if good:
        failures = run_async(send())
    else:
        _print_until(lines, 0, sys.maxsize)
        failures = 0
    total = len(lines)
    click.echo(
        f"beds: {total - failed - failures} of {total} lines succeeded, {failed + failures} failed",
        err=True,
    )
    if failed or failures:
        sys.exit(EXIT_FAILED)


def _print_until(lines: Sequence[Line], position: int, number: int) -> int:
    """Print the refused lines from ``position`` up to line ``number``; return where it stopped.

    The returned index is past line ``number`` (a sent line is printed by its result).
    """
    while position < len(lines) and lines[position][0] <= number:
        line, item, reason = lines[position]
        if item is None:
            click.echo(orjson.dumps(_refused(line, reason)).decode())
        position += 1
    return position
