"""``RelAdapter``: NamasteCore for MariaDB/MySQL through an asyncmy connection pool.

The adapter only calls the DBA's named objects (see :mod:`beds_rel.bindings` for the SQL) and
reads results by these conventions, which the DBA's routines follow:

* create: the procedure's first result set holds the new row; ``returns`` fields are read from it.
* update: the procedure returns the row (its ``returns`` fields) or an empty result set when no
  row has the key (``NotFound``). Absent optional params are passed as ``NULL``: keep the value.
* delete: the procedure returns one row with a ``deleted`` column (``ROW_COUNT()``); 0 is
  ``NotFound``.
* query procedures take the query's params and then the row limit (``p_limit``).

Sessions run with ``time_zone = '+00:00'`` and autocommit; every returned value goes through
:func:`beds.values.to_wire_record`. A write with an idempotency key runs in one transaction with
its key (:mod:`beds_rel.idempotency`), so write procedures must not ``COMMIT`` themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import TYPE_CHECKING, Any

import asyncmy
from asyncmy.cursors import DictCursor

from beds.envelopes import Operation
from beds.errors import (
    DatabaseObjectMissing,
    NotFound,
    RequestError,
    StoreError,
    StoreUnavailable,
)
from beds.templates.model import FieldType
from beds.values import to_wire, to_wire_record
from beds_rel.bindings import Call, TemplatePlan, plan_template
from beds_rel.errors import connecting, is_clean, map_exceptions
from beds_rel.idempotency import CALLS as IDEMPOTENCY_CALLS
from beds_rel.idempotency import PURGE, schema_file, write_once
from beds_rel.schema import apply_schema_files
from beds_rel.settings import RelSettings, parse_settings
from beds_rel.verify import missing_objects

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from asyncmy.connection import Connection

    from beds.namaste import CallContext, Query, Record, SchemaFile, StoreSettings
    from beds.templates.model import Template

__all__ = ("RelAdapter",)

Row = dict[str, Any]


def _db_value(value: Any) -> Any:
    """Return a value as the driver should bind it: aware date-times become naive UTC."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


