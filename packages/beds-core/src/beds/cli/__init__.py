"""The ``beds`` command (click): one module per command or command group.

=================  ==========================================================================
module             commands
=================  ==========================================================================
``run``            ``beds run``: serve a node until a signal
``check``          ``beds check``: the start-up checks, without serving
``call``           ``beds call``: send one request, print the response
``load``           ``beds load``: JSON Lines from stdin sent as batches, one result line each
``admin``          ``beds admin pause|resume|drain``: operator commands to the nodes
``tickets``        ``beds submit|ticket``: long operations (CALGON) and their tickets
``auth``           ``beds login|logout|whoami``: the session token of the person at the terminal
``user``           ``beds user create|list|grant|revoke``: the users of beds-identity
``lineage``        ``beds lineage``: the tree of events a request belongs to
``new_domain``     ``beds new-domain``: a template package generated from a description
``templates``      ``beds templates``: the installed templates
``contract``       ``beds contract asyncapi``: the AsyncAPI document of the AMQP contract
``plugins``        ``beds plugins``: the loaded plugins
``schema``         ``beds schema apply``: install the template packages' DBA schema
``provision``      ``beds provision rabbitmq|mariadb|mongodb``: one account per node role
``dlq``            ``beds dlq list|replay|purge``: the dead-letter queue
``status``         ``beds status``: the live status of a running node
``common``         options, config loading, errors, exit codes and JSON output they share
``credentials``    the token file, ``--token``/``BEDS_TOKEN``, never printing a secret
=================  ==========================================================================

Other packages add commands through the ``beds.commands`` entry-point group (beds-http's
``beds http``): :func:`add_plugin_commands`.

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
    contract,
    dlq,
    journal,
    lineage,
    load,
    new_domain,
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
    contract.contract,
    dlq.dlq,
    journal.journal,
    lineage.lineage,
    load.load_command,
    auth.login,
    auth.logout,
    new_domain.new_domain,
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


COMMANDS_GROUP = "beds.commands"
"""Entry-point group of the commands other packages add to ``beds`` (``beds http``)."""


def add_plugin_commands(group: click.Group) -> list[str]:
    """Add the click commands of the ``beds.commands`` entry points to ``group``.

    A command that fails to load, is not a click command, or takes a built-in's name is left
    out; the returned lines (one per such command) say why, without a traceback.
    """
    problems: list[str] = []
    for ep in sorted(metadata.entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        where = f"{ep.name!r} of {ep.dist.name if ep.dist is not None else '?'}"
        if ep.name in group.commands:
            problems.append(f"beds: plugin command {where} not added: the name is taken")
            continue
        try:
            command = ep.load()
        except Exception as exc:  # any import error of a third-party package: one line
            problems.append(f"beds: plugin command {where} failed to load: {exc!r}")
            continue
        if not isinstance(command, click.Command):
            problems.append(f"beds: plugin command {where} is not a click command")
            continue
        group.add_command(command, ep.name)
    return problems


# Added when the module is imported, so `beds --help` and the docs tests see them; their
# modules import their runtime only when they run, as the built-in commands do.
_PLUGIN_PROBLEMS = add_plugin_commands(cli)


def main() -> None:
    """Entry point of the ``beds`` command (and of ``python -m beds``).

    The program name is always ``beds``: usage lines say ``beds``, and shell completion reads
    ``_BEDS_COMPLETE`` however the command was started. A plugin command that failed to load
    is reported in one line on stderr; the other commands still work.
    """
    for problem in _PLUGIN_PROBLEMS:
        click.echo(problem, err=True)
    cli(prog_name=_PROG)
