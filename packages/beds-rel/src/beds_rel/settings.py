"""The REL store's configuration table (``[stores.rel]``), parsed and checked.

=================  =========  ===================================================================
key                default    meaning
=================  =========  ===================================================================
``url``            required   ``mysql://user:password@host:port/database`` (``mariadb://`` too)
``pool_min``       1          connections opened at start and kept open
``pool_max``       10         most connections open at once
``connect_timeout`` 5         seconds to wait for a connection
``secondaries``    []         URLs of replicas: fetches with consistency ``secondary`` read
                              there (round-robin), else the primary (``url``); checked at
                              start-up (not required: a warning in development); writes and
                              every other call go to ``url``
``replica_retry_   5          seconds a replica that failed is left alone before a read tries it
seconds``                     again (more than 0, at most 3600)
``idempotency``    true       honour idempotency keys (needs beds-rel's ``beds_idempotency_*``
                              objects, which ``beds schema apply`` installs)
``migration_url``  absent     the DBA account's ``mysql://`` URL, only for the schema migration
                              ticket (``beds schema migrate``); its database, if it names one,
                              must be ``url``'s (omitted: ``url``'s); a secret, like ``url``
``tls``            absent     a sub-table ``[stores.rel.tls]``; present: every connection (``url``
                              and ``secondaries``) uses TLS and verifies the server's certificate
``tls.ca_file``    ""         PEM file of the CAs that sign the server's certificate; empty: the
                              system's CAs
``tls.cert_file``  ""         PEM file of a client certificate, when the server asks for one
``tls.key_file``   ""         its private key (empty: it is in ``cert_file``)
``tls.verify_      true       check that the URL's host is a name in the server's certificate;
identity``                    ``false`` only for a server addressed by an IP address its
                              certificate lacks (the production policy flags it)
=================  =========  ===================================================================

The table is structured with cattrs like the rest of the configuration
(:func:`beds.config.structure_table`): every problem raises :class:`~beds.errors.ConfigError`
``stores.rel.<key>: <problem>`` naming the file and the key path. Messages never repeat the URL,
because it may hold a password. The TLS context is built here, when the table is parsed, so a
TLS file that cannot be used (missing, not PEM, an expired client certificate) stops the node at
start-up, naming ``stores.rel.tls.<key>``, before any connection is tried.
"""

from __future__ import annotations

import re
import ssl
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import attrs

from beds.config import FieldValueError, structure_table
from beds.errors import ConfigError
from beds.transport.tls import client_context

if TYPE_CHECKING:
    from beds.namaste import StoreSettings

__all__ = ("RelSettings", "parse_settings")

_SCHEMES = frozenset({"mysql", "mariadb"})
_DATABASE = re.compile(r"^[A-Za-z0-9_$-]{1,64}$")
_MAX_TIMEOUT = 3600


@attrs.frozen(kw_only=True)
class RelSettings:
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
    secondaries: tuple[RelSettings, ...] = ()
    """Replicas of the primary, for reads with consistency ``secondary``
    (:mod:`beds_rel.replicas`); each has the primary's pool sizes, timeout and TLS."""
    replica_retry_seconds: float = 5.0
    """Seconds a replica that failed is skipped before a read tries it again."""
    url_key: str = "stores.rel.url"
    """The key of this connection's URL, for messages (``stores.rel.secondaries[0]``)."""
    tls: ssl.SSLContext | None = attrs.field(default=None, eq=False, repr=False)
    """The client context of ``[stores.rel.tls]`` (``None``: plaintext), shared by secondaries."""
    migration: RelSettings | None = attrs.field(default=None, repr=False, eq=False)
    """The DBA's connection to the same database (``migration_url``), with this one's timeout
    and TLS; ``None``: not configured. Only the migration ticket uses it."""
    secondary_key_costs: str = ""
    """``optimizer_adjust_secondary_key_costs`` for the sessions, when the server has it: set
    by the adapter after asking the server (:meth:`RelAdapter.start`), never configured."""

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
            "init_command": "SET time_zone = '+00:00'"
            + (
                f", optimizer_adjust_secondary_key_costs = '{self.secondary_key_costs}'"
                if self.secondary_key_costs
                else ""
            ),
        }
        if with_database:
            kwargs["database"] = self.database
        if self.tls is not None:
            # asyncmy takes an SSLContext as it is and upgrades after the server's greeting.
            kwargs["ssl"] = self.tls
        return kwargs


def parse_settings(settings: StoreSettings) -> RelSettings:
    """Validate a ``[stores.rel]`` table.

    Args:
        settings: the table as the node read it.

    Returns:
        The settings with defaults applied and the URLs taken apart.

    Raises:
        ConfigError: an unknown key, a missing ``url``, a bad value or a TLS file that cannot be
            used; names the key path (``stores.rel.pool_max``, ``stores.rel.tls.ca_file``) and
            the file.
    """
    key = settings.key
    table = structure_table(settings.options, _Table, key=key, file=settings.file)
    tls = None if table.tls is None else _tls_context(table.tls, key=key, file=settings.file)
    # A replica takes the primary's load of reads: the same pool sizes, timeout and TLS.
    shared: dict[str, Any] = {
        "pool_min": table.pool_min,
        "pool_max": table.pool_max,
        "connect_timeout": table.connect_timeout,
        "tls": tls,
    }
    return RelSettings(
        **_url_parts(table.url),
        **shared,
        idempotency=table.idempotency,
        secondaries=tuple(
            RelSettings(**_url_parts(url), **shared, url_key=f"{key}.secondaries[{index}]")
            for index, url in enumerate(table.secondaries)
        ),
        replica_retry_seconds=table.replica_retry_seconds,
        url_key=f"{key}.url",
        migration=_migration(table, shared, key),
    )


