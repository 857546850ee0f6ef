"""``beds schema``: the DBA schema shipped by template packages, as numbered migrations.

``migrate`` (production) submits the ticket of built-in template ``beds_schema``
(:mod:`beds.calgon.migrate`) with the operator's token, like ``beds submit``, and follows it.
``apply`` (development) and ``migrate --local`` run one code path, :func:`beds.migrations.
run_migrations`, per connection: the adapter's own objects first (its ``apply_schema`` with the
files that carry no version), then each package's migrations not recorded yet, each recorded as
it is applied. ``status`` reads the record and prints what is installed and pending.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

import click

from beds.cli.common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    config_option,
    echo_json,
    exit_code_of,
    fail,
    json_option,
    load,
    make_client,
    quiet_logging,
    timeout_option,
    url_option,
)
from beds.cli.credentials import run_request, send_token, token_option
from beds.errors import BedsError
from beds.migrations import (
    MigrationStore,
    files_for,
    migration_version,
    plan_migrations,
    run_migrations,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from beds.config.model import Config
    from beds.migrations import AppliedMigration
    from beds.node import BedsNode

__all__ = ("files_for", "schema")

_POLL_SECONDS = 0.5
_FINISHED = frozenset({"succeeded", "failed", "cancelled"})


@click.group()
def schema() -> None:
    """DBA schema shipped by template packages: apply, status, migrate."""


@schema.command("apply")
@config_option
def schema_apply(config_path: Path | None) -> None:
    """Apply the pending schema migrations of every installed template package (development).

    A package's files go to the databases its templates use (docs/configuration.md, "Named
    databases"); each is recorded in the database's beds_schema_migrations.
    """
    config = _development(load(config_path), "schema apply")
    _run(config, "schema apply", lambda node: _migrate(node, strict=False))


@schema.command("migrate")
@config_option
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Show progress until the ticket finishes, then the applied versions.",
)
@click.option(
    "--local",
    is_flag=True,
    help="Run the migrations in this process with the configured stores (development only).",
)
@url_option
@timeout_option
@token_option
def schema_migrate(
    config_path: Path | None,
    *,
    wait: bool,
    local: bool,
    url: str | None,
    timeout: float,
    token: str | None,
) -> None:
    """Apply the pending migrations as a ticket of the running cluster (admins only).

    A worker applies them one file per step through the stores' DBA connection
    (migration_url), refusing any recorded migration that was edited after it shipped.
    """
    config = load(config_path)
    if local:
        _run(_development(config, "schema migrate --local"), "schema migrate", _strict)
        return
    quiet_logging()
    sent = send_token(token, config.node.env)
    run_request(_submit(config, url, timeout, sent, wait=wait), [sent])


async def _submit(
    config: Config, url: str | None, timeout: float, token: str | None, *, wait: bool
) -> None:
    """Submit ``beds_schema`` ``migrate``; with ``wait``, follow it and print what it applied."""
    from beds.calgon.migrate import MIGRATE, SCHEMA_TEMPLATE

    async with make_client(config, url, timeout, token=token) as client:
        handle = await client.submit(SCHEMA_TEMPLATE, MIGRATE, {})
        if not wait:
            click.echo(f"ticket {handle.id} {handle.state}: beds ticket {handle.id} --wait")
            return
        with click.progressbar(
            length=1,
            label=f"ticket {handle.id}",
            file=sys.stderr,
            show_eta=False,
            item_show_func=lambda said: said,
        ) as bar:
            steps = -1
            while handle.state not in _FINISHED:
                await asyncio.sleep(_POLL_SECONDS)
                ticket = await handle.refresh()
                if ticket["steps_done"] != steps:  # open-ended: one step per file applied
                    steps = ticket["steps_done"]
                    bar.update(0, f"{steps} step(s) done")
            result = await handle.result() if handle.state == "succeeded" else None
            bar.update(1, handle.state)
    if result is None:
        error = handle.ticket.get("error") or {}
        details = "; ".join(error.get("details") or [])
        fail(
            f"schema migrate ticket {handle.id} {handle.state}: {error.get('code')} "
            f"{error.get('message')}{': ' + details if details else ''} (the files before it "
            "are recorded: beds schema status)"
        )
    for record in result:
        click.echo(
            f"applied {record['connection']}: {record['file']} (version {record['version']})"
        )
    if not result:
        click.echo("nothing to migrate: every package's required version is recorded")


@schema.command("status")
@config_option
@json_option
def schema_status(config_path: Path | None, *, as_json: bool) -> None:
    """Per connection and package: the installed and required versions, and the pending files."""
    config = load(config_path)
    _run(config, "schema status", lambda node: _status(node, as_json=as_json))


def _development(config: Config, command: str) -> Config:
    if config.production:
        fail(
            f"{command} is for development databases; in production the DBA installs schema",
            EXIT_CONFIG,
        )
    return config


def _strict(node: BedsNode) -> Awaitable[None]:
    return _migrate(node, strict=True)


def _run(config: Config, command: str, work: Callable[[BedsNode], Awaitable[None]]) -> None:
    """Run ``work`` on a node of ``config`` whose plugins are loaded; every adapter is closed."""
    from beds.node import BedsNode, StartupError

    quiet_logging("WARNING")

    async def main() -> None:
        node = BedsNode(config)
        try:
            node.load_plugins()
            await work(node)
        finally:
            for adapter in node.adapters.values():
                await adapter.aclose()

    try:
        asyncio.run(main())
    except StartupError as exc:
        fail(str(exc), exit_code_of(exc.checks))
    except BedsError as exc:
        fail(_said(exc))
    except Exception as exc:  # a store driver's own error: one line, never a traceback
        reason = " ".join(str(exc).split()) or "no message"
        fail(f"{command} failed: {type(exc).__name__}: {reason}", EXIT_FAILED)


def _said(error: BedsError) -> str:
    details = getattr(error, "details", ())
    return f"{error}: {'; '.join(details)}" if details else str(error)


async def _migrate(node: BedsNode, *, strict: bool) -> None:
    """Each connection in name order: its own objects, then its pending migrations.

    Each file is printed once it is applied (``applied <connection>: <file>``), so after a
    failure the lines above the error say what was installed (and recorded).
    """
    assert node.registry is not None
    for connection, adapter in sorted(node.adapters.items()):
        files = files_for(node.registry, connection)
        # Files without a version (a registry filled by hand) are applied every time, unrecorded.
        plain = [file for file in files if migration_version(file.name) is None]
        versioned = [file for file in files if migration_version(file.name) is not None]
        if not isinstance(adapter, MigrationStore):  # a store without a record: every file
            plain, versioned = files, []
        for name in await adapter.apply_schema(plain):
            click.echo(f"applied {connection}: {name}")
        if not versioned:
            continue
        assert isinstance(adapter, MigrationStore)

        def applied(entry: AppliedMigration, connection: str = connection) -> None:
            click.echo(f"applied {connection}: {entry.file}")

        def changed(detail: str, connection: str = connection) -> None:
            click.echo(
                f"beds: warning: {connection}: {detail}: edited after it was applied", err=True
            )

        await run_migrations(
            adapter,
            connection,
            versioned,
            applied_by=f"beds {'schema migrate' if strict else 'schema apply'}",
            strict=strict,
            on_applied=applied,
            on_changed=changed,
        )


async def _status(node: BedsNode, *, as_json: bool) -> None:
    assert node.registry is not None
    rows: list[dict[str, object]] = []
    for connection, adapter in sorted(node.adapters.items()):
        files = [
            file
            for file in files_for(node.registry, connection)
            if migration_version(file.name) is not None
        ]
        if not files or not isinstance(adapter, MigrationStore):
            continue
        applied = await adapter.read_migrations()
        rows += [status.as_json(connection) for status in plan_migrations(files, applied or [])]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no template package ships schema for the configured stores")
        return
    header = ("CONNECTION", "PACKAGE", "INSTALLED", "REQUIRED", "PENDING")
    table = [header] + [
        (
            str(row["connection"]),
            str(row["package"]),
            str(row["installed"]),
            str(row["required"]),
            ", ".join(str(name) for name in row["pending"]) or "-",  # type: ignore[attr-defined]
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    for line in table:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        click.echo("  ".join([*cells, line[-1]]))
    for row in rows:
        for detail in row["changed"]:  # type: ignore[attr-defined]
            click.echo(f"beds: warning: {row['connection']}: {row['package']} {detail}", err=True)
