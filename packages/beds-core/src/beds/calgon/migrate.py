"""The schema migration ticket: built-in template ``beds_schema``, long operation ``migrate``.

``beds schema migrate`` submits it like any long operation (only the ``admin`` role may: the
template's access rules answer anyone else ``BEDS-403``); a default-lane worker runs it through
:class:`MigrationRunner`, which the node registers in its factory for this template. The
operation is open-ended: each step applies the next pending migration of the first connection
(in name order) that has one, through that connection's DBA account (``migration_url``,
:meth:`beds.migrations.MigrationStore.migration_store`), records it, and returns its record
(``package``, ``version``, ``connection``, ``file``, ``sha256``, ``applied_at``,
``applied_by``); a step with nothing left to apply returns no record, which ends the ticket.
A step reads the record again before it applies anything, so a step run twice (a takeover)
never applies a file twice.

A connection with a pending migration and no ``migration_url`` fails the ticket with
``BEDS-501`` naming the key; a recorded migration edited after it shipped fails it with
``BEDS-409``; a file that fails fails it with the store's error, the files before it recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from beds.config.stores import connection_name, databases_of
from beds.envelopes import Operation
from beds.errors import NotConfigured, UnsupportedOperation
from beds.migrations import (
    MigrationStore,
    changed_error,
    files_for,
    migration_version,
    plan_migrations,
    run_migrations,
)
from beds.namaste import NamasteCore, StoreSettings
from beds.templates.model import AccessRules, LongOperation, Template

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from beds.config.model import Config
    from beds.namaste import CallContext, Query, Record, SchemaFile
    from beds.registry import AdapterFactory, TemplateRegistry

__all__ = ("MIGRATE", "SCHEMA_TEMPLATE", "MigrationRunner", "schema_template")

SCHEMA_TEMPLATE: Final = "beds_schema"
"""The built-in template whose long operation ``migrate`` applies pending schema migrations."""
MIGRATE: Final = "migrate"
ADMIN: Final = "admin"
_STEP_TIMEOUT: Final = 3600.0
"""Seconds one migration file may run (an index on a large table takes a while)."""


def schema_template() -> Template:
    """``beds_schema``: no records, one long operation, every operation for admins only."""
    return Template(
        name=SCHEMA_TEMPLATE,
        store="beds",
        tla="beds",
        description="Schema migrations of the installed template packages (beds schema migrate)",
        fields={},
        key=(),
        operations={},
        queries={},
        long_operations={
            MIGRATE: LongOperation(
                name=MIGRATE,
                steps=0,
                step_timeout=_STEP_TIMEOUT,
                description="apply the pending migrations, one file per step",
            )
        },
        access=AccessRules(
            rules={operation: frozenset({ADMIN}) for operation in Operation}, admin_role=ADMIN
        ),
    )


class MigrationRunner(NamasteCore):
    """The "adapter" of ``beds_schema``: runs ``migrate`` steps; every other call is refused.

    Args:
        config: the node's configuration (every store connection it declares).
        registry: the installed template packages' schema files.
        factories: store → adapter factory (the plugins'), for connections the node has no
            adapter of.
        adapters: the node's own adapters by connection, used to read the record.
    """

    store = "beds"
    features: frozenset[str] = frozenset({"long_operations"})

    def __init__(
        self,
        config: Config,
        registry: TemplateRegistry,
        factories: Mapping[str, AdapterFactory],
        adapters: Mapping[str, NamasteCore],
    ) -> None:
        self.config = config
        self.registry = registry
        self.factories = factories
        self.adapters = dict(adapters)
        self._built: dict[str, NamasteCore] = {}

    def connections(self) -> list[str]:
        """Every connection the configuration declares, in name order."""
        names = []
        for store in self.config.stores:
            names.append(store)
            names += [connection_name(store, db) for db in databases_of(self.config.stores, store)]
        return sorted(names)

    async def run_step(
        self,
        template: Template,
        operation: LongOperation,
        params: Mapping[str, Any],
        step: int,
        ctx: CallContext,
    ) -> list[Record]:
        """Apply the next pending migration; its record, or ``[]`` when none is left.

        Raises:
            NotConfigured: a connection has a pending migration and no ``migration_url``.
            Conflict: a recorded migration was edited after it shipped.
            StoreError: the file failed (nothing of it is recorded).
        """
        applied_by = f"beds schema migrate ({ctx.principal or 'anonymous'})"
        for connection in self.connections():
            files = _versioned(files_for(self.registry, connection))
            adapter = self._adapter(connection) if files else None
            if adapter is None or not isinstance(adapter, MigrationStore):
                continue
            # Read with the node's account first: a connection with nothing pending needs no DBA.
            statuses = plan_migrations(files, await adapter.read_migrations() or [])
            refused = changed_error(connection, statuses)
            if refused is not None:
                raise refused
            if not any(status.pending for status in statuses):
                continue
            dba = self._dba(connection, adapter)
            if await dba.read_migrations() is None and isinstance(dba, NamasteCore):
                await dba.apply_schema([])  # the record (and the store's other own objects)
            done = await run_migrations(
                dba, connection, files, applied_by=applied_by, strict=True, limit=1
            )
            if done:
                entry = done[0]
                return [
                    {
                        "package": entry.package,
                        "version": entry.version,
                        "connection": entry.connection,
                        "file": entry.file,
                        "sha256": entry.sha256,
                        "applied_at": entry.applied_at,
                        "applied_by": entry.applied_by,
                    }
                ]
        return []

    def _adapter(self, connection: str) -> NamasteCore | None:
        """The node's adapter of ``connection``, else one built (not started) from its table."""
        adapter = self.adapters.get(connection) or self._built.get(connection)
        if adapter is not None:
            return adapter
        factory = self.factories.get(connection.partition(".")[0])
        if factory is None:
            return None
        adapter = self._built[connection] = factory(StoreSettings.of(self.config, connection))
        return adapter

    def _dba(self, connection: str, adapter: MigrationStore) -> MigrationStore:
        dba = adapter.migration_store()
        if dba is None:
            key = f"{StoreSettings.of(self.config, connection).key}.migration_url"
            raise NotConfigured(
                f"{connection} has pending schema migrations and no DBA connection: set {key} "
                "on the nodes that run tickets (docs/calgon.md, Schema migrations)",
                details=(f"key: {key}",),
            )
        return dba

    def prepare(self, template: Template) -> None:
        """Nothing to check: the template is built in."""

    async def start(self) -> None:
        """Nothing to open: every step opens (and closes) what it needs."""

    async def verify(self, template: Template) -> None:
        """Nothing to verify: the record is installed by the first step that needs it."""

    async def create(self, template: Template, record: Record, ctx: CallContext) -> Record:
        """Refused: ``beds_schema`` keeps no records (``BEDS-405``)."""
        raise _refused()

    async def fetch(self, template: Template, query: Query, ctx: CallContext) -> list[Record]:
        """Refused: ``beds_schema`` keeps no records (``BEDS-405``)."""
        raise _refused()

    async def update(self, template: Template, record: Record, ctx: CallContext) -> Record:
        """Refused: ``beds_schema`` keeps no records (``BEDS-405``)."""
        raise _refused()

    async def delete(self, template: Template, key: Record, ctx: CallContext) -> Record:
        """Refused: ``beds_schema`` keeps no records (``BEDS-405``)."""
        raise _refused()

    async def apply_schema(self, files: Sequence[SchemaFile]) -> list[str]:
        """Refused: ``beds_schema`` keeps no records (``BEDS-405``)."""
        raise _refused()

    async def aclose(self) -> None:
        """Close the adapters built here (the node closes its own)."""
        built, self._built = self._built, {}
        for adapter in built.values():
            await adapter.aclose()


def _refused() -> UnsupportedOperation:
    return UnsupportedOperation(f"{SCHEMA_TEMPLATE} only answers submit ({MIGRATE}) and ticket")


def _versioned(files: Sequence[SchemaFile]) -> list[SchemaFile]:
    return [file for file in files if migration_version(file.name) is not None]