class RelAdapter:
    """The REL store: MariaDB/MySQL stored procedures, views and functions by name."""

    store = "rel"
    features: frozenset[str] = frozenset()
    """No template features beyond CRUD yet (:data:`beds.namaste.FEATURES`): templates that
    need one are refused when the node starts."""

    def __init__(self, settings: RelSettings) -> None:
        self.settings = settings
        self.idempotent_writes = settings.idempotency
        """Whether writes honour idempotency keys (``[stores.rel] idempotency``)."""
        self._pool: asyncmy.Pool | None = None
        self._plans: dict[str, TemplatePlan] = {}

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
        self._plans[template.name] = plan_template(template)

    def _plan(self, template: Template) -> TemplatePlan:
        plan = self._plans.get(template.name)
        if plan is None:
            self.prepare(template)
            plan = self._plans[template.name]
        return plan

    async def start(self) -> None:
        """Open the pool and check that the database answers.

        Raises:
            StoreUnavailable: MariaDB cannot be reached, refuses the credentials, or the TLS
                handshake fails (the message says why and names the key to change).
            DatabaseObjectMissing: the configured database does not exist.
        """
        if self._pool is not None:
            return
        settings = self.settings
        pool = asyncmy.Pool(settings.pool_min, settings.pool_max, **settings.connect_kwargs())
        try:
            with connecting(settings):
                async with pool.acquire() as conn, conn.cursor() as cursor:
                    await cursor.execute("SELECT 1")
        except BaseException:
            pool.close()
            await pool.wait_closed()
            raise
        self._pool = pool

    async def optional_checks(self) -> list[tuple[str, str | None]]:
        """IPL's optional checks: each secondary answers (name, ``None``) or why not."""
        results: list[tuple[str, str | None]] = []
        for index, secondary in enumerate(self.settings.secondaries):
            name = f"store rel secondary {secondary.host}:{secondary.port}"
            try:
                with connecting(secondary, url_key=f"stores.rel.secondaries[{index}]"):
                    async with asyncio.timeout(secondary.connect_timeout):
                        conn = await asyncmy.connect(**secondary.connect_kwargs())
                    try:
                        async with conn.cursor() as cursor:
                            await cursor.execute("SELECT 1")
                    finally:
                        conn.close()
            except TimeoutError:
                results.append((name, "no answer within connect_timeout"))
            except RequestError as exc:
                results.append((name, str(exc)))
            else:
                results.append((name, None))
        return results

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        pool = self._pool
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

    async def _rows(self, call: Call, args: Sequence[Any]) -> list[Row]:
        """Run a statement on a pooled connection and return its first result set."""
        with map_exceptions(objects=(call.name,)):
            async with self._connection() as conn:
                return await _run(conn, call, args)

    async def _write(
        self,
        call: Call,
        args: Sequence[Any],
        ctx: CallContext,
        result_of: Callable[[list[Row]], Record],
    ) -> Record:
        """Run a write procedure: at most once per idempotency key when the request has one."""
        if ctx.idempotency_key is None or not self.idempotent_writes:
            return result_of(await self._rows(call, args))
        with map_exceptions(objects=(call.name, *(c.name for c in IDEMPOTENCY_CALLS))):
            async with self._connection() as conn:
                return await write_once(conn, _run, call, args, ctx, result_of)

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

        def created(rows: list[Row]) -> Record:
            if not rows:
                raise StoreError(
                    "the create procedure returned no row", details=(f"procedure {call.name}",)
                )
            return self._returns(template, Operation.CREATE, call, rows[0])

        return await self._write(call, [record.get(p) for p in call.params], ctx, created)

    async def update(self, template: Template, record: Record, ctx: CallContext) -> Record:
        """Call the update procedure; an empty result set means no record has the key."""
        call = self._plan(template).writes[Operation.UPDATE]

        def updated(rows: list[Row]) -> Record:
            if not rows:
                raise NotFound(f"no {template.name} record has that key")
            if not template.operations[Operation.UPDATE].returns:
                return to_wire_record({k: record[k] for k in template.key})
            return self._returns(template, Operation.UPDATE, call, rows[0])

        return await self._write(call, [record.get(p) for p in call.params], ctx, updated)

    async def delete(self, template: Template, key: Record, ctx: CallContext) -> Record:
        """Call the delete procedure; it reports the rows removed in a ``deleted`` column."""
        call = self._plan(template).writes[Operation.DELETE]

        def deleted(rows: list[Row]) -> Record:
            count = rows[0].get("deleted") if rows else None
            if isinstance(count, bool) or not isinstance(count, int):
                raise StoreError(
                    "the delete procedure must return one row with an integer 'deleted' column",
                    details=(f"procedure {call.name}",),
                )
            if count == 0:
                raise NotFound(f"no {template.name} record has that key")
            return {"deleted": count}

        return await self._write(call, [key.get(p) for p in call.params], ctx, deleted)

    def _returns(self, template: Template, operation: Operation, call: Call, row: Row) -> Record:
        wanted = template.operations[operation].returns
        absent = [name for name in wanted if name not in row]
        if absent:
            raise StoreError(
                f"the {operation.value} procedure's result lacks declared fields",
                details=[f"procedure {call.name}: no column {name!r}" for name in absent],
            )
        return to_wire_record(_typed(template, {name: row[name] for name in wanted}))

    async def fetch(self, template: Template, query: Query, ctx: CallContext) -> list[Record]:
        """Run a declared query and return at most ``query.limit`` records."""
        call = self._plan(template).queries[query.spec.name]
        args: list[Any] = [query.params[p] for p in call.params]
        if call.kind == "function":
            rows = await self._rows(call, args)
            column = call.column or ""
            value = _typed(template, {column: rows[0].get(column)})[column] if rows else None
            return [{column: to_wire(value)}]
        rows = await self._rows(call, [*args, query.limit])
        return [to_wire_record(_typed(template, row)) for row in rows[: query.limit]]

    async def apply_schema(self, files: Sequence[SchemaFile]) -> list[str]:
        """Create the database if needed and run each DBA file in order (development only).

        Returns:
            The names of the files applied.
        """
        own = [schema_file()] if self.settings.idempotency else []
        with connecting(self.settings):
            return await apply_schema_files(self.settings, [*own, *files])

    async def aclose(self) -> None:
        """Close the pool after in-flight calls return; safe to call twice."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
            await pool.wait_closed()

    def __repr__(self) -> str:
        settings = self.settings
        return f"RelAdapter({settings.user}@{settings.host}:{settings.port}/{settings.database})"


async def _run(conn: Connection, call: Call, args: Sequence[Any]) -> list[Row]:
    """Run one statement on ``conn`` and return its first result set, draining any others."""
    # No ``async with`` on the cursor: its exit drains pending results, which would hold a
    # cancelled call until the server finishes; the adapter drops the connection instead.
    cursor = conn.cursor(DictCursor)
    await cursor.execute(call.sql, tuple(_db_value(arg) for arg in args))
    rows: list[Row] = list(await cursor.fetchall()) if cursor.description else []
    while await cursor.nextset():
        pass
    await cursor.close()
    return rows


def _typed(template: Template, row: Row) -> Row:
    """The row with its declared boolean fields as booleans.

    MariaDB has no boolean type: ``BOOLEAN`` is ``TINYINT(1)`` and comes back as 0 or 1. A column
    named like a field the template declares ``bool`` is answered ``true``/``false``, in every
    domain; other columns are left as the database returned them.
    """
    fields = template.fields
    for name, value in row.items():
        spec = fields.get(name)
        if spec is not None and spec.type is FieldType.BOOL and type(value) is int:
            row[name] = bool(value)
    return row
