"""``beds lineage``: the tree of events a request belongs to, from the admin node."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import click

from beds.cli.common import (
    config_option,
    echo_json,
    fail,
    json_option,
    load,
    make_client,
    quiet_logging,
    timeout_option,
    url_option,
)
from beds.errors import BedsError, PublishError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ("lineage",)


@click.command()
@click.argument("event_id")
@config_option
@url_option
@timeout_option
@json_option
def lineage(
    event_id: str, config_path: Path | None, url: str | None, timeout: float, as_json: bool
) -> None:
    """Print the tree of events EVENT_ID belongs to, with timings (from the admin node)."""
    from beds.lineage import LINEAGE_TEMPLATE, Event, format_tree

    config = load(config_path)
    quiet_logging()

    async def ask() -> Any:
        async with make_client(config, url, timeout) as client:
            return await client.fetch(LINEAGE_TEMPLATE, params={"event_id": event_id})

    try:
        records = asyncio.run(ask())
    except PublishError:
        fail("no admin node serves lineage here (nothing is bound to *.admin): start one")
    except BedsError as exc:
        fail(str(exc))
    if as_json:
        echo_json(records)
    else:
        click.echo(format_tree([Event.from_record(record) for record in records]))
