"""Where a service account's password comes from, and the files that keep generated ones.

In order: ``BEDS_PROVISION_<ROLE>_PASSWORD``, then ``BEDS_PROVISION_<ROLE>_PASSWORD_FILE`` (a
file holding it: the configuration's ``*_FILE`` convention, for Docker and Kubernetes secrets),
then the role's file in ``--secrets-dir`` from an earlier run, else a new one from
:mod:`secrets`, written there. ``<ROLE>`` is the role's name in upper case with every other
character than a letter or digit as ``_`` (``appServer``: ``APPSERVER``; clients: ``CLIENT``).

Secret files are written with mode 0600 in a folder of mode 0700: ``{service}-{user}.password``
and ``{service}-{user}.url``, the configured URL logging in as the account, ready for
``BEDS__AMQP__URL_FILE`` or ``BEDS__STORES__REL__URL_FILE``. Only their paths are ever printed.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from beds.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ("Passwords", "Secret", "variable_of")

_PASSWORD_BYTES = 24
"""Random bytes in a generated password (32 URL-safe characters)."""


@attrs.frozen
class Secret:
    """A password and where it came from (the value is never in ``repr``)."""

    value: str = attrs.field(repr=False)
    source: str
    """For people: ``from BEDS_PROVISION_ADMIN_PASSWORD``, ``generated into <path>``…"""


def variable_of(role: str) -> str:
    """``BEDS_PROVISION_<ROLE>_PASSWORD`` for ``role``."""
    return f"BEDS_PROVISION_{re.sub(r'[^A-Z0-9]', '_', role.upper())}_PASSWORD"


class Passwords:
    """The passwords of one ``beds provision`` run.

    Args:
        secrets_dir: where generated passwords and the roles' URLs are kept; ``None``: every
            password must come from the environment, and no file is written.
        environ: the environment (default ``os.environ``).
    """

    def __init__(self, secrets_dir: Path | None, environ: Mapping[str, str] | None = None) -> None:
        self.secrets_dir = secrets_dir
        self.environ = os.environ if environ is None else environ
        self.written: list[Path] = []
        """The files written by this run, in order."""

    def _file(self, service: str, user: str, suffix: str) -> Path | None:
        if self.secrets_dir is None:
            return None
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{service}-{user}")
        return self.secrets_dir / f"{name}.{suffix}"

    def describe(self, role: str, service: str, user: str) -> str:
        """Where the password will come from, without reading or making it."""
        variable = variable_of(role)
        if variable in self.environ:
            return f"from {variable}"
        if f"{variable}_FILE" in self.environ:
            return f"from the file named by {variable}_FILE"
        path = self._file(service, user, "password")
        if path is None:
            return f"missing: set {variable} or {variable}_FILE, or pass --secrets-dir"
        return f"from {path}" if path.is_file() else f"generated into {path}"

    def get(self, role: str, service: str, user: str) -> Secret:
        """The role's password, read or generated (see the module docstring).

        Raises:
            ConfigError: it has no source, or its file cannot be read; never quotes it.
        """
        variable = variable_of(role)
        if variable in self.environ:
            return Secret(_checked(self.environ[variable], variable), f"from {variable}")
        named = self.environ.get(f"{variable}_FILE")
        if named is not None:
            return Secret(
                _checked(_read(Path(named), f"{variable}_FILE"), variable), f"from {named}"
            )
        path = self._file(service, user, "password")
        if path is None:
            raise ConfigError(
                f"no password for role {role}: set {variable} or {variable}_FILE, or pass "
                "--secrets-dir to generate one"
            )
        if path.is_file():
            return Secret(_checked(_read(path, "--secrets-dir"), str(path)), f"from {path}")
        value = secrets.token_urlsafe(_PASSWORD_BYTES)
        self._write(path, value)
        return Secret(value, f"generated into {path}")

    def write_url(self, service: str, user: str, url: str) -> Path | None:
        """Keep the URL that logs in as ``user`` (0600), if there is a secrets folder."""
        path = self._file(service, user, "url")
        if path is None:
            return None
        if not (path.is_file() and _read(path, "--secrets-dir") == url):
            self._write(path, url)
        return path

    def _write(self, path: Path, value: str) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Made 0600 from the start (no moment where it is readable), and kept so if it existed.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(descriptor, 0o600)
            os.write(descriptor, value.encode("utf-8") + b"\n")
        finally:
            os.close(descriptor)
        self.written.append(path)


def _read(path: Path, named_by: str) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(
            f"the password file {path} ({named_by}) cannot be read: {reason}"
        ) from None


def _checked(value: str, source: str) -> str:
    """A password a server and a URL can take: not empty, no line breaks or NUL."""
    if not value or any(char in value for char in "\r\n\x00"):
        raise ConfigError(f"the password of {source} is empty or holds a line break or NUL")
    return value
