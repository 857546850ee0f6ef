"""``RelAdapter``: NamasteCore for MariaDB/MySQL through an asyncmy connection pool.

The adapter only calls the DBA's named objects (see :mod:`beds_rel.bindings` for the SQL) and
reads results by these conventions, which the DBA's routines follow:

* create: the procedure's first result set holds the new row; ``returns`` fields are read from it
  and from the procedure's OUT parameters (``out = ["id"]``).
* update: the procedure returns the row (its ``returns`` fields) or an empty result set when no
  row has the key (``NotFound``). Absent optional params are passed as ``NULL``: keep the value.
* delete: the procedure returns one row with a ``deleted`` column (``ROW_COUNT()``); 0 is
  ``NotFound``.
* query procedures take the query's params and then the row limit (``p_limit``); view queries
  filter, order and page in the adapter's ``SELECT`` (:mod:`beds_rel.views`).
* OUT and INOUT parameters and result sets (``out``, ``inout``, ``result_sets``) are read by
  :func:`beds_rel.statements.run_call`; a query declaring them answers one record with each
  result set and value by name (:func:`beds_rel.statements.typed_record`).
* locking: update and delete procedures change the row only at the version sent, and
  ``SIGNAL SQLSTATE '45409'`` when it exists at another one (``StaleVersion``; the adapter reads
  the current version through the key query).

Sessions run with ``time_zone = '+00:00'`` and autocommit; every returned value goes through
:func:`beds.values.to_wire_record`. A write with an idempotency key runs in one transaction with
its key (:mod:`beds_rel.idempotency`), and a journaled write in one with its entry
(:mod:`beds_rel.journal`), both together when both apply, so write procedures must not
``COMMIT`` themselves.

Why this module is long: it is the one class the node sees, with the whole NamasteCore life
cycle (pool, optional checks, verify, the four operations, the journal read, schema apply);
each method is short and delegates the SQL to :mod:`beds_rel.bindings`, :mod:`beds_rel.views`,
:mod:`beds_rel.statements`, :mod:`beds_rel.idempotency` and :mod:`beds_rel.journal`; reads
with consistency ``secondary`` go through :mod:`beds_rel.replicas`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from functools import partial
from typing import TYPE_CHECKING, Any

import asyncmy
import asyncmy.errors
import attrs

from beds.envelopes import Consistency, Operation
from beds.errors import (
    DatabaseObjectMissing,
    NotFound,
    RequestError,
    StaleVersion,
    StoreError,
    StoreUnavailable,
)
from beds.namaste import FEATURES
from beds.values import to_wire, to_wire_record
from beds_rel import journal
from beds_rel.batch import BatchMixin
from beds_rel.bindings import Call, TemplatePlan, plan_template
from beds_rel.errors import connecting, is_clean, map_exceptions
from beds_rel.idempotency import CALLS as IDEMPOTENCY_CALLS
from beds_rel.idempotency import PURGE, CallWrite, write_once
from beds_rel.idempotency import schema_file as idempotency_schema
from beds_rel.long_operations import LongOperationsMixin
from beds_rel.migrations import MigrationsMixin
from beds_rel.migrations import schema_file as migrations_schema
from beds_rel.replicas import ReplicaSet
from beds_rel.schema import apply_schema_files
from beds_rel.settings import RelSettings, parse_settings
from beds_rel.statements import (
    Row,
    execute,
    in_transaction,
    read_by_key,
    run_call,
    typed,
    typed_record,
)
from beds_rel.tickets import TicketsMixin
from beds_rel.tickets import schema_file as tickets_schema
from beds_rel.verify import missing_objects

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping, Sequence

    from asyncmy.connection import Connection

    from beds.namaste import CallContext, Query, Record, SchemaFile, StoreSettings
    from beds.templates.model import Template
    from beds_rel.replicas import Replica

__all__ = ("RelAdapter",)

_FLAG = re.compile(r"^[a-z_]{1,64}$")
"""An optimizer flag's name as the server reports it (nothing else is put into a SET)."""


