"""``beds journal``: the journal of one record of a journaled template, oldest entry first."""

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
    echo_json,
    fail,
    json_option,
    load,
    quiet_logging,
    run_async,
    timeout_option,
    url_option,
)
from beds.cli.credentials import send_token, token_option
from beds.templates.model import HISTORY_QUERY

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ("journal",)

_PAGE = 100


@click.command()
@click.argument("template")
@click.argument("key", nargs=-1, required=True)
@config_option
@url_option
@timeout_option
@token_option
@json_option
def journal(
    template: str,
    key: tuple[str, ...],
    config_path: Path | None,
    url: str | None,
    timeout: float,
    token: str | None,
    as_json: bool,
) -> None:
    """Print the journal of the record whose key is KEY (FIELD=VALUE ..., values as JSON).

    Runs the template's history query, page after page. For example:
    beds journal spew_note id=7
    """
    params = dict(_key_value(item) for item in key)
    config = load(config_path)
    quiet_logging()
    sent = send_token(token, config.node.env)

    async def read() -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        payload: dict[str, Any] = {"query": HISTORY_QUERY, "params": params, "limit": _PAGE}
        async with common.make_client(config, url, timeout, token=sent) as client:
            while True:
                response = await client.call(template, "fetch", payload)
                if not response.ok:
                    error = response.error
                    assert error is not None
                    details = "; ".join(error.details)
                    fail(f"{error.code}: {error.message}" + (f" ({details})" if details else ""))
                entries += response.data or []
                if response.meta.next is None:
                    return entries
                payload["cursor"] = response.meta.next

    entries = run_async(read())
    if as_json:
        echo_json(entries)
        return
    if not entries:
        click.echo("no journal entries")
        sys.exit(EXIT_FAILED)
    for entry in entries:
        who = entry.get("principal") or "anonymous"
        click.echo(
            f"{entry.get('at')}  {entry.get('operation'):<6}  {who}  {entry.get('event_id')}"
        )
        for side in ("before", "after"):
            if entry.get(side) is not None:
                click.echo(f"    {side:<6} {orjson.dumps(entry[side]).decode()}")


def _key_value(item: str) -> tuple[str, Any]:
    name, sep, text = item.partition("=")
    if not sep or not name:
        fail(f"KEY must be FIELD=VALUE, got {item!r}", EXIT_CONFIG)
    try:
        return name, orjson.loads(text)
    except orjson.JSONDecodeError:
        return name, text  # a bare word: a string
