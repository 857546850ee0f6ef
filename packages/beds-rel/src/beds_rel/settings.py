"""The REL store's configuration table (``[stores.rel]``), parsed and checked.

=================  =========  ===================================================================
key                default    meaning
=================  =========  ===================================================================
``url``            required   ``mysql://user:password@host:port/database`` (``mariadb://`` too)
``pool_min``       1          connections opened at start and kept open
``pool_max``       10         most connections open at once
``connect_timeout`` 5         seconds to wait for a connection
``secondaries``    []         URLs of replicas, checked at start-up (not required: a warning in
                              development); every call goes to ``url``, the master
``idempotency``    true       honour idempotency keys (needs beds-rel's ``beds_idempotency_*``
                              objects, which ``beds schema apply`` installs)
=================  =========  ===================================================================

Every problem raises :class:`~beds.errors.ConfigError` naming the file and the key path
(``stores.rel.pool_max``). Messages never repeat the URL, because it may hold a password.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import attrs

from beds.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from beds.namaste import StoreSettings

__all__ = ("RelConfig",)

_KEYS = ("url", "pool_min", "pool_max", "connect_timeout", "idempotency", "secondaries")
_SCHEMES = frozenset({"mysql", "mariadb"})
_DATABASE = re.compile(r"^[A-Za-z0-9_$-]{1,64}$")
_MAX_TIMEOUT = 3600


@attrs.frozen(kw_only=True)
class RelConfig:
    """Validated connection settings for one MariaDB/MySQL database."""

    host: str
    port: int = 3306
    user: str
    password: str = attrs.field(default="", repr=False)
    database: str
    pool_min: int = 1
    pool_max: int = 10
    connect_timeout: float = 5.0
    idempotency: bool = True
    secondaries: tuple[RelConfig, ...] = ()
    """Replicas of the master: checked at start-up only."""

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> RelConfig:
        """Parse a store's configuration table.

        Raises:
            ConfigError: an unknown key, a missing ``url`` or a bad value; names the key path.
        """
        return _Parser(settings).parse()

    def connect_kwargs(self, *, with_database: bool = True) -> dict[str, Any]:
        """Return the keyword arguments for ``asyncmy.connect`` (and ``asyncmy.Pool``)."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "connect_timeout": self.connect_timeout,
            "charset": "utf8mb4",
            "autocommit": True,
            # Naive DATETIME values are read and written as UTC; see beds.values.
            "init_command": "SET time_zone = '+00:00'",
        }
        if with_database:
            kwargs["database"] = self.database
        return kwargs


class _Parser:
    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.options: Mapping[str, Any] = settings.options

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(
            f"{key} {message}", file=self.settings.file, key=f"stores.{self.settings.store}.{key}"
        )

    def parse(self) -> RelConfig:
        unknown = sorted(set(self.options) - set(_KEYS))
        if unknown:
            raise self.fail(unknown[0], f"is not a REL store option ({', '.join(_KEYS)})")
        if "url" not in self.options:
            raise self.fail("url", "is required (mysql://user:password@host:port/database)")
        url = self._url(self.options["url"], "url")
        pool_min = self._integer("pool_min", 1, minimum=0)
        pool_max = self._integer("pool_max", 10, minimum=1)
        if pool_max < pool_min:
            raise self.fail("pool_max", f"must be at least pool_min ({pool_min}), got {pool_max}")
        timeout = self._timeout()
        idempotency = self.options.get("idempotency", True)
        if not isinstance(idempotency, bool):
            raise self.fail("idempotency", f"must be true or false, got {idempotency!r}")
        return RelConfig(
            **url,
            pool_min=pool_min,
            pool_max=pool_max,
            connect_timeout=timeout,
            idempotency=idempotency,
            secondaries=self._secondaries(timeout),
        )

    def _secondaries(self, timeout: float) -> tuple[RelConfig, ...]:
        value = self.options.get("secondaries", [])
        if not isinstance(value, list):
            raise self.fail("secondaries", "must be an array of mysql:// URLs")
        return tuple(
            RelConfig(**self._url(item, f"secondaries[{index}]"), connect_timeout=timeout)
            for index, item in enumerate(value)
        )

    def _url(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, str):
            raise self.fail(key, "must be a string")
        try:
            parts = urlsplit(str(value))
            port = parts.port or 3306
        except ValueError:
            raise self.fail(key, "is not a valid URL (bad port?)") from None
        if parts.scheme not in _SCHEMES:
            raise self.fail(key, "must start with mysql:// or mariadb://")
        if parts.query or parts.fragment:
            raise self.fail(key, "takes no query string; use the other stores.rel keys")
        if not parts.hostname:
            raise self.fail(key, "must name a host")
        if not parts.username:
            raise self.fail(key, "must name a user (mysql://user@host/database)")
        database = unquote(parts.path.removeprefix("/"))
        if not _DATABASE.match(database):
            raise self.fail(
                key, "must end with a database name (letters, digits, _, $, -; at most 64)"
            )
        return {
            "host": parts.hostname,
            "port": port,
            "user": unquote(parts.username),
            "password": unquote(parts.password or ""),
            "database": database,
        }

    def _integer(self, key: str, default: int, *, minimum: int) -> int:
        value = self.options.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {type(value).__name__}")
        if value < minimum:
            raise self.fail(key, f"must be at least {minimum}, got {value}")
        return int(value)

    def _timeout(self) -> float:
        value = self.options.get("connect_timeout", 5)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail("connect_timeout", f"must be a number, got {type(value).__name__}")
        if not 0 < value <= _MAX_TIMEOUT:
            raise self.fail(
                "connect_timeout", f"must be more than 0 and at most {_MAX_TIMEOUT} seconds"
            )
        return float(value)
