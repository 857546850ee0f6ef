"""``beds provision rabbitmq|mariadb|mongodb``: one least-privilege account per node role.

Without ``--apply`` a command prints its plan (commands or statements, every password as
``***``, and where each password will come from) and touches nothing; with ``--apply`` it makes
every account what the plan says, idempotently, and prints one line per change (or that nothing
changed). Passwords: :mod:`beds.provision.passwords`; only secret files' paths are printed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import click

from beds.cli.common import EXIT_CONFIG, config_option, fail, load, quiet_logging
from beds.errors import BedsError, ConfigError, RequestError

if TYPE_CHECKING:
    from beds.config.model import Config
    from beds.provision.needs import StoreProvisioner
    from beds.provision.passwords import Passwords

__all__ = ("provision",)

_F = TypeVar("_F", bound=Callable[..., Any])
_HOST = re.compile(r"^[A-Za-z0-9_.%:/-]{1,255}$")


def _options(function: _F) -> _F:
    """The options every provision subcommand takes."""
    for option in reversed(
        (
            config_option,
            click.option(
                "--role",
                "roles",
                multiple=True,
                metavar="ROLE",
                help="Only this role (or 'client', for RabbitMQ); repeat it for several; "
                "default: every role.",
            ),
            click.option(
                "--apply",
                "do_apply",
                is_flag=True,
                help="Do it (idempotent); without it the plan is only printed.",
            ),
            click.option(
                "--user-name",
                metavar="TEMPLATE",
                default="beds-{env}-{role}",
                show_default=True,
                help="Account names, from {env} and {role}.",
            ),
            click.option(
                "--secrets-dir",
                type=click.Path(file_okay=False, path_type=Path),
                metavar="DIR",
                default=None,
                help="Folder for generated passwords and the roles' URLs (files 0600).",
            ),
        )
    ):
        function = option(function)
    return function


@click.group()
def provision() -> None:
    """Service accounts: one least-privilege account per node role (docs/deployment.md)."""


def _said(error: BaseException) -> str:
    if isinstance(error, RequestError) and error.details:
        return f"{error}: {', '.join(error.details)}"
    return str(error)


def _guarded(work: Callable[[], None]) -> None:
    """Run ``work``: a ConfigError exits 2, any other BedsError 1, each with its message."""
    try:
        work()
    except ConfigError as exc:
        fail(_said(exc), EXIT_CONFIG)
    except BedsError as exc:
        fail(_said(exc))


def _report(changes: list[str], passwords: Passwords) -> None:
    """After the changes (each printed as it was made): the files written, or that none was."""
    if not changes:
        click.echo("nothing changed: every account is as planned")
    for path in passwords.written:
        click.echo(f"wrote {path}")


@provision.command("rabbitmq")
@_options
def provision_rabbitmq(
    config_path: Path | None,
    roles: tuple[str, ...],
    do_apply: bool,
    user_name: str,
    secrets_dir: Path | None,
) -> None:
    """RabbitMQ users: one per role and one for clients, each with its own permissions."""
    from beds.policy import is_loopback
    from beds.provision.passwords import Passwords
    from beds.provision.plan import roles_of, user_namer
    from beds.provision.rabbitmq import amqp_accounts, apply_accounts, plan_lines
    from beds.provision.rabbitmqctl import RabbitCtl

    config = load(config_path)
    quiet_logging()
    passwords = Passwords(secrets_dir)

    def work() -> None:
        accounts = amqp_accounts(
            config,
            roles_of(config, roles, client=True),
            user_namer(user_name, config.node.env),
        )
        if not do_apply:
            for line in plan_lines(config, accounts, passwords):
                click.echo(line)
            return
        host = urlsplit(config.amqp.url).hostname
        if not is_loopback(host):
            # rabbitmqctl manages the broker of this machine, which is not amqp.url's.
            fail(f"amqp.url names {host}: run beds provision rabbitmq --apply on that machine")
        ctl = RabbitCtl.find()
        if ctl is None:
            fail("rabbitmqctl is not installed here (it comes with rabbitmq-server)")
        _report(apply_accounts(ctl, config, accounts, passwords, on_change=click.echo), passwords)

    _guarded(work)


def _admin_option(service: str, default: str) -> Callable[[_F], _F]:
    variable = f"BEDS_PROVISION_{service.upper()}_ADMIN_URL"
    return click.option(
        "--admin-url",
        metavar="URL",
        envvar=variable,
        default=None,
        help=f"An account that may create accounts and grant (default: {default}); one with "
        f"a password only through {variable}, never on the command line.",
    )


def _no_password_in_argv(ctx: click.Context, admin_url: str | None, service: str) -> None:
    """A password on the command line is in the process list, for every local user to read."""
    source = ctx.get_parameter_source("admin_url")
    typed = source is click.core.ParameterSource.COMMANDLINE
    if admin_url and typed and urlsplit(admin_url).password:
        fail(
            "--admin-url holds a password, which every local user can read in the process "
            f"list: set BEDS_PROVISION_{service.upper()}_ADMIN_URL instead",
            EXIT_CONFIG,
        )


@provision.command("mariadb")
@_options
@_admin_option("mariadb", "stores.rel.url")
@click.option(
    "--account-host",
    metavar="HOST",
    default=None,
    help="Where the accounts may log in from (default: the loopback address when "
    "stores.rel.url is on this machine, else '%', any host).",
)
@click.pass_context
def provision_mariadb(
    ctx: click.Context,
    config_path: Path | None,
    roles: tuple[str, ...],
    do_apply: bool,
    user_name: str,
    secrets_dir: Path | None,
    admin_url: str | None,
    account_host: str | None,
) -> None:
    """MariaDB accounts: EXECUTE and SELECT on each role's own objects, nothing else."""
    _no_password_in_argv(ctx, admin_url, "mariadb")
    config = load(config_path)
    quiet_logging()
    host = account_host or _default_host(config)
    _guarded(
        lambda: _provision_store(
            config,
            "rel",
            roles=roles,
            do_apply=do_apply,
            user_name=user_name,
            passwords=_passwords(secrets_dir),
            admin_url=admin_url,
            host=host,
        )
    )


