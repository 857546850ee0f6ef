"""The REL store's record of schema migrations (:class:`beds.migrations.MigrationStore`).

``beds_schema_migrations`` (``sql/003_beds_schema_migrations.sql``, installed with beds-rel's
other own objects) holds one row per package and version. A migration file runs like any schema
file (:func:`beds_rel.schema.apply_schema_files`: its statements in order, the database created
if needed), then its row is written, on a connection of its own: the adapter need not be started
(``beds schema apply``, the migration ticket's DBA connection: :meth:`MigrationsMixin.
migration_store`, from ``migration_url``). Nodes read the rows through the
view ``beds_schema_migrations_v``, which their accounts may ``SELECT`` (:mod:`beds_rel.provision`).
"""

from __future__ import annotations

import datetime as dt
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

import asyncmy

from beds.errors import DatabaseObjectMissing
from beds.migrations import AppliedMigration, MigrationStore
from beds.namaste import SchemaFile
from beds_rel.bindings import Call
from beds_rel.errors import connecting, map_exceptions
from beds_rel.schema import apply_schema_files

if TYPE_CHECKING:
    from beds_rel.settings import RelSettings

__all__ = ("READ", "VIEW", "MigrationsMixin", "schema_file")

_SCHEMA: Final = "003_beds_schema_migrations.sql"
VIEW: Final = "beds_schema_migrations_v"
"""What nodes read at start-up; every role's account gets ``SELECT`` on it."""
_COLUMNS: Final = "package, version, connection, file, sha256, applied_at, applied_by"
_READ: Final = f"SELECT {_COLUMNS} FROM {VIEW} ORDER BY package, version"
READ: Final = Call(
    kind="view", name=VIEW, sql=_READ, params=(), columns=tuple(_COLUMNS.split(", "))
)
"""The view as provisioning grants it (``SELECT``) to every role that uses the store."""
_RECORD: Final = (
    f"INSERT INTO beds_schema_migrations ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
    "ON DUPLICATE KEY UPDATE connection = VALUES(connection), file = VALUES(file), "
    "sha256 = VALUES(sha256), applied_at = VALUES(applied_at), applied_by = VALUES(applied_by)"
)


def schema_file() -> SchemaFile:
    """The DBA file that creates the record table and its view."""
    text = resources.files("beds_rel").joinpath("sql", _SCHEMA).read_text(encoding="utf-8")
    return SchemaFile(name=f"beds_rel/sql/{_SCHEMA}", text=text, distribution="beds-rel")


class MigrationsMixin:
    """``read_migrations`` and ``apply_migration`` for :class:`beds_rel.adapter.RelAdapter`."""

    settings: RelSettings

    def migration_store(self) -> MigrationStore | None:
        """An adapter of the same database on the DBA's account (``migration_url``), not open."""
        if self.settings.migration is None:
            return None
        adapter: Any = type(self)  # RelAdapter, built from its settings
        store: MigrationStore = adapter(self.settings.migration)
        return store

    async def read_migrations(self) -> list[AppliedMigration] | None:
        """Every recorded migration, by package and version; ``None``: no record table (yet)."""
        try:
            with connecting(self.settings):
                conn = await asyncmy.connect(**self.settings.connect_kwargs())
            try:
                with map_exceptions(objects=(VIEW,)):
                    async with conn.cursor() as cursor:
                        await cursor.execute(_READ)
                        rows = await cursor.fetchall()
            finally:
                await conn.ensure_closed()
        except DatabaseObjectMissing:  # no database or no view: nothing was ever recorded
            return None
        return [
            AppliedMigration(
                package=package,
                version=int(version),
                connection=connection,
                file=file,
                sha256=sha256,
                applied_at=applied_at.replace(tzinfo=dt.UTC).isoformat(timespec="microseconds"),
                applied_by=applied_by,
            )
            for package, version, connection, file, sha256, applied_at, applied_by in rows
        ]

    async def apply_migration(self, file: SchemaFile, applied: AppliedMigration) -> None:
        """Run the file's statements, then write its row (replacing one already there).

        Raises:
            StoreError: a statement failed (the details name the file and line); no row.
            StoreUnavailable: MariaDB cannot be reached.
        """
        with connecting(self.settings):
            await apply_schema_files(self.settings, [file])
        at = dt.datetime.fromisoformat(applied.applied_at).astimezone(dt.UTC).replace(tzinfo=None)
        with connecting(self.settings):
            conn = await asyncmy.connect(**self.settings.connect_kwargs())
        try:
            with map_exceptions(objects=("beds_schema_migrations",)):
                async with conn.cursor() as cursor:
                    await cursor.execute(
                        _RECORD,
                        (
                            applied.package,
                            applied.version,
                            applied.connection,
                            applied.file,
                            applied.sha256,
                            at,
                            applied.applied_by,
                        ),
                    )
        finally:
            await conn.ensure_closed()
