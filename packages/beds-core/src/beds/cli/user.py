"""``beds user``: the users of ``beds-identity`` (template ``beds_user``).

``create`` signs up (anyone, sent without a credential); ``list``, ``grant`` and ``revoke`` are
for admins and send the token of ``beds login`` (or ``--token``, ``BEDS_TOKEN``). Roles travel as
one comma-separated text field, ``"admin,member"``: :func:`parse_roles`, :func:`roles_text`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from beds.cli import common
from beds.cli.common import (
    config_option,
    echo_json,
    fail,
    json_option,
    load,
    timeout_option,
    url_option,
)
from beds.cli.credentials import (
    format_time,
    read_password,
    run_request,
    send_token,
    token_option,
)

if TYPE_CHECKING:
    from pathlib import Path

    from beds.config.model import Config

__all__ = ("parse_roles", "roles_text", "user", "with_role", "without_role")

USER_TEMPLATE = "beds_user"


def parse_roles(value: Any) -> list[str]:
    """A user's roles as a list, from the comma-separated text (or a list) a record holds."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [str(item) for item in value]
    roles: list[str] = []
    for item in items:
        role = item.strip()
        if role and role not in roles:
            roles.append(role)
    return roles


def roles_text(roles: list[str]) -> str:
    """The comma-separated text ``beds_user`` update takes: ``"admin,member"``."""
    return ",".join(roles)


def with_role(roles: list[str], role: str) -> list[str]:
    """``roles`` and ``role`` (added at the end when missing)."""
    return roles if role in roles else [*roles, role]


def without_role(roles: list[str], role: str) -> list[str]:
    """``roles`` without ``role``."""
    return [kept for kept in roles if kept != role]


def _check_role(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    role = value.strip()
    if not role or "," in role or any(char.isspace() for char in role):
        raise click.BadParameter("a role is one word, without commas or spaces")
    return role


@click.group()
def user() -> None:
    """Users of beds-identity: sign up, list, grant and revoke roles."""


@user.command("create")
@click.argument("handle")
@click.option("--display-name", default=None, help="The name shown for the user.")
@click.option("--email", default=None, help="The user's e-mail address.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of stdin instead of asking for it (twice).",
)
@config_option
@url_option
@timeout_option
def create(
    handle: str,
    display_name: str | None,
    email: str | None,
    password_stdin: bool,
    config_path: Path | None,
    url: str | None,
    timeout: float,
) -> None:
    """Sign up HANDLE (asks for the password); anyone may."""
    config = load(config_path)
    password = read_password(password_stdin, confirm=True)
    record: dict[str, Any] = {"handle": handle, "password": password}
    if display_name is not None:
        record["display_name"] = display_name
    if email is not None:
        record["email"] = email
    common.quiet_logging()

    async def send() -> Any:
        async with common.make_client(config, url, timeout) as client:  # no credential
            return await client.create(USER_TEMPLATE, record)

    data = run_request(send(), secrets=(password,))
    click.echo(f"created user {data.get('handle', handle)} (id {data.get('id')})")


@user.command("list")
@config_option
@url_option
@timeout_option
@token_option
@json_option
def list_users(
    config_path: Path | None, url: str | None, timeout: float, token: str | None, as_json: bool
) -> None:
    """List every user (admin)."""
    config = load(config_path)
    common.quiet_logging()
    sent = send_token(token, config.node.env)

    async def send() -> list[dict[str, Any]]:
        async with common.make_client(config, url, timeout, token=sent) as client:
            return await client.fetch(USER_TEMPLATE, "everyone")

    records = run_request(send(), secrets=(sent,))
    if as_json:
        echo_json(records)
        return
    rows = [
        (
            str(record.get("handle")),
            str(record.get("id")),
            roles_text(parse_roles(record.get("roles"))),
            "yes" if record.get("active", True) else "no",
            "-" if record.get("created_at") is None else format_time(record["created_at"]),
            str(record.get("display_name") or ""),
        )
        for record in records
    ]
    header = ("HANDLE", "ID", "ROLES", "ACTIVE", "CREATED", "DISPLAY NAME")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [f"{cell:<{width}}" for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())


def _change_roles(
    config: Config,
    url: str | None,
    timeout: float,
    token: str | None,
    handle: str,
    role: str,
    grant: bool,
) -> None:
    """Fetch HANDLE (``by_handle``), then update its roles with ``role`` added or removed."""
    sent = send_token(token, config.node.env)

    async def send() -> tuple[list[str], list[str] | None]:
        async with common.make_client(config, url, timeout, token=sent) as client:
            found = await client.fetch(USER_TEMPLATE, "by_handle", {"handle": handle})
            if not found:
                return [], None
            record = found[0]
            roles = parse_roles(record.get("roles"))
            changed = with_role(roles, role) if grant else without_role(roles, role)
            if changed != roles:
                await client.update(
                    USER_TEMPLATE, {"id": record["id"], "roles": roles_text(changed)}
                )
            return roles, changed

    before, after = run_request(send(), secrets=(sent,))
    if after is None:
        fail(f"there is no user {handle}")
    if after == before:
        state = "has role {} already" if grant else "does not have role {}"
        roles = roles_text(after) or "none"
        click.echo(f"{handle} {state.format(role)}: not changed (roles: {roles})")
    elif grant:
        click.echo(f"granted {role} to {handle} (roles: {roles_text(after)})")
    else:
        click.echo(f"revoked {role} from {handle} (roles: {roles_text(after) or 'none'})")


@user.command("grant")
@click.argument("handle")
@click.argument("role", callback=_check_role)
@config_option
@url_option
@timeout_option
@token_option
def grant(
    handle: str,
    role: str,
    config_path: Path | None,
    url: str | None,
    timeout: float,
    token: str | None,
) -> None:
    """Give HANDLE the role ROLE (admin)."""
    config = load(config_path)
    common.quiet_logging()
    _change_roles(config, url, timeout, token, handle, role, grant=True)


@user.command("revoke")
@click.argument("handle")
@click.argument("role", callback=_check_role)
@config_option
@url_option
@timeout_option
@token_option
def revoke(
    handle: str,
    role: str,
    config_path: Path | None,
    url: str | None,
    timeout: float,
    token: str | None,
) -> None:
    """Take the role ROLE from HANDLE (admin)."""
    config = load(config_path)
    common.quiet_logging()
    _change_roles(config, url, timeout, token, handle, role, grant=False)
