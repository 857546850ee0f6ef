"""The credential the ``beds`` command sends: the token file of ``beds login``, ``--token``.

A session token is a bearer credential: whoever holds it is the user until it expires. So the
token file is created readable by its owner only (mode 600, in a directory of mode 700 when
``beds`` creates it), replaced in one rename, and no command prints a token or a password: a
token is shown as its first characters (:func:`masked`), and an error reply is scrubbed of
both before it is printed (:func:`run_request`).

Which token a command sends: ``--token``, else ``$BEDS_TOKEN``, else the token file, which is
``$BEDS_TOKEN_FILE``, else ``$XDG_CONFIG_HOME/beds/token``, else ``~/.config/beds/token``. A
stored token is left out (with a note on stderr) when it is for another environment or has
expired, so an anonymous call still works after the session ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import orjson

from beds.cli.common import EXIT_CONFIG, fail
from beds.errors import BedsError, RequestError

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterable

__all__ = (
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "claims",
    "expired",
    "format_time",
    "masked",
    "read_password",
    "read_token_file",
    "read_token_option",
    "remove_token_file",
    "reply_error",
    "run_request",
    "send_token",
    "stored_token",
    "token_option",
    "token_path",
    "write_token_file",
)

_T = TypeVar("_T")
_F = TypeVar("_F", bound="Callable[..., Any]")

TOKEN_ENV = "BEDS_TOKEN"
"""A token to send, instead of the stored one."""
TOKEN_FILE_ENV = "BEDS_TOKEN_FILE"
"""Where ``beds login`` stores the token, instead of the user's configuration directory."""
SHOWN_CHARACTERS = 8
"""How much of a token the command shows (a JWT's first 8 characters are its header's)."""


def _token_option(purpose: str) -> Callable[[_F], _F]:
    return click.option(
        "--token",
        default=None,
        envvar=TOKEN_ENV,
        show_envvar=True,
        metavar="TOKEN",
        help=f"The token to {purpose} (default: the token file of beds login).",
    )


token_option = _token_option("send")
read_token_option = _token_option("read")


# -- the token file --------------------------------------------------------------------------


def token_path() -> Path:
    """``$BEDS_TOKEN_FILE``, else ``$XDG_CONFIG_HOME/beds/token``, else ``~/.config/beds/token``."""
    if explicit := os.environ.get(TOKEN_FILE_ENV):
        return Path(explicit)
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "beds" / "token"


def read_token_file(path: Path) -> dict[str, Any] | None:
    """The stored login, or ``None`` when there is no file; a file that is not one exits 1."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        fail(f"cannot read the token file {path}: {exc.strerror}")
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("token"), str):
        fail(f"{path} is not a token file of beds login: remove it, or beds login again")
    return document


def write_token_file(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` to ``path``, readable by its owner only from the first byte.

    The parent directory is created with mode 700 when missing (an existing one is left as it
    is). The text goes to a new file of mode 600 beside ``path``, which then replaces ``path``
    in one rename, so a reader never sees half a token and no other user ever could read it.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def remove_token_file(path: Path) -> None:
    """Remove the token file (gone already is fine)."""
    path.unlink(missing_ok=True)


# -- tokens ----------------------------------------------------------------------------------


def masked(token: str) -> str:
    """The first characters of ``token`` and ``…``: enough to tell tokens apart, not to use one."""
    return f"{token[:SHOWN_CHARACTERS]}…"


def claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT, read WITHOUT checking its signature; ``None`` if it is not one.

    Only for showing them (``beds whoami``) and for not sending an expired token: nodes verify.
    """
    import jwt

    try:
        found: Any = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return found if isinstance(found, dict) else None


def expired(token_claims: dict[str, Any], now: float | None = None) -> bool:
    """Whether ``exp`` is past (a token without ``exp`` never expires here)."""
    exp = token_claims.get("exp")
    return isinstance(exp, int | float) and exp <= (time.time() if now is None else now)


def format_time(value: Any) -> str:
    """A time for people: seconds since the epoch become ISO 8601 in UTC, text stays as it is."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def stored_token(env: str) -> str | None:
    """The token of the token file if it is for ``env`` and has not expired, else ``None``.

    A token left out is announced on stderr: the request goes without a credential.
    """
    path = token_path()
    document = read_token_file(path)
    if document is None:
        return None
    token: str = document["token"]
    stored_env = document.get("env")
    if stored_env is not None and stored_env != env:
        click.echo(
            f"beds: note: the token in {path} is for environment {stored_env}, not {env}: "
            "sending none",
            err=True,
        )
        return None
    token_claims = claims(token)
    if token_claims is not None and expired(token_claims):
        click.echo(
            f"beds: note: the token in {path} expired at {format_time(token_claims['exp'])}: "
            "sending none (beds login again)",
            err=True,
        )
        return None
    return token


def send_token(option: str | None, env: str) -> str | None:
    """The token a command sends: ``--token``/``BEDS_TOKEN`` (``option``), else the stored one."""
    return option if option else stored_token(env)


# -- passwords and requests ------------------------------------------------------------------


def read_password(from_stdin: bool, *, confirm: bool = False) -> str:
    """The password: the first line of stdin, or asked for without echo (twice if ``confirm``).

    An empty password exits 2.
    """
    password: str
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=confirm)
    if not password:
        fail("the password is empty", EXIT_CONFIG)
    return password


def _scrub(text: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def reply_error(error: RequestError) -> str:
    """``CODE message``, and the details after a colon, as the error reply says them."""
    details = "; ".join(error.details)
    return f"{error.CODE} {error.message}" + (f": {details}" if details else "")


def run_request(work: Coroutine[Any, Any, _T], secrets: Iterable[str | None] = ()) -> _T:
    """Run ``work``; an error reply or failure exits 1 with one line, ``secrets`` blanked out.

    An error reply prints ``beds: error: CODE message``; no reply (a timeout, RabbitMQ not
    reachable) prints what went wrong.
    """
    try:
        return asyncio.run(work)
    except RequestError as exc:
        fail(_scrub(reply_error(exc), secrets))
    except BedsError as exc:
        fail(_scrub(str(exc), secrets))