@provision.command("mongodb")
@_options
@_admin_option("mongodb", "stores.rec.uri")
@click.pass_context
def provision_mongodb(
    ctx: click.Context,
    config_path: Path | None,
    roles: tuple[str, ...],
    do_apply: bool,
    user_name: str,
    secrets_dir: Path | None,
    admin_url: str | None,
) -> None:
    """MongoDB users: each role's own role, with its collections' actions only."""
    _no_password_in_argv(ctx, admin_url, "mongodb")
    config = load(config_path)
    quiet_logging()
    _guarded(
        lambda: _provision_store(
            config,
            "rec",
            roles=roles,
            do_apply=do_apply,
            user_name=user_name,
            passwords=_passwords(secrets_dir),
            admin_url=admin_url,
            host="%",
        )
    )


def _passwords(secrets_dir: Path | None) -> Passwords:
    from beds.provision.passwords import Passwords

    return Passwords(secrets_dir)


def _default_host(config: Config) -> str:
    """The account's host part: the node's address as MariaDB sees it, when it can be known.

    Nodes on the database's machine reach it over loopback, so their accounts accept nothing
    else; nodes elsewhere come from addresses only the operator knows: ``%`` (any), which
    ``--account-host`` narrows (``10.1.2.%``).
    """
    url = config.stores.get("rel", {}).get("url")
    host = urlsplit(url).hostname if isinstance(url, str) else None
    if host is None:
        return "%"
    if host.lower() == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "%"
    return str(address) if address.is_loopback else "%"


def _provision_store(
    config: Config,
    store: str,
    *,
    roles: tuple[str, ...],
    do_apply: bool,
    user_name: str,
    passwords: Passwords,
    admin_url: str | None,
    host: str,
) -> None:
    from beds.provision.plan import account_of, installed, provisioner_of, roles_of, user_namer

    if not _HOST.match(host):
        raise ConfigError(f"is not a host, address or pattern: {host!r}", key="--account-host")
    found = installed(config)
    provisioner = provisioner_of(config, found, store)
    namer = user_namer(user_name, config.node.env)
    table = config.stores.get(store, {})
    admin = admin_url or str(table.get("url") or table.get("uri") or "")
    changes: list[str] = []
    for name in roles_of(config, roles, client=False):
        account = account_of(config, found, provisioner, name, user=namer(name), host=host)
        if account is None:
            click.echo(f"# role {name}: uses no {provisioner.service} object, so it has no account")
            continue
        if not do_apply:
            source = passwords.describe(name, _prefix(provisioner), account.user)
            click.echo(f"# role {name}: account {account.user}, password {source}")
            for statement in provisioner.statements(account):
                click.echo(statement)
            continue
        secret = passwords.get(name, _prefix(provisioner), account.user)
        made = asyncio.run(provisioner.apply(account, secret.value, admin_url=admin))
        for change in made:
            click.echo(change)
        changes += made
        passwords.write_url(
            _prefix(provisioner), account.user, provisioner.url_for(account, secret.value)
        )
    if do_apply:
        _report(changes, passwords)


def _prefix(provisioner: StoreProvisioner) -> str:
    """The service's name in secret files: ``mariadb``, ``mongodb``."""
    return provisioner.service.lower()