class RelAdapter(BatchMixin, TicketsMixin, LongOperationsMixin, MigrationsMixin):
    """The REL store: MariaDB/MySQL stored procedures, views and functions by name."""

    store = "rel"
    features: frozenset[str] = frozenset(FEATURES)
    """Every feature (:data:`beds.namaste.FEATURES`): locking through the DBA's procedures,
    journals in ``beds_journal``, filters and pagination on view queries, batches
    (:mod:`beds_rel.batch`)."""

    def __init__(self, settings: RelSettings) -> None:
        self.settings = settings
        self.idempotent_writes = settings.idempotency
        """Whether writes honour idempotency keys (``[stores.rel] idempotency``)."""
        self._pool: asyncmy.Pool | None = None
        self._plans: dict[str, TemplatePlan] = {}
        self.replicas = ReplicaSet(
            settings.secondaries, retry_seconds=settings.replica_retry_seconds
        )
        """Where fetches with consistency ``secondary`` read (``[stores.rel] secondaries``)."""

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> RelAdapter:
        """Build the adapter from the ``[stores.rel]`` table (the registered factory).

        Raises:
            ConfigError: the table is invalid; the message names the key.
        """
        return cls(parse_settings(settings))

    def prepare(self, template: Template) -> None:
        """Check the template's REL bindings and build its statements (no I/O).

        Raises:
            TemplateError: a binding the adapter cannot serve.
        """
        self.prepare_long_operations(template)
        self._plans[template.name] = plan_template(template)

    def _plan(self, template: Template) -> TemplatePlan:
        plan = self._plans.get(template.name)
        if plan is None:
            self.prepare(template)
            plan = self._plans[template.name]
        return plan

    async def start(self) -> None:
        """Open the pool and check that the database answers; make the replicas' pools.

        A replica's pool connects on its first use (:meth:`optional_checks`, then reads), so a
        replica that is down does not stop the start.

        Raises:
            StoreUnavailable: MariaDB cannot be reached, refuses the credentials, or the TLS
                handshake fails (the message says why and names the key to change).
            DatabaseObjectMissing: the configured database does not exist.
        """
        if self._pool is not None:
            return
        costs = await self._secondary_key_costs()
        if costs is not None:
            self.settings = attrs.evolve(self.settings, secondary_key_costs=costs)
        settings = self.settings
        pool = asyncmy.Pool(settings.pool_min, settings.pool_max, **settings.connect_kwargs())
        try:
            with connecting(settings, url_key=settings.url_key):
                async with pool.acquire() as conn, conn.cursor() as cursor:
                    await cursor.execute("SELECT 1")
        except BaseException:
            pool.close()
            await pool.wait_closed()
            raise
        self._pool = pool
        for replica in self.replicas.replicas:
            secondary = replica.settings
            replica.pool = asyncmy.Pool(
                secondary.pool_min, secondary.pool_max, **secondary.connect_kwargs()
            )

    async def _secondary_key_costs(self) -> str | None:
        """The server's ``optimizer_adjust_secondary_key_costs`` with ``disable_max_seek``.

        Asked on one connection before the pool opens, so the pool's sessions start with it.
        MariaDB 10.11 reads a keyset page in the first part of an index by walking the index
        from its start (``ref`` on the leading column: 5,052 rows read for a page of 51 after
        5,000 of 20,000 notes) unless ``disable_max_seek`` is on; with it, every page is a range
        of its own rows. ``None``: the server lacks the variable (MySQL, older MariaDB) or has
        the flag already, and sessions stay as they are.

        Raises:
            StoreUnavailable, DatabaseObjectMissing: as :meth:`start` says.
        """
        settings = self.settings
        with connecting(settings, url_key=settings.url_key):
            conn = await asyncmy.connect(**settings.connect_kwargs())
        try:
            async with conn.cursor() as cursor:
                await cursor.execute("SELECT @@optimizer_adjust_secondary_key_costs")
                row = await cursor.fetchone()
        except asyncmy.errors.MySQLError:
            return None
        finally:
            conn.close()
        flags = [f for f in str(row[0] if row else "").split(",") if f]
        if "disable_max_seek" in flags or not all(_FLAG.fullmatch(f) for f in flags):
            return None
        return ",".join([*flags, "disable_max_seek"])

    async def optional_checks(self) -> list[tuple[str, str | None]]:
        """IPL's optional checks: each secondary answers (name, ``None``) or why not.

        Through the replica's pool: one that does not answer is marked down, so the first reads
        do not try it (:mod:`beds_rel.replicas`).
        """
        results: list[tuple[str, str | None]] = []
        for replica in self.replicas.replicas:
            name = f"store rel secondary {replica.name}"
            try:
                with connecting(replica.settings, url_key=replica.settings.url_key):
                    async with self._connection(replica) as conn, conn.cursor() as cursor:
                        await cursor.execute("SELECT 1")
            except RequestError as exc:
                self.replicas.failed(replica, exc)
                results.append((name, str(exc)))
            else:
                self.replicas.answered(replica)
                results.append((name, None))
        return results

    @contextlib.asynccontextmanager
    async def _connection(self, replica: Replica | None = None) -> AsyncIterator[Connection]:
        """A connection from the primary's pool, or from ``replica``'s."""
        pool = self._pool if replica is None else replica.pool
        if pool is None:
            raise StoreUnavailable("the REL adapter is not started")
        # asyncmy's connect_timeout covers the TCP connect only, not the server's greeting, and
        # the pool connects under its lock: bound the whole acquisition, or a hung server holds
        # every call until its deadline instead of failing fast (and being retried).
        acquiring = pool.acquire()
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                conn = await acquiring.__aenter__()
        except TimeoutError:
            raise StoreUnavailable(
                "no MariaDB connection within connect_timeout",
                details=(f"connect_timeout: {self.settings.connect_timeout:g} s",),
            ) from None
        try:
            yield conn
        except BaseException as exc:
            # A cancelled or broken exchange leaves unread packets: never reuse it.
            if not is_clean(exc):
                conn.close()
            await acquiring.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        await acquiring.__aexit__(None, None, None)

    async def _rows(
        self,
        call: Call,
        args: Sequence[Any],
        sql: str | None = None,
        *,
        consistency: Consistency = Consistency.PRIMARY,
    ) -> list[Row]:
        """Run a statement on a pooled connection and return its first result set.

        Without ``sql``, run ``call`` itself (:func:`run_call`: its OUT values and result sets).
        Consistency ``secondary`` runs it on a replica that answers, else on the primary
        (:meth:`ReplicaSet.read <beds_rel.replicas.ReplicaSet.read>`); any other on the primary.
        """
        if consistency is Consistency.SECONDARY:
            return await self.replicas.read(partial(self._rows_on, call, args, sql))
        return await self._rows_on(call, args, sql, None)

    async def _rows_on(
        self, call: Call, args: Sequence[Any], sql: str | None, replica: Replica | None
    ) -> list[Row]:
        """:meth:`_rows` on ``replica``'s pool (``None``: the primary's)."""
        with map_exceptions(objects=(call.name,)):
            async with self._connection(replica) as conn:
                if sql is None:
                    return await run_call(conn, call, args)
                return await execute(conn, sql, args)

    async def _write(
        self,
        template: Template,
        operation: Operation,
        args: Sequence[Any],
        key: Mapping[str, Any],
        ctx: CallContext,
        result_of: Callable[[list[Row]], Record],
    ) -> Record:
        """Run a write procedure, with what must commit with it in one transaction.

        That is the idempotency key when the request has one, and the journal entry when the
        template keeps a journal; a plain write is one autocommitted call.
        """
        plan = self._plan(template)
        call = plan.writes[operation]
        keyed = ctx.idempotency_key is not None and self.idempotent_writes
        journaled = ctx.journal and template.capabilities.journal
        try:
            if not keyed and not journaled:
                return result_of(await self._rows(call, args))
            objects = journal.write_objects(plan, call, keyed=keyed, journaled=journaled)
            with map_exceptions(objects=objects):
                async with self._connection() as conn:
                    body = (
                        partial(
                            journal.journaled_write,
                            conn,
                            template,
                            plan,
                            operation,
                            args,
                            key,
                            ctx,
                            result_of,
                        )
                        if journaled
                        else CallWrite(conn, call, args, result_of)
                    )
                    if keyed:
                        return await write_once(conn, run_call, ctx, body)
                    return await in_transaction(conn, body)
        except StaleVersion as exc:
            raise await self._stale(template, plan, key) from exc

    async def _stale(
        self, template: Template, plan: TemplatePlan, key: Mapping[str, Any]
    ) -> RequestError:
        """The error for a write refused at a stale version, naming the current one."""
        if plan.key_query is None:  # a procedure of a template without locking signalled it
            return StaleVersion("the record changed since it was read")
        with map_exceptions():
            async with self._connection() as conn:
                row = await read_by_key(conn, template, plan, key)
        if row is None:  # deleted since the write was refused
            return NotFound(f"no {template.name} record has that key")
        version = row.get(template.capabilities.version_field)
        return StaleVersion(
            "the record changed since it was read", details=(f"current_version: {version}",)
        )

    async def purge_idempotency_keys(self, limit: int = 10_000) -> int:
        """Delete up to ``limit`` expired idempotency keys; return how many went.

        Expired keys are already ignored; this only reclaims their space. Run it from a
        scheduler (or ``beds`` maintenance tooling) as often as keys pile up.
        """
        rows = await self._rows(PURGE, (limit,))
        return int(rows[0]["purged"]) if rows else 0

    async def verify(self, template: Template) -> None:
        """Check that every procedure, view and function the template names exists and fits.

        Raises:
            DatabaseObjectMissing: ``details`` names each missing object; a routine with another
                number of parameters reads ``name (takes N parameters; the template passes M)``
                and a view without a declared field reads ``view.field``.
        """
        plan = self._plan(template)
        calls = plan.calls()
        if plan.writes and self.idempotent_writes:
            calls.extend(IDEMPOTENCY_CALLS)
        if template.capabilities.journal:
            calls.extend(journal.CALLS)
        calls.extend(self.long_operation_calls(template))
        with map_exceptions():
            async with self._connection() as conn:
                missing = await missing_objects(conn, calls)
        if missing:
            raise DatabaseObjectMissing(
                f"template {template.name!r} uses database objects that are missing or differ",
                details=missing,
            )

    async def create(self, template: Template, record: Record, ctx: CallContext) -> Record:
        """Call the create procedure and return its ``returns`` fields from the first row."""
        call = self._plan(template).writes[Operation.CREATE]
        args = [record.get(p) for p in call.params]
        created = self._result_of(template, Operation.CREATE, call, record)
        return await self._write(template, Operation.CREATE, args, record, ctx, created)

    def _result_of(
        self, template: Template, operation: Operation, call: Call, record: Record
    ) -> Callable[[list[Row]], Record]:
        """How a write of ``record`` reads its outcome from its procedure's rows."""
        if operation is Operation.CREATE:
            return partial(self._created, template, call)
        if operation is Operation.UPDATE:
            return partial(self._updated, template, call, record)
        return partial(self._deleted, template, call, record)

    def _created(self, template: Template, call: Call, rows: list[Row]) -> Record:
        """A create's result: the ``returns`` fields of its procedure's first row."""
        if not rows:
            raise StoreError(
                "the create procedure returned no row", details=(f"procedure {call.name}",)
            )
        return self._returns(template, Operation.CREATE, call, rows[0])

    async def update(self, template: Template, record: Record, ctx: CallContext) -> Record:
        """Call the update procedure; an empty result set means no record has the key."""
        call = self._plan(template).writes[Operation.UPDATE]
        args = [record.get(p) for p in call.params]
        updated = self._result_of(template, Operation.UPDATE, call, record)
        return await self._write(template, Operation.UPDATE, args, record, ctx, updated)

    def _updated(self, template: Template, call: Call, record: Record, rows: list[Row]) -> Record:
        """An update's result from its procedure's rows (none: ``NotFound``)."""
        if not rows:
            raise NotFound(f"no {template.name} record has that key")
        if not template.operations[Operation.UPDATE].returns:
            return to_wire_record({k: record[k] for k in template.key})
        return self._returns(template, Operation.UPDATE, call, rows[0])

    async def delete(self, template: Template, key: Record, ctx: CallContext) -> Record:
        """Call the delete procedure; it reports the rows removed in a ``deleted`` column."""
        call = self._plan(template).writes[Operation.DELETE]
        args = [key.get(p) for p in call.params]
        deleted = self._result_of(template, Operation.DELETE, call, key)
        return await self._write(template, Operation.DELETE, args, key, ctx, deleted)

    def _deleted(self, template: Template, call: Call, key: Record, rows: list[Row]) -> Record:
        """A delete's result from its procedure's ``deleted`` count (0: ``NotFound``)."""
        count = rows[0].get("deleted") if rows else None
        if isinstance(count, bool) or not isinstance(count, int):
            raise StoreError(
                "the delete procedure must return one row with an integer 'deleted' column",
                details=(f"procedure {call.name}",),
            )
        if count == 0:
            raise NotFound(f"no {template.name} record has that key")
        return {"deleted": count}

    def _returns(self, template: Template, operation: Operation, call: Call, row: Row) -> Record:
        return self._returns_many(template, operation, call, [row])[0]

    def _returns_many(
        self, template: Template, operation: Operation, call: Call, rows: Sequence[Row]
    ) -> list[Record]:
        """The declared fields of each row, typed, in wire form.

        The rows are one result set's, so the first row's columns are every row's.
        """
        wanted = template.operations[operation].returns
        absent = [name for name in wanted if rows and name not in rows[0]]
        if absent:
            raise StoreError(
                f"the {operation.value} procedure's result lacks declared fields",
                details=[
                    f"procedure {call.name}: no column or out parameter {name!r}" for name in absent
                ],
            )
        return [
            to_wire_record(typed(template, {name: row[name] for name in wanted})) for row in rows
        ]

    async def fetch(self, template: Template, query: Query, ctx: CallContext) -> list[Record]:
        """Run a declared query and return at most ``query.limit`` records."""
        call = self._plan(template).queries[query.spec.name]
        args: list[Any] = [query.params[p] for p in call.params]
        if call.kind == "function":
            rows = await self._rows(call, args, consistency=query.consistency)
            column = call.column or ""
            value = typed(template, {column: rows[0].get(column)})[column] if rows else None
            return [{column: to_wire(value)}]
        if call.select is not None:
            sql, bound = call.select.statement(query.params, query.after, query.limit)
            rows = await self._rows(call, bound, sql, consistency=query.consistency)
        else:
            rows = await self._rows(call, [*args, query.limit], consistency=query.consistency)
        if call.one_record:  # result sets and OUT values, by name
            return [to_wire_record(typed_record(template, call, rows[0], query.limit))]
        return [to_wire_record(typed(template, row)) for row in rows[: query.limit]]

    async def read_journal(
        self, template: Template, key: Record, *, limit: int, after: tuple[Any, ...] | None
    ) -> list[Record]:
        """The journal entries of the record with ``key``, oldest first (``JournalStore``)."""
        sql, args = journal.read_args(template.name, key, limit, after)
        rows = await self._rows(journal.READ, args, sql)
        return [journal.entry_of(row) for row in rows]

    async def apply_schema(self, files: Sequence[SchemaFile]) -> list[str]:
        """Create the database if needed and run each DBA file in order (development only).

        Returns:
            The names of the files applied.
        """
        own = [idempotency_schema()] if self.settings.idempotency else []
        own.append(journal.schema_file())
        own.append(tickets_schema())
        own.append(migrations_schema())  # the record of migrations (beds_rel.migrations)
        with connecting(self.settings):
            return await apply_schema_files(self.settings, [*own, *files])

    async def aclose(self) -> None:
        """Close the pools, the primary's and the replicas', after in-flight calls return.

        Safe to call twice.
        """
        pools = [self._pool]
        self._pool = None
        for replica in self.replicas.replicas:
            pools.append(replica.pool)
            replica.pool = None
        for pool in pools:
            if pool is not None:
                pool.close()
        for pool in pools:
            if pool is not None:
                await pool.wait_closed()

    def __repr__(self) -> str:
        settings = self.settings
        return f"RelAdapter({settings.user}@{settings.host}:{settings.port}/{settings.database})"
