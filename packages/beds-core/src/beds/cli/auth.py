"""``beds login``, ``beds logout`` and ``beds whoami``: the session of the person at the terminal.

``login`` trades a handle and a password for a session token (``beds_session`` create, package
``beds-identity``) and stores it in the token file (:mod:`beds.cli.credentials`), which later
commands send. ``logout`` ends the session on every node and removes the file. ``whoami`` reads
the token's claims, without asking a node and without checking the signature.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from beds.cli import common
from beds.cli.common import (
    EXIT_CONFIG,
    config_option,
    echo_json,
    fail,
    json_option,
    load,
    timeout_option,
    url_option,
)
from beds.cli.credentials import (
    claims,
    format_time,
    masked,
    read_password,
    read_token_file,
    read_token_option,
    remove_token_file,
    reply_error,
    run_request,
    token_path,
    write_token_file,
)
from beds.errors import BedsError, RequestError, Unauthenticated

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ("login", "logout", "whoami")

password_stdin_option = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of stdin instead of asking for it.",
)


@click.command()
@click.argument("handle", required=False)
@password_stdin_option
@config_option
@url_option
@timeout_option
def login(
    handle: str | None,
    password_stdin: bool,
    config_path: Path | None,
    url: str | None,
    timeout: float,
) -> None:
    """Log in and store the session token for the next commands.

    Asks for HANDLE when it is not given, and for the password (not echoed).
    """
    config = load(config_path)
    if handle is None:
        handle = str(click.prompt("handle")).strip()
    password = read_password(password_stdin)
    common.quiet_logging()
    path = token_path()

    async def send() -> dict[str, Any]:
        async with common.make_client(config, url, timeout) as client:
            return await client.login(handle, password)

    data = run_request(send(), secrets=(password,))
    token = data.get("token")
    if not isinstance(token, str) or not token:
        fail("the node answered the login without a token: is beds_session from beds-identity?")
    proven = (claims(token) or {}).get("handle") or handle
    document = {
        "token": token,
        "expires_at": data.get("expires_at"),
        "session": data.get("session"),
        "handle": proven,
        "env": config.node.env,
    }
    try:
        write_token_file(path, document)
    except OSError as exc:
        fail(f"logged in, but the token cannot be written to {path}: {exc.strerror}")
    click.echo(
        f"logged in as {proven} (session {document['session']}, "
        f"expires {format_time(document['expires_at'])})"
    )


@click.command()
@config_option
@url_option
@timeout_option
def logout(config_path: Path | None, url: str | None, timeout: float) -> None:
    """End the stored session on every node and remove the token file."""
    config = load(config_path)
    path = token_path()
    stored = read_token_file(path)
    if stored is None:
        fail(f"not logged in: there is no token file {path}")
    token: str = stored["token"]
    env = stored.get("env")
    if env is not None and env != config.node.env:
        fail(
            f"the token in {path} is for environment {env}, not {config.node.env}: "
            "log out with that environment's configuration (--config)",
            EXIT_CONFIG,
        )
    common.quiet_logging()

    async def send() -> None:
        async with common.make_client(config, url, timeout, token=token) as client:
            await client.logout()

    who = stored.get("handle") or "?"
    try:
        asyncio.run(send())
    except Unauthenticated:
        remove_token_file(path)
        click.echo(f"the session of {who} had ended already (expired or revoked); removed {path}")
        return
    except RequestError as exc:
        fail(reply_error(exc).replace(token, "***"))
    except BedsError as exc:
        fail(str(exc).replace(token, "***"))
    remove_token_file(path)
    click.echo(f"logged out {who} (session {stored.get('session')}); removed {path}")


def _roles(value: Any) -> list[str]:
    """A ``roles`` claim as a list: a list as it is, comma-separated text split."""
    if isinstance(value, str):
        return [role.strip() for role in value.split(",") if role.strip()]
    if isinstance(value, list | tuple):
        return [str(role) for role in value]
    return []


def describe(token: str, source: str, now: float | None = None) -> dict[str, Any] | None:
    """What ``beds whoami --json`` prints for ``token`` (``None`` if it is not a JWT)."""
    found = claims(token)
    if found is None:
        return None
    exp = found.get("exp")
    now = time.time() if now is None else now
    return {
        "handle": found.get("handle") or found.get("preferred_username"),
        "id": found.get("sub"),
        "roles": _roles(found.get("roles")),
        "session": found.get("sid"),
        "issuer": found.get("iss"),
        "environment": found.get("aud"),
        "issued_at": format_time(found["iat"]) if "iat" in found else None,
        "expires_at": format_time(exp) if exp is not None else None,
        "expired": isinstance(exp, int | float) and exp <= now,
        "token": masked(token),
        "source": source,
    }


@click.command()
@read_token_option
@json_option
@click.pass_context
def whoami(ctx: click.Context, token: str | None, as_json: bool) -> None:
    """Print who the stored token says you are, without asking a node.

    Reads --token, else $BEDS_TOKEN, else the token file of beds login.
    """
    if token:
        by_option = ctx.get_parameter_source("token") is ParameterSource.COMMANDLINE
        source = "--token" if by_option else "BEDS_TOKEN"
    else:
        path = token_path()
        stored = read_token_file(path)
        if stored is None:
            fail(f"not logged in: there is no token file {path} and no --token or BEDS_TOKEN")
        token, source = stored["token"], str(path)
    document = describe(token, source)
    if document is None:
        fail(f"the token ({source}) is not a JWT: its claims cannot be read")
    if as_json:
        echo_json(document)
        return
    expiry = document["expires_at"] or "never"
    if document["expired"]:
        expiry += " " + click.style("(expired)", fg="red", bold=True)
    rows = [
        ("handle", document["handle"]),
        ("id", document["id"]),
        ("roles", ", ".join(document["roles"]) or "(none)"),
        ("session", document["session"]),
        ("env", document["environment"]),
        ("expires", expiry),
        ("token", f"{document['token']} ({source})"),
    ]
    for name, value in rows:
        click.echo(f"{name:<8} {'-' if value is None else value}")
