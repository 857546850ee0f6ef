"""Run one statement on a connection, and read records the way the template declares them.

Shared by the adapter's reads, its writes and their journal: every statement goes through
:func:`execute` (values bound, never formatted into the SQL), and every record read back
through :func:`typed` and :func:`beds.values.to_wire_record`.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from asyncmy.cursors import DictCursor

from beds.templates.model import FieldType
from beds.values import to_wire_record
from beds_rel.errors import is_clean

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from asyncmy.connection import Connection

    from beds.namaste import Record
    from beds.templates.model import Template
    from beds_rel.bindings import Call, TemplatePlan
    from beds_rel.idempotency import RunCall

__all__ = ("Row", "db_value", "execute", "in_transaction", "read_by_key", "run_call", "typed")

Row = dict[str, Any]


def db_value(value: Any) -> Any:
    """Return a value as the driver should bind it: aware date-times become naive UTC."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


async def execute(conn: Connection, sql: str, args: Sequence[Any]) -> list[Row]:
    """Run one statement on ``conn`` and return its first result set, draining any others."""
    # No ``async with`` on the cursor: its exit drains pending results, which would hold a
    # cancelled call until the server finishes; the adapter drops the connection instead.
    cursor = conn.cursor(DictCursor)
    await cursor.execute(sql, tuple(db_value(arg) for arg in args))
    rows: list[Row] = list(await cursor.fetchall()) if cursor.description else []
    while await cursor.nextset():
        pass
    await cursor.close()
    return rows


async def run_call(conn: Connection, call: Call, args: Sequence[Any]) -> list[Row]:
    """Run a call's fixed statement (a procedure or function) with ``args``."""
    return await execute(conn, call.sql, args)


def typed(template: Template, row: Row) -> Row:
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


async def read_by_key(
    conn: Connection,
    template: Template,
    plan: TemplatePlan,
    key: Mapping[str, Any],
    *,
    lock: bool = False,
) -> Record | None:
    """The record with ``key``, read through the template's key query (``None``: no record).

    With ``lock``, inside a transaction, the read takes the latest committed row and holds it
    until the end (``FOR UPDATE``), so the write that follows changes exactly what was read.
    Only a view can be read so; a procedure's read is plain.
    """
    name = plan.key_query
    if name is None:  # prepare() refused locking and journals without one
        raise AssertionError(f"template {template.name!r} has no key query")
    call = plan.queries[name]
    if call.select is not None:
        sql, args = call.select.statement(key, None, 1)
        rows = await execute(conn, sql + (" FOR UPDATE" if lock else ""), args)
    else:
        rows = await run_call(conn, call, [*(key[p] for p in call.params), 1])
    return to_wire_record(typed(template, rows[0])) if rows else None


async def in_transaction(conn: Connection, body: Callable[[RunCall], Awaitable[Record]]) -> Record:
    """Run ``body`` (given :func:`run_call`) in one transaction on ``conn`` and commit.

    What it raises rolls the transaction back.
    """
    await conn.begin()
    try:
        result = await body(run_call)
        await conn.commit()
    except BaseException as exc:
        if is_clean(exc):  # else the connection is dropped, which rolls back
            await conn.rollback()
        raise
    return result
