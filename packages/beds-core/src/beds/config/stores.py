"""Store connections: a store's default table and its named databases.

A store's table (``[stores.rel]``) is its default connection; named ones sit under it, in
``[stores.<store>.databases.<name>]``, and a template picks one with its ``database`` key::

    [stores.rel]
    url = "mysql://beds@db-main/app"
    [stores.rel.databases.warehouse]
    url = "mysql://beds@db-wh/warehouse"   # every other key inherits from [stores.rel]

beds-core splits the table, not the adapters: the default connection's adapter gets the table
without ``databases``; a named one gets the default table updated with its own table (its keys
win; a sub-table such as ``tls`` is replaced whole, not merged key by key) and no ``databases``.

A connection is named ``<store>`` (the default) or ``<store>.<database>``: the node keys its
adapters by it (:attr:`beds.templates.model.Template.connection`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from beds.errors import ConfigError

__all__ = (
    "DATABASES",
    "DATABASE_NAME",
    "check_databases",
    "connection_files",
    "connection_name",
    "connection_table",
    "databases_of",
    "split_connection",
)

DATABASES: Final = "databases"
"""The key of a store's table that holds its named connections."""
DATABASE_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
"""A named connection: an identifier (a letter or ``_``, then letters, digits, ``_``; ≤ 64)."""


def connection_name(store: str, database: str = "") -> str:
    """``rel`` for a store's default connection, ``rel.warehouse`` for a named one."""
    return f"{store}.{database}" if database else store


def split_connection(connection: str) -> tuple[str, str]:
    """A connection's store and database name (``""``: the default connection)."""
    store, _, database = connection.partition(".")
    return store, database


def check_databases(
    stores: Mapping[str, Mapping[str, Any]], origin_of: Callable[[str], str]
) -> None:
    """Refuse a ``databases`` key that is not a table of tables with identifier names.

    Args:
        stores: ``[stores]``, each store's table (already known to be tables).
        origin_of: the file (or other origin) that set a dotted key path.

    Raises:
        ConfigError: naming the key path (``stores.rel.databases.<name>``) and its file.
    """
    for store, table in stores.items():
        if DATABASES not in table:
            continue
        key = f"stores.{store}.{DATABASES}"
        databases = table[DATABASES]
        if not isinstance(databases, Mapping):
            raise ConfigError(
                f"{key}: must be a table of named connections "
                f"([{key}.<name>]), got {type(databases).__name__}",
                file=origin_of(key),
                key=key,
            )
        for name, named in databases.items():
            path = f"{key}.{name}"
            if not DATABASE_NAME.fullmatch(name):
                raise ConfigError(
                    f"{path}: {name!r} is not a database name (a letter or _, then letters, "
                    "digits or _; at most 64 characters)",
                    file=origin_of(path),
                    key=path,
                )
            if not isinstance(named, Mapping):
                raise ConfigError(
                    f"{path}: must be a table (the connection's keys), got {type(named).__name__}",
                    file=origin_of(path),
                    key=path,
                )


def connection_files(
    stores: Mapping[str, Mapping[str, Any]], origin_of: Callable[[str], str]
) -> dict[str, str]:
    """Connection (``rel``, ``rel.warehouse``) → the file that last set a key of its table.

    For the adapters' error messages (:attr:`beds.config.model.Config.store_files`); a named
    connection's file is its own table's, even for the keys it inherits.
    """
    files: dict[str, str] = {}
    for store, table in stores.items():
        tables = {store: (f"stores.{store}", table)}
        for name, named in table.get(DATABASES, {}).items():
            tables[connection_name(store, name)] = (f"stores.{store}.{DATABASES}.{name}", named)
        for connection, (path, keys) in tables.items():
            files[connection] = origin_of(path)
            for key in keys:
                if key != DATABASES:
                    files[connection] = origin_of(f"{path}.{key}")
    return files


def databases_of(stores: Mapping[str, Mapping[str, Any]], store: str) -> tuple[str, ...]:
    """The names of the store's named connections, sorted (empty: only the default one)."""
    databases = stores.get(store, {}).get(DATABASES, {})
    return tuple(sorted(databases)) if isinstance(databases, Mapping) else ()


def connection_table(
    stores: Mapping[str, Mapping[str, Any]], connection: str
) -> dict[str, Any] | None:
    """The table a connection's adapter gets (see the module docstring).

    Returns:
        The default table without ``databases``, or for a named connection the default table
        updated with the named one's keys (sub-tables replaced whole); ``None`` when the store's
        configuration does not declare the named connection.
    """
    store, database = split_connection(connection)
    table = dict(stores.get(store, {}))
    databases = table.pop(DATABASES, {})
    if not database:
        return table
    named = databases.get(database) if isinstance(databases, Mapping) else None
    if not isinstance(named, Mapping):
        return None
    return {**table, **named}
