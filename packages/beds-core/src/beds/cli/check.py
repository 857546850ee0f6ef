"""``beds check``: run the start-up checks without serving and print the checklist.

With ``--production`` the checks run as a production node's would (``node.mode =
"production"``: the production policy first, every problem fatal), and then the accounts the
node logs in with are reviewed (:mod:`beds.provision.review`): each privilege beyond what its
role uses, or missing from it, is one more ``[FAIL]`` line naming the configuration key.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

import attrs
import click

from beds.cli.common import (
    EXIT_FAILED,
    config_option,
    echo_json,
    exit_code_of,
    json_option,
    load,
    node_option,
    quiet_logging,
)

if TYPE_CHECKING:
    from pathlib import Path

    from beds.config.model import Config
    from beds.node import Check
    from beds.provision.review import Line

__all__ = ("check",)

_MARKS = {"ok": "ok  ", "warning": "WARN", "failed": "FAIL"}


@click.command()
@config_option
@node_option
@json_option
@click.option(
    "--production",
    is_flag=True,
    help="Check as a production node would, then review the privileges of the node's "
    "accounts; exit 1 naming each thing to fix.",
)
def check(config_path: Path | None, role: str | None, as_json: bool, production: bool) -> None:
    """Run the start-up checks without serving and print the checklist."""
    from beds.node import BedsNode

    config = load(config_path, role)
    if production:
        config = attrs.evolve(config, node=attrs.evolve(config.node, mode="production"))
    quiet_logging()
    checks = asyncio.run(BedsNode(config).check())
    lines = _review(config) if production else None
    if as_json:
        listed = [{"name": c.name, "status": c.status, "detail": c.detail} for c in checks]
        if lines is None:
            echo_json(listed)
        else:
            found = [{"status": x.status, "key": x.key, "problem": x.problem} for x in lines]
            echo_json({"checks": listed, "production": found})
    else:
        _print(checks, lines)
    code = exit_code_of(checks) if any(item.status != "ok" for item in checks) else 0
    if lines is not None and any(line.status == "failed" for line in lines):
        code = max(code, EXIT_FAILED)
    if code:
        sys.exit(code)


def _review(config: Config) -> list[Line]:
    from beds.provision.review import review

    return asyncio.run(review(config))


def _print(checks: list[Check], lines: list[Line] | None) -> None:
    for item in checks:
        line = f"[{_MARKS[item.status]}] {item.name}"
        click.echo(f"{line}: {item.detail}" if item.detail else line)
    if lines is None:
        return
    for found in lines:
        click.echo(f"[{_MARKS[found.status]}] {found.key}: {found.problem}")
    clean = all(item.status == "ok" for item in checks)
    if clean and not any(found.status == "failed" for found in lines):
        seen = " in what could be seen" if lines else ""
        click.echo(f"[ok  ] production: nothing to fix{seen}")
