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

All or nothing (``[batch] atomic = true``): nothing commits unless every record succeeded.

- The fast paths run in a transaction: a ``create_many``'s batch procedure call between
  ``START TRANSACTION`` and ``COMMIT``; an ``update_many`` / ``delete_many`` packet whose outcomes
  are read before the commit (a record without a row is that record's failure: rolled back).
- When the fast path refuses, or for a journaled template, every record's own procedure runs in
  ONE transaction (:func:`_atomic`), one call after another: a refused call undoes only its own
  statement (MariaDB's statement rollback), the calls after it still run, so the answer names
  every failing record; then the transaction is rolled back. A procedure that wrote before it
  signalled leaves that write in the transaction for the calls after it to see, until the
  rollback; so the answer may name a record that would have succeeded alone.
- Under an idempotency key, the key's claim opens that transaction and its completion commits
  it: a batch that fails releases its key, as a refused single write does.
- A deadlock (which ends the whole transaction) or a lost connection fails the batch as a
  whole, and the node tries it again.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import orjson

from beds.envelopes import Operation
from beds.errors import IdempotencyKeyReused, NotFound, RequestError, StoreError, WriteInDoubt
from beds.idempotency import item_context
from beds.values import to_wire, to_wire_record
from beds_rel import journal
from beds_rel.errors import is_clean, map_exceptions
from beds_rel.idempotency import batch_once
from beds_rel.statements import execute, in_transaction, read_by_key, run_call, run_calls, typed

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
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

    def _result_of(
        self, template: Template, operation: Operation, call: Call, record: Record
    ) -> Callable[[list[Row]], Record]: ...

    async def create(self, template: Template, record: Record, ctx: CallContext) -> Record: ...

    async def update(self, template: Template, record: Record, ctx: CallContext) -> Record: ...

    async def delete(self, template: Template, key: Record, ctx: CallContext) -> Record: ...


class _Refused(RequestError):
    """An all-or-nothing batch has failing records: raised to roll its transaction back."""

    def __init__(self, outcomes: list[Record | RequestError]) -> None:
        super().__init__("a record of an all-or-nothing batch failed")
        self.outcomes = outcomes


def _refuse_if_any_failed(outcomes: list[Record | RequestError]) -> list[Record | RequestError]:
    if any(isinstance(outcome, RequestError) for outcome in outcomes):
        raise _Refused(outcomes)
    return outcomes


async def _one_by_one(
    adapter: _Adapter,
    template: Template,
    operation: Operation,
    records: Sequence[Record],
    ctx: CallContext,
) -> list[Record | RequestError]:
    """Each record its own write: in one transaction when all or nothing, else each alone."""
    if template.batch.atomic:
        return await _atomic(adapter, template, operation, records, ctx)
    write = {
        Operation.CREATE: adapter.create,
        Operation.UPDATE: adapter.update,
        Operation.DELETE: adapter.delete,
    }[operation]
    outcomes: list[Record | RequestError] = []
    for index, record in enumerate(records):
        try:  # keyed on its own under a batch key
            outcomes.append(await write(template, record, item_context(ctx, index)))
        except RequestError as exc:
            if exc.TRANSIENT:  # the store went away: the batch fails, the node retries it
                raise
            outcomes.append(exc)
    return outcomes


async def _atomic(
    adapter: _Adapter,
    template: Template,
    operation: Operation,
    records: Sequence[Record],
    ctx: CallContext,
) -> list[Record | RequestError]:
    """Every record's own call in ONE transaction, committed only if all succeeded (docstring)."""
    plan = adapter._plan(template)
    call = plan.writes[operation]
    keyed = ctx.idempotency_key is not None and adapter.idempotent_writes
    journaled = ctx.journal and template.capabilities.journal
    objects = journal.write_objects(plan, call, keyed=keyed, journaled=journaled)

    async def body(conn: Connection, run: RunCall) -> list[Record | RequestError]:
        outcomes: list[Record | RequestError] = []
        for index, record in enumerate(records):
            args = [record.get(p) for p in call.params]
            result_of = adapter._result_of(template, operation, call, record)
            try:
                with map_exceptions(objects=objects):
                    if journaled:  # each entry its own event id, as a store's own batch gives
                        mine = attrs.evolve(ctx, event_id=f"{ctx.event_id}/{index}")
                        outcomes.append(
                            await journal.journaled_write(
                                conn, template, plan, operation, args, record, mine, result_of, run
                            )
                        )
                    else:
                        outcomes.append(result_of(await run(conn, call, args)))
            except RequestError as exc:
                if exc.TRANSIENT:  # a deadlock ended the transaction, or the store went away
                    raise
                outcomes.append(exc)
        return _refuse_if_any_failed(outcomes)

    try:
        with map_exceptions(objects=objects):
            async with adapter._connection() as conn:
                if keyed:
                    return await batch_once(conn, run_call, ctx, partial(body, conn))
                return await in_transaction(conn, partial(body, conn))
    except _Refused as refused:  # rolled back (keyed: the key released with it)
        return refused.outcomes


async def _many(
    adapter: _Adapter,
    template: Template,
    operation: Operation,
    records: Sequence[Record],
    ctx: CallContext,
) -> list[Record | RequestError]:
    """``update_many`` / ``delete_many``: one packet in one transaction (module docstring)."""
    result_of: Callable[[Template, Call, Record, list[Row]], Record] = adapter._deleted
    if operation is Operation.UPDATE:
        result_of = adapter._updated
    plan = adapter._plan(template)
    call = plan.writes[operation]
    if not records or ctx.journal or call.read is not None or call.assign is not None:
        return await _one_by_one(adapter, template, operation, records, ctx)
    calls = [(call, [record.get(p) for p in call.params]) for record in records]
    atomic = template.batch.atomic

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
        return _refuse_if_any_failed(done) if atomic else done

    async def body(conn: Connection) -> list[Record | RequestError]:
        return outcomes(await run_calls(conn, calls), committed=False)

    keyed = ctx.idempotency_key is not None and adapter.idempotent_writes
    objects = journal.write_objects(plan, call, keyed=keyed, journaled=False)
    try:
        with map_exceptions(objects=objects):
            async with adapter._connection() as conn:
                if keyed:
                    return await batch_once(conn, run_call, ctx, lambda _run: body(conn))
                if atomic:  # the outcomes are read before the commit
                    return await in_transaction(conn, lambda _run: body(conn))
                try:
                    sets = await run_calls(conn, calls, lead="START TRANSACTION", tail="COMMIT")
                except BaseException as exc:
                    if is_clean(exc):  # else the connection is dropped, which rolls back
                        await conn.rollback()
                    raise
                return outcomes(sets, committed=True)
    except (IdempotencyKeyReused, WriteInDoubt):
        raise  # the key's answer, not the data's
    except _Refused as refused:  # all or nothing: a record without a row, rolled back
        return refused.outcomes
    except RequestError as exc:
        if exc.TRANSIENT:  # the store went away: the batch fails, the node retries it
            raise
    # A call failed and the batch rolled back: each record on its own, as alone.
    return await _one_by_one(adapter, template, operation, records, ctx)


class BatchMixin:
    """``create_many``, ``update_many``, ``delete_many`` and ``fetch_many`` for the REL adapter."""

    async def create_many(
        self: _Adapter, template: Template, records: Sequence[Record], ctx: CallContext
    ) -> list[Record | RequestError]:
        """Create the records: one batch procedure call, or one create each (module docstring)."""
        plan = self._plan(template)
        call = plan.create_many
        if call is None or ctx.journal:
            return await _one_by_one(self, template, Operation.CREATE, records, ctx)
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
        objects = journal.write_objects(plan, call, keyed=keyed, journaled=False)
        try:
            with map_exceptions(objects=objects):
                async with self._connection() as conn:
                    if keyed:
                        return await batch_once(conn, run_call, ctx, lambda run: body(run, conn))
                    if template.batch.atomic:  # a procedure of many statements: all or none
                        return await in_transaction(conn, lambda run: body(run, conn))
                    return await body(run_call, conn)
        except (IdempotencyKeyReused, WriteInDoubt):
            raise  # the key's answer, not the data's
        except RequestError as exc:
            if exc.TRANSIENT or exc.STATUS >= 500:  # not the data's fault: the batch fails
                raise
        # Some record was refused (the whole call rolled back): find which, one by one.
        return await _one_by_one(self, template, Operation.CREATE, records, ctx)

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
