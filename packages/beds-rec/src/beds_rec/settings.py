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

The table is structured with cattrs like the rest of the configuration
(:func:`beds.config.structure_table`): every problem raises :class:`~beds.errors.ConfigError`
``stores.rec.<key>: <problem>`` naming the file and the key path. Messages never repeat the URI,
because it may hold a password.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from pymongo.errors import ConfigurationError
from pymongo.uri_parser import parse_uri

from beds.config import FieldValueError, structure_table

if TYPE_CHECKING:
    from beds.namaste import StoreSettings

__all__ = ("EMBEDDED", "RecSettings", "parse_settings")

EMBEDDED = "embedded"
"""The ``uri`` value (or its absence) that selects the embedded server."""

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
        ConfigError: an unknown key, a missing ``database`` or a bad value; names the key path
            (``stores.rec.database``) and the file.
    """
    table = structure_table(
        settings.options, _Table, key=f"stores.{settings.store}", file=settings.file
    )
    return RecSettings(
        uri=None if table.uri == EMBEDDED else table.uri,
        idempotency=table.idempotency,
        database=table.database,
        server_selection_timeout=table.server_selection_timeout,
        embedded_path=Path(table.embedded_path),
        production=settings.production,
    )


def _uri(instance: _Table, attribute: attrs.Attribute[str], uri: str) -> None:
    if uri == EMBEDDED:
        return
    if not uri.startswith(("mongodb://", "mongodb+srv://")):
        raise FieldValueError(
            attribute.name, f"must start with mongodb:// or mongodb+srv://, or be {EMBEDDED!r}"
        )
    if uri.startswith("mongodb+srv://"):
        return  # parsing an SRV URI resolves DNS; the driver checks it at start
    try:
        parse_uri(uri, warn=False)
    except (ConfigurationError, ValueError) as exc:
        # The driver's message may quote the URI, which can hold a password: keep it out.
        raise FieldValueError(
            attribute.name, f"is not a valid MongoDB URI ({type(exc).__name__})"
        ) from None


def _database(instance: _Table, attribute: attrs.Attribute[str], value: str) -> None:
    if not _DATABASE.match(value):
        raise FieldValueError(
            attribute.name, 'must be a MongoDB database name (no / \\ . space " $ characters)'
        )


def _positive(instance: _Table, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise FieldValueError(attribute.name, "must be a positive number of seconds")


def _path(instance: _Table, attribute: attrs.Attribute[str], value: str) -> None:
    if not value:
        raise FieldValueError(attribute.name, "must be a non-empty path")


@attrs.frozen(kw_only=True)
class _Table:
    """The ``[stores.rec]`` table as written (see the module's table of keys)."""

    uri: str = attrs.field(default=EMBEDDED, validator=_uri)
    database: str = attrs.field(validator=_database)
    server_selection_timeout: float = attrs.field(default=5.0, validator=_positive)
    embedded_path: str = attrs.field(default=".beds/secantus", validator=_path)
    idempotency: bool = True


_KEYS: tuple[str, ...] = tuple(field.name for field in attrs.fields(_Table))
"""The table's keys, for the documentation's check (tests/docs)."""
