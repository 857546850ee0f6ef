"""The REC store's record of schema migrations (:class:`beds.migrations.MigrationStore`).

The collection ``beds_schema_migrations`` (``schema_files/005_beds_schema_migrations.json``,
installed with beds-rec's other own collections) holds one document per package and version,
unique on the two. A migration file is applied like any REC schema file (the adapter's
``apply_schema``: its collection, validator and indexes), then its document is written with an
upsert. Both methods connect for their duration when the adapter is not started (``beds schema
apply``, the migration ticket's DBA connection: :meth:`MigrationsMixin.migration_store`,
from ``migration_url``).
"""

from __future__ import annotations

import datetime as dt
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs

from beds.migrations import RECORD, AppliedMigration, MigrationStore
from beds.namaste import SchemaFile, StoreSettings
from beds_rec.errors import map_exceptions

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pymongo import AsyncMongoClient
    from pymongo.asynchronous.database import AsyncDatabase

    from beds_rec.settings import RecSettings

__all__ = ("MigrationsMixin", "schema_file")

_SCHEMA: Final = "005_beds_schema_migrations.json"
_FIELDS: Final = ("package", "version", "connection", "file", "sha256", "applied_at", "applied_by")

Document = dict[str, Any]


def schema_file() -> SchemaFile:
    """The schema file of the record collection and its unique (package, version) index."""
    folder = resources.files("beds_rec").joinpath("schema_files")
    return SchemaFile(
        name=f"beds_rec/schema_files/{_SCHEMA}",
        text=folder.joinpath(_SCHEMA).read_text("utf-8"),
        distribution="beds-rec",
    )


class _Adapter(Protocol):
    """What the mixin uses of the adapter."""

    _client: AsyncMongoClient[Document] | None
    settings: RecSettings

    @property
    def _database(self) -> AsyncDatabase[Document]: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def apply_schema(self, files: Sequence[SchemaFile]) -> list[str]: ...


class MigrationsMixin:
    """``read_migrations`` and ``apply_migration`` for :class:`beds_rec.adapter.RecAdapter`."""

    def migration_store(self: _Adapter) -> MigrationStore | None:
        """An adapter of the same database on the DBA's URI (``migration_url``), not open."""
        settings = self.settings
        if settings.migration_uri is None:
            return None
        options: dict[str, Any] = {
            "uri": settings.migration_uri,
            "database": settings.database,
            "server_selection_timeout": settings.server_selection_timeout,
            "idempotency": settings.idempotency,
        }
        if settings.tls is not None:
            options["tls"] = attrs.asdict(settings.tls)
        adapter: Any = type(self)  # RecAdapter, built from a [stores.rec] table
        store: MigrationStore = adapter(
            StoreSettings(store="rec", options=options, production=settings.production)
        )
        return store

    async def read_migrations(self: _Adapter) -> list[AppliedMigration] | None:
        """Every recorded migration, by package and version; ``None``: no record collection."""
        started_here = self._client is None
        if started_here:
            await self.start()
        try:
            database = self._database
            with map_exceptions(collection=RECORD):
                if not await database.list_collection_names(filter={"name": RECORD}):
                    return None
                cursor = (
                    database[RECORD].find({}, {"_id": 0}).sort([("package", 1), ("version", 1)])
                )
                documents = [document async for document in cursor]
        finally:
            if started_here:
                await self.aclose()
        return [
            AppliedMigration(
                package=str(doc["package"]),
                version=int(doc["version"]),
                connection=str(doc["connection"]),
                file=str(doc["file"]),
                sha256=str(doc["sha256"]),
                applied_at=_utc(doc["applied_at"]).isoformat(timespec="microseconds"),
                applied_by=str(doc["applied_by"]),
            )
            for doc in documents
        ]

    async def apply_migration(self: _Adapter, file: SchemaFile, applied: AppliedMigration) -> None:
        """Apply the file's collection, then upsert its record.

        Raises:
            TemplateError: the file is not a valid REC schema file; nothing is recorded.
            StoreError: MongoDB refused it; nothing is recorded.
        """
        started_here = self._client is None
        if started_here:
            await self.start()
        try:
            await self.apply_schema([file])
            document: Document = {name: getattr(applied, name) for name in _FIELDS}
            document["applied_at"] = dt.datetime.fromisoformat(applied.applied_at)
            with map_exceptions(collection=RECORD):
                await self._database[RECORD].replace_one(
                    {"package": applied.package, "version": applied.version}, document, upsert=True
                )
        finally:
            if started_here:
                await self.aclose()


def _utc(value: dt.datetime) -> dt.datetime:
    """A stored date as an aware UTC date-time (the client may hand back naive UTC)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