def _migration(table: _Table, shared: dict[str, Any], key: str) -> RelSettings | None:
    """The DBA's settings from ``migration_url`` (checked by the table: same database)."""
    if table.migration_url is None:
        return None
    parts = _url_parts(table.migration_url, "migration_url", database=_database_of(table.url))
    return RelSettings(**parts, **shared, url_key=f"{key}.migration_url")


def _database_of(url: str) -> str:
    return str(_url_parts(url)["database"])


def _tls_context(table: _TlsTable, *, key: str, file: str | None) -> ssl.SSLContext:
    try:
        context = client_context(table, key=f"{key}.tls")
    except ConfigError as exc:
        # client_context names the key but cannot know the file: say both, like every other
        # problem of the table.
        problem = str(exc).removesuffix(f" (key {exc.key})")
        raise ConfigError(f"{exc.key}: {problem}", key=exc.key, file=file) from None
    if not table.verify_identity:
        # The chain is still verified against ca_file; only the host name check is off.
        context.check_hostname = False
    return context


def _url(instance: _Table, attribute: attrs.Attribute[str], value: str) -> None:
    _url_parts(value, attribute.name)


def _secondary_urls(
    instance: _Table, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
) -> None:
    for index, url in enumerate(value):
        _url_parts(url, f"{attribute.name}[{index}]")


def _at_least(minimum: int) -> Any:
    def check(instance: _Table, attribute: attrs.Attribute[int], value: int) -> None:
        if value < minimum:
            raise FieldValueError(attribute.name, f"must be at least {minimum}, got {value}")

    return check


def _timeout(instance: _Table, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0 < value <= _MAX_TIMEOUT:
        raise FieldValueError(
            attribute.name, f"must be more than 0 and at most {_MAX_TIMEOUT} seconds"
        )


@attrs.frozen(kw_only=True)
class _TlsTable:
    """The ``[stores.rel.tls]`` table as written (see the module's table of keys)."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    verify_identity: bool = True


@attrs.frozen(kw_only=True)
class _Table:
    """The ``[stores.rel]`` table as written (see the module's table of keys)."""

    url: str = attrs.field(validator=_url)
    pool_min: int = attrs.field(default=1, validator=_at_least(0))
    pool_max: int = attrs.field(default=10, validator=_at_least(1))
    connect_timeout: float = attrs.field(default=5.0, validator=_timeout)
    idempotency: bool = True
    secondaries: tuple[str, ...] = attrs.field(default=(), validator=_secondary_urls)
    replica_retry_seconds: float = attrs.field(default=5.0, validator=_timeout)
    tls: _TlsTable | None = None
    migration_url: str | None = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.migration_url is not None:
            _url_parts(self.migration_url, "migration_url", database=_database_of(self.url))
        if self.pool_max < self.pool_min:
            raise FieldValueError(
                "pool_max", f"must be at least pool_min ({self.pool_min}), got {self.pool_max}"
            )


def _url_parts(value: str, key: str = "url", *, database: str | None = None) -> dict[str, Any]:
    """Take a ``mysql://`` URL apart; a problem names ``key`` and never repeats the URL.

    ``database``: the URL may omit its database (it is this one) and may name no other.
    """
    try:
        parts = urlsplit(value)
        port = parts.port or 3306
    except ValueError:
        raise FieldValueError(key, "is not a valid URL (bad port?)") from None
    if parts.scheme not in _SCHEMES:
        raise FieldValueError(key, "must start with mysql:// or mariadb://")
    if parts.query or parts.fragment:
        raise FieldValueError(key, "takes no query string; use the other stores.rel keys")
    if not parts.hostname:
        raise FieldValueError(key, "must name a host")
    if not parts.username:
        raise FieldValueError(key, "must name a user (mysql://user@host/database)")
    named = unquote(parts.path.removeprefix("/"))
    if database is not None and named not in ("", database):
        raise FieldValueError(
            key, f"must reach the database of url ({database}) or name none, got another"
        )
    database = named or database or ""
    if not _DATABASE.match(database):
        raise FieldValueError(
            key, "must end with a database name (letters, digits, _, $, -; at most 64)"
        )
    return {
        "host": parts.hostname,
        "port": port,
        "user": unquote(parts.username),
        "password": unquote(parts.password or ""),
        "database": database,
    }


_KEYS: tuple[str, ...] = (
    *(field.name for field in attrs.fields(_Table)),
    *(f"tls.{field.name}" for field in attrs.fields(_TlsTable)),
)
"""The table's keys (``tls.ca_file`` for the sub-table's), for the documentation's check
(tests/docs)."""
