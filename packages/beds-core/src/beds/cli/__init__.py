"""The ``beds`` command (click): one module per command or command group.

=================  ==========================================================================
module             commands
=================  ==========================================================================
``run``            ``beds run``: serve a node until a signal
``check``          ``beds check``: the start-up checks, without serving
``call``           ``beds call``: send one request, print the response
``admin``          ``beds admin pause|resume|drain``: operator commands to the nodes
``tickets``        ``beds submit|ticket``: long operations (CALGON) and their tickets
``auth``           ``beds login|logout|whoami``: the session token of the person at the terminal
``user``           ``beds user create|list|grant|revoke``: the users of beds-identity
``lineage``        ``beds lineage``: the tree of events a request belongs to
``templates``      ``beds templates``: the installed templates
``plugins``        ``beds plugins``: the loaded plugins
``schema``         ``beds schema apply``: install the template packages' DBA schema
``provision``      ``beds provision rabbitmq|mariadb|mongodb``: one account per node role
``dlq``            ``beds dlq list|replay|purge``: the dead-letter queue
``status``         ``beds status``: the live status of a running node
``common``         options, config loading, errors, exit codes and JSON output they share
``credentials``    the token file, ``--token``/``BEDS_TOKEN``, never printing a secret
=================  ==========================================================================

This module holds the root group, ``--version`` (beds-core and every plugin distribution) and
:func:`main`, the console script. Command modules import the runtime when they run, so
``beds --help``, ``--version`` and shell completion stay fast.
"""

from __future__ import annotations

from importlib import metadata

import click

from beds.cli import (
    admin,
    auth,
    call,
    check,
    dlq,
    journal,
    lineage,
    plugins,
    provision,
    run,
    schema,
    status,
    templates,
    tickets,
    user,
)
from beds.log import no_color

__all__ = ("cli", "main")

_PROG = "beds"


def version_text() -> str:
    """``beds, version X`` and one line per distribution in the ``beds`` entry-point group.

    Read from the installed metadata: no plugin is imported.
    """
    from beds.plugins import ENTRY_POINT_GROUP

    lines = [f"{_PROG}, version {metadata.version('beds-core')}"]
    found: dict[str, tuple[str, str]] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        if ep.name not in found:
            found[ep.name] = (dist.name, dist.version) if dist is not None else ("?", "?")
    if not found:
        lines.append("plugins: none installed")
    else:
        lines.append("plugins:")
        width = max(len(name) for name in found)
        lines += [
            f"  {name:<{width}}  {dist} {version}"
            for name, (dist, version) in sorted(found.items())
        ]
    return "\n".join(lines)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(version_text())
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the versions of beds-core and the plugins, and exit.",
)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """BEDS: AMQP-first data back ends. Every data operation goes through RabbitMQ."""
    if no_color():
        ctx.color = False  # click.echo strips ANSI styles


for _command in (
    admin.admin,
    call.call,
    check.check,
    dlq.dlq,
    journal.journal,
    lineage.lineage,
    auth.login,
    auth.logout,
    plugins.plugins,
    provision.provision,
    run.run,
    schema.schema,
    status.status,
    tickets.submit,
    tickets.ticket,
    templates.templates,
    user.user,
    auth.whoami,
):
    cli.add_command(_command)


def main() -> None:
    """Entry point of the ``beds`` command (and of ``python -m beds``).

    The program name is always ``beds``: usage lines say ``beds``, and shell completion reads
    ``_BEDS_COMPLETE`` however the command was started.
    """
    cli(prog_name=_PROG)
