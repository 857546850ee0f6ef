"""Batches on MariaDB (feature ``batch``): a create_many in one call, a fetch_many in one SELECT.

- ``create_many``: with the create's ``batch_procedure``
  (:data:`beds_rel.bindings.BATCH_PROCEDURE`), ONE ``CALL p(json_array)`` for the whole batch;
  under an idempotency key the claim, the call and the complete (the per-item outcomes) commit
  in one transaction (:func:`beds_rel.idempotency.batch_once`). When the procedure refuses the
  batch because of its data (a ``SIGNAL``, a duplicate: the call rolled back), or the template
  has no batch procedure or keeps a journal, each record is created on its own, as the node's
  fallback does: keyed per item (:func:`beds.idempotency.item_key`), so a good record is
  written and a refused one gets the error a single create would answer.
- ``update_many`` / ``delete_many``: every record's call in ONE packet (:func:`run_calls
  <beds_rel.statements.run_calls>`) and one transaction, each record its own outcome (an empty
  update or a delete of 0 rows is that record's ``NotFound``, as alone). Unkeyed, the packet
  opens and commits the transaction itself (one round trip); keyed, the batch key is claimed
  and completed around it, the per-item outcomes its result, as a create_many's (three).
  When a call fails (a ``SIGNAL``, ``StaleVersion``, a duplicate…) MariaDB stops the packet
  and the batch is rolled back, then written record by record, keyed per item, as the node's
  fallback does; so are journaled templates and procedures with OUT or INOUT values.
- ``fetch_many``: a view key query on a one-field key reads every key in one ``SELECT … WHERE
  key IN (…)`` on the primary (always correct, whatever the consistency asked); another key
  query reads key by key on one connection.

All-or-nothing batches (``[batch] atomic``) need one transaction around every item: not built
for REL yet, so :meth:`~beds_rel.adapter.RelAdapter.prepare` refuses such templates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import orjson

from beds.envelopes import Operation
from beds.errors import IdempotencyKeyReused, NotFound, RequestError, StoreError, WriteInDoubt
from beds.idempotency import item_context
from beds.values import to_wire, to_wire_record
from beds_rel.errors import is_clean, map_exceptions
from beds_rel.idempotency import CALLS as IDEMPOTENCY_CALLS
from beds_rel.idempotency import batch_once
from beds_rel.statements import execute, read_by_key, run_call, run_calls, typed

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from contextlib import AbstractAsyncContextManager

    from asyncmy.connection import Connection

    from beds.namaste import CallContext, Record
    from beds.templates.model import Template
    from beds_rel.bindings import Call, TemplatePlan
    from beds_rel.idempotency import RunCall
    from beds_rel.statements import Row

__all__ = ("BatchMixin",)


class _Adapter(Protocol):
    """What the mixin uses of :class:`beds_rel.adapter.RelAdapter`."""

    idempotent_writes: bool

    def _plan(self, template: Template) -> TemplatePlan: ...

    def _connection(self) -> AbstractAsyncContextManager[Connection]: ...

    def _returns_many(
        self, template: Template, operation: Operation, call: Call, rows: Sequence[Row]
    ) -> list[Record]: ...

    def _updated(
        self, template: Template, call: Call, record: Record, rows: list[Row]
    ) -> Record: ...

    def _deleted(self, template: Template, call: Call, key: Record, rows: list[Row]) -> Record: ...

    async def create(self, template: Template, record: Record, ctx: CallContext) -> Record: ...

    async def update(self, template: Template, record: Record, ctx: CallContext) -> Record: ...

    async def delete(self, template: Template, key: Record, ctx: CallContext) -> Record: ...


async def _each(
    write: Callable[[Template, Record, CallContext], Awaitable[Record]],
    template: Template,
    records: Sequence[Record],
    ctx: CallContext,
) -> list[Record | RequestError]:
    """Each record its own write, keyed on its own under a batch key; each its own outcome."""
    outcomes: list[Record | RequestError] = []
    for index, record in enumerate(records):
        try:
            outcomes.append(await write(template, record, item_context(ctx, index)))
        except RequestError as exc:
            if exc.TRANSIENT:  # the store went away: the batch fails, the node retries it
                raise
            outcomes.append(exc)
    return outcomes


async def _many(
    adapter: _Adapter,
    template: Template,
    operation: Operation,
    records: Sequence[Record],
    ctx: CallContext,
) -> list[Record | RequestError]:
    """``update_many`` / ``delete_many``: one packet in one transaction (module docstring)."""
    single: Callable[[Template, Record, CallContext], Awaitable[Record]] = adapter.delete
    result_of: Callable[[Template, Call, Record, list[Row]], Record] = adapter._deleted
    if operation is Operation.UPDATE:
        single, result_of = adapter.update, adapter._updated
    call = adapter._plan(template).writes[operation]
    if not records or ctx.journal or call.read is not None or call.assign is not None:
        return await _each(single, template, records, ctx)
    calls = [(call, [record.get(p) for p in call.params]) for record in records]

    def outcomes(sets: list[list[Row]], *, committed: bool) -> list[Record | RequestError]:
        done: list[Record | RequestError] = []
        for record, rows in zip(records, sets, strict=True):
            try:
                done.append(result_of(template, call, record, rows))
            except NotFound as exc:  # the call changed nothing: that record's outcome
                done.append(exc)
            except RequestError as exc:
                if not committed:  # rolls the batch back: written one by one instead
                    raise
                done.append(exc)  # written, as a single unkeyed write would answer it
        return done

    async def body(conn: Connection) -> list[Record | RequestError]:
        return outcomes(await run_calls(conn, calls), committed=False)

    keyed = ctx.idempotency_key is not None and adapter.idempotent_writes
    objects = [call.name, *(c.name for c in IDEMPOTENCY_CALLS if keyed)]
    try:
        with map_exceptions(objects=objects):
            async with adapter._connection() as conn:
                if keyed:
                    return await batch_once(conn, run_call, ctx, lambda _run: body(conn))
                try:
                    sets = await run_calls(conn, calls, lead="START TRANSACTION", tail="COMMIT")
                except BaseException as exc:
                    if is_clean(exc):  # else the connection is dropped, which rolls back
                        await conn.rollback()
                    raise
                return outcomes(sets, committed=True)
    except (IdempotencyKeyReused, WriteInDoubt):
        raise  # the key's answer, not the data's
    except RequestError as exc:
        if exc.TRANSIENT:  # the store went away: the batch fails, the node retries it
            raise
    # A call failed and the batch rolled back: each record on its own, as alone.
    return await _each(single, template, records, ctx)


class BatchMixin:
    """``create_many``, ``update_many``, ``delete_many`` and ``fetch_many`` for the REL adapter."""

    async def create_many(
        self: _Adapter, template: Template, records: Sequence[Record], ctx: CallContext
    ) -> list[Record | RequestError]:
        """Create the records: one batch procedure call, or one create each (module docstring)."""
        plan = self._plan(template)
        call = plan.create_many
        if call is None or ctx.journal:
            return await _each(self.create, template, records, ctx)
        params = template.operations[Operation.CREATE].params
        array = orjson.dumps(
            [to_wire_record({name: record.get(name) for name in params}) for record in records]
        ).decode()
        single = plan.writes[Operation.CREATE]

        def outcomes(rows: list[Row]) -> list[Record | RequestError]:
            if len(rows) != len(records) or [row.get("ordinal") for row in rows] != list(
                range(len(records))
            ):
                raise StoreError(
                    f"the batch procedure answered {len(rows)} rows for {len(records)} records",
                    details=(
                        f"procedure {call.name}: one row per record, ordinal 0..n-1 in order",
                    ),
                )
            return [*self._returns_many(template, Operation.CREATE, single, rows)]

        async def body(run: RunCall, conn: Connection) -> list[Record | RequestError]:
            return outcomes(await run(conn, call, (array,)))

        keyed = ctx.idempotency_key is not None and self.idempotent_writes
        objects = [call.name, *(c.name for c in IDEMPOTENCY_CALLS if keyed)]
        try:
            with map_exceptions(objects=objects):
                async with self._connection() as conn:
                    if keyed:
                        return await batch_once(conn, run_call, ctx, lambda run: body(run, conn))
                    return await body(run_call, conn)
        except (IdempotencyKeyReused, WriteInDoubt):
            raise  # the key's answer, not the data's
        except RequestError as exc:
            if exc.TRANSIENT or exc.STATUS >= 500:  # not the data's fault: the batch fails
                raise
        # Some record was refused (the whole call rolled back): find which, one by one.
        return await _each(self.create, template, records, ctx)

    async def update_many(
        self: _Adapter, template: Template, records: Sequence[Record], ctx: CallContext
    ) -> list[Record | RequestError]:
        """Update the records in one packet, each its own outcome (module docstring)."""
        return await _many(self, template, Operation.UPDATE, records, ctx)

    async def delete_many(
        self: _Adapter, template: Template, keys: Sequence[Record], ctx: CallContext
    ) -> list[Record | RequestError]:
        """Delete the records in one packet, each its own outcome (module docstring)."""
        return await _many(self, template, Operation.DELETE, keys, ctx)

    async def fetch_many(
        self: _Adapter, template: Template, keys: Sequence[Record], ctx: CallContext
    ) -> list[Record | None]:
        """Each key's record through the key query (``None``: none has it), in key order."""
        plan = self._plan(template)
        if plan.key_query is None:  # the node answers BEDS-405 before asking
            raise StoreError(f"template {template.name!r} has no key query to read by")
        call = plan.queries[plan.key_query]
        # The primary always answers correctly; a replica is only allowed to (consistency).
        field = template.key[0] if len(template.key) == 1 else None
        many = call.select.keyed_in(field) if call.select is not None and field else None
        with map_exceptions(objects=(call.name,)):
            async with self._connection() as conn:
                if many is None or field is None:
                    return [await read_by_key(conn, template, plan, key) for key in keys]
                values = [key[field] for key in keys]
                rows = await execute(conn, *many.statement({field: values}, None, None))
        found: dict[Any, Record] = {}
        for row in rows:
            record = to_wire_record(typed(template, row))
            found[record.get(field)] = record
        return [found.get(to_wire(value)) for value in values]
