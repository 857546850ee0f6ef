"""The REC store's configuration table, ``[stores.rec]``.

=============================  ==========================================================
key                            meaning
=============================  ==========================================================
``uri``                        ``mongodb://`` or ``mongodb+srv://`` URI; absent or
                               ``"embedded"`` starts an embedded SecantusDB server
``database``                   database name (required)
``server_selection_timeout``   seconds to find a usable server (default 5)
``embedded_path``              storage folder of the embedded server
                               (default ``.beds/secantus``, relative to the working directory)
``idempotency``                honour idempotency keys (default true; needs the
                               ``beds_idempotency`` collection, which ``beds schema apply``
                               creates)
=============================  ==========================================================

Every problem is a :class:`~beds.errors.ConfigError` naming the key, for example
``stores.rec.database``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from pymongo.errors import ConfigurationError
from pymongo.uri_parser import parse_uri

from beds.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from beds.namaste import StoreSettings

__all__ = ("EMBEDDED", "RecSettings", "parse_settings")

EMBEDDED = "embedded"
"""The ``uri`` value (or its absence) that selects the embedded server."""

_KEYS = ("uri", "database", "server_selection_timeout", "embedded_path", "idempotency")
# MongoDB forbids these characters in database names (and the name must fit in 63 bytes).
_DATABASE = re.compile(r'^[^/\\. "$*<>:|?\x00]{1,63}$')


@attrs.frozen(kw_only=True)
class RecSettings:
    """Validated REC store settings."""

    uri: str | None
    """The server's URI, or ``None`` for the embedded server."""
    database: str
    server_selection_timeout: float = 5.0
    """Seconds the driver waits for a usable server before failing."""
    embedded_path: Path = Path(".beds/secantus")
    """Where the embedded server keeps its data."""
    idempotency: bool = True
    """Whether writes honour idempotency keys (collection ``beds_idempotency``)."""
    production: bool = False

    @property
    def embedded(self) -> bool:
        """Whether the adapter starts its own embedded server."""
        return self.uri is None


def parse_settings(settings: StoreSettings) -> RecSettings:
    """Validate a ``[stores.rec]`` table.

    Args:
        settings: the table as the node read it.

    Returns:
        The settings with defaults applied.

    Raises:
        ConfigError: an unknown key or a bad value; the error names ``stores.<store>.<key>``.
    """
    options: Mapping[str, Any] = settings.options

    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(message, file=settings.file, key=f"stores.{settings.store}.{key}")

    unknown = sorted(set(options) - set(_KEYS))
    if unknown:
        raise fail(unknown[0], f"unknown key; the REC store accepts {', '.join(_KEYS)}")

    uri = options.get("uri", EMBEDDED)
    if not isinstance(uri, str):
        raise fail("uri", "must be a string")
    if uri == EMBEDDED:
        uri = None
    else:
        _check_uri(uri, fail)

    database = options.get("database")
    if database is None:
        raise fail("database", "is required")
    if not isinstance(database, str) or not _DATABASE.match(database):
        raise fail("database", 'must be a MongoDB database name (no / \\ . space " $ characters)')

    timeout = options.get("server_selection_timeout", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise fail("server_selection_timeout", "must be a positive number of seconds")

    path = options.get("embedded_path", ".beds/secantus")
    if not isinstance(path, str) or not path:
        raise fail("embedded_path", "must be a non-empty path")

    idempotency = options.get("idempotency", True)
    if not isinstance(idempotency, bool):
        raise fail("idempotency", "must be true or false")

    return RecSettings(
        uri=uri,
        idempotency=idempotency,
        database=database,
        server_selection_timeout=float(timeout),
        embedded_path=Path(path),
        production=settings.production,
    )


def _check_uri(uri: str, fail: Callable[[str, str], ConfigError]) -> None:
    if not uri.startswith(("mongodb://", "mongodb+srv://")):
        raise fail("uri", f"must start with mongodb:// or mongodb+srv://, or be {EMBEDDED!r}")
    if uri.startswith("mongodb+srv://"):
        return  # parsing an SRV URI resolves DNS; the driver checks it at start
    try:
        parse_uri(uri, warn=False)
    except (ConfigurationError, ValueError) as exc:
        # The driver's message may quote the URI, which can hold a password: keep it out.
        raise fail("uri", f"is not a valid MongoDB URI ({type(exc).__name__})") from None
