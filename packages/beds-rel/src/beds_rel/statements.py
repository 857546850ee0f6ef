"""Run one statement on a connection, and read records the way the template declares them.

Shared by the adapter's reads, its writes and their journal: every statement goes through
:func:`execute` (values bound as escaped literals, as asyncmy binds them, never formatted into
the SQL as text), every call of a declared object
through :func:`run_call` (which also reads OUT parameters and result sets), and every record
read back through :func:`typed` and :func:`beds.values.to_wire_record`.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, TypeVar

from asyncmy import errors as my_errors
from asyncmy.constants.SERVER_STATUS import SERVER_STATUS_NO_BACKSLASH_ESCAPES
from asyncmy.cursors import DictCursor

from beds.errors import StoreError
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

_T = TypeVar("_T")

__all__ = (
    "LeadSignalled",
    "Row",
    "db_value",
    "execute",
    "in_transaction",
    "read_by_key",
    "run_call",
    "run_calls",
    "typed",
    "typed_record",
)

Row = dict[str, Any]

_LONG = 256
"""Text at least this long is escaped by :func:`_long_literal`; shorter text by asyncmy."""


def _long_literal(text: str, no_backslash_escapes: int) -> str:
    """``text`` as the SQL literal asyncmy writes (``Connection.literal``), faster when long.

    asyncmy escapes with ``str.translate``, about 23 ns a character: 1.2 ms for the JSON
    argument of a 500-record batch, a tenth of the node's time on it. One ``str.replace`` per
    escaped character costs a sixth of that; for short text asyncmy's own check is quicker.
    """
    if no_backslash_escapes:
        return "'" + text.replace("'", "''") + "'"
    escaped = (
        text.replace("\\", "\\\\")
        .replace("\0", "\\0")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\x1a", "\\Z")
        .replace("'", "\\'")
        .replace('"', '\\"')
    )
    return "'" + escaped + "'"


def _statement(
    conn: Connection, sql: str, values: Sequence[Any]
) -> tuple[str, tuple[Any, ...] | None]:
    """``cursor.execute``'s arguments: with long text, ``sql`` bound here as asyncmy binds it."""
    values = tuple(values)
    if not any(type(value) is str and len(value) >= _LONG for value in values):
        return sql, values
    # asyncmy's stubs lack both; its own escape_string reads server_status the same way.
    plain = conn.server_status & SERVER_STATUS_NO_BACKSLASH_ESCAPES  # type: ignore[attr-defined]
    literal: Callable[[Any], str] = conn.literal
    literals = tuple(
        _long_literal(value, plain)
        if type(value) is str and len(value) >= _LONG
        else literal(value)
        for value in values
    )
    return sql % literals, None


def db_value(value: Any) -> Any:
    """Return a value as the driver should bind it: aware date-times become naive UTC."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


class LeadSignalled(Exception):
    """The lead of a packet (:attr:`Call.lead <beds_rel.bindings.Call.lead>`) SIGNALled.

    Nothing after it in the packet ran. ``sqlstate`` is the signal's; the driver's error is the
    ``__cause__``.
    """

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


_SIGNAL = 1644


async def _execute(
    conn: Connection,
    sql: str,
    args: Sequence[Any],
    *,
    every: bool,
    lead: tuple[str, Sequence[Any]] | None = None,
) -> list[list[Row]]:
    # No ``async with`` on the cursor: its exit drains pending results, which would hold a
    # cancelled call until the server finishes; the adapter drops the connection instead.
    cursor = conn.cursor(DictCursor)
    bound = tuple(db_value(arg) for arg in args)
    if lead is None:
        await cursor.execute(*_statement(conn, sql, bound))
    else:
        # One packet, two statements (asyncmy always connects with CLIENT_MULTI_STATEMENTS).
        # Both texts are fixed: the lead is beds' own call, ``sql`` a named object's statement
        # built at prepare time; every value is a %s that asyncmy escapes (``escape_args``) as
        # for one statement, so no request text becomes SQL.
        lead_sql, lead_args = lead
        try:
            await cursor.execute(*_statement(conn, f"{lead_sql}; {sql}", (*lead_args, *bound)))
        except my_errors.MySQLError as exc:
            # The packet's first result is the lead's: MariaDB stopped there, ``sql`` never ran.
            if exc.args and exc.args[0] == _SIGNAL:
                raise LeadSignalled(str(getattr(exc, "sqlstate", "") or "")) from exc
            raise
        await cursor.nextset()  # past the lead's status: ``sql``'s first result
    # A result without columns is a statement's status (a CALL ends with one), not a set.
    sets: list[list[Row]] = [list(await cursor.fetchall())] if cursor.description else []
    while await cursor.nextset():
        if every and cursor.description:
            sets.append(list(await cursor.fetchall()))
    await cursor.close()
    return sets


async def execute(
    conn: Connection,
    sql: str,
    args: Sequence[Any],
    lead: tuple[str, Sequence[Any]] | None = None,
) -> list[Row]:
    """Run one statement on ``conn`` and return its first result set, draining any others.

    With ``lead`` (a statement that returns no result set, and its arguments), that statement
    goes first in the same packet.

    Raises:
        LeadSignalled: the lead SIGNALled; ``sql`` did not run.
    """
    sets = await _execute(conn, sql, args, every=False, lead=lead)
    return sets[0] if sets else []


def _json_text(value: Any) -> Any:
    # Compact, and unescaped: the session's character set is utf8mb4.
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def run_call(conn: Connection, call: Call, args: Sequence[Any]) -> list[Row]:
    """Run a call's fixed statement (a procedure or function) with ``args``.

    ``json`` fields' values are bound as JSON text. A call without OUT or INOUT parameters or
    result sets answers its first result set. Otherwise the INOUT values are set first, and
    their values and the OUT values are read after the call on the same connection:

    * a query declaring them answers one row: each result set under its name (exactly as many
      as declared), each OUT and INOUT value under its name;
    * a write answers its first result set with those values added to its first row (they win
      over a column of the same name), or one row of just them when the procedure returned no
      result set; an empty result set stays empty (an update's ``NotFound``).

    A call with a :attr:`~beds_rel.bindings.Call.lead` sends it in the packet of its first
    statement; ``args`` start with the lead's.

    Raises:
        StoreError: a query procedure returned another number of result sets than declared.
        LeadSignalled: the lead SIGNALled; the call did not run.
    """
    lead: tuple[str, Sequence[Any]] | None = None
    if call.lead is not None:  # the lead's arguments come first; it rides with the first send
        lead, args = (call.lead, args[: call.lead_arity]), args[call.lead_arity :]
    values = [_json_text(v) if at in call.json_at else v for at, v in enumerate(args)]
    if call.read is None and not call.result_sets:
        return await execute(conn, call.sql, values, lead)
    if call.assign is not None:
        await execute(conn, call.assign, [values[at] for at in call.inout_at], lead)
        values = [v for at, v in enumerate(values) if at not in call.inout_at]
        lead = None
    sets = await _execute(conn, call.sql, values, every=call.one_record, lead=lead)
    variables = (await execute(conn, call.read, ()))[0] if call.read is not None else {}
    if call.one_record:
        if len(sets) != len(call.result_sets):
            raise StoreError(
                "the procedure's result sets differ from the template's declaration",
                details=(
                    f"procedure {call.name}: returned {len(sets)} result sets, the template "
                    f"declares {len(call.result_sets)} ({', '.join(call.result_sets) or 'none'})",
                ),
            )
        return [{**dict(zip(call.result_sets, sets, strict=True)), **variables}]
    if not sets:
        return [variables]
    first = sets[0]
    return [{**first[0], **variables}, *first[1:]] if first else []


async def run_calls(
    conn: Connection,
    calls: Sequence[tuple[Call, Sequence[Any]]],
    *,
    lead: str | None = None,
    tail: str | None = None,
) -> list[list[Row]]:
    """Run procedure calls without OUT or INOUT values in ONE packet; each one's first result set.

    ``lead`` and ``tail`` are fixed statements without arguments or result sets (``START
    TRANSACTION``, ``COMMIT``) sent first and last in the packet. Every text is fixed (named
    objects' statements built at prepare time); every value is a %s that asyncmy escapes, as for
    one statement. A CALL's results end with its status, which tells one call's from the next's.

    Raises:
        MySQLError: the first statement that failed; MariaDB ran none after it (nor the tail).
    """
    texts = [call.sql for call, _ in calls]
    if lead is not None:
        texts.insert(0, lead)
    if tail is not None:
        texts.append(tail)
    values = [
        db_value(_json_text(v) if at in call.json_at else v)
        for call, args in calls
        for at, v in enumerate(args)
    ]
    cursor = conn.cursor(DictCursor)
    await cursor.execute(*_statement(conn, "; ".join(texts), values))
    statuses = -1 if lead is not None else 0  # the lead's status is not a call's
    sets: list[list[Row]] = []
    first: list[Row] | None = None
    more = True
    while more:
        if cursor.description:
            rows = list(await cursor.fetchall())
            first = rows if first is None else first
        else:
            if 0 <= statuses < len(calls):
                sets.append(first or [])
            statuses += 1
            first = None
        more = bool(await cursor.nextset())
    await cursor.close()
    return sets


def _decimal(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return value  # a Decimal already, or nothing a number can be made of
    try:
        # repr: the shortest text that reads back as the same float, not its binary expansion.
        number = Decimal(repr(value) if isinstance(value, float) else value)
    except InvalidOperation:
        return value
    return number if number.is_finite() else value


def _datetime(value: Any) -> Any:
    # A DATETIME OUT parameter reaches its session variable as text.
    if not isinstance(value, str):
        return value
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return value


def _bool(value: Any) -> Any:
    return bool(value) if type(value) is int else value


def _json(value: Any, name: str) -> Any:
    if not isinstance(value, str | bytes | bytearray):
        return value
    try:
        return json.loads(value)  # bytes: UTF-8; not UTF-8 is a ValueError too
    except (ValueError, RecursionError):
        raise StoreError(
            "a json field's column holds text that is not JSON", details=(f"column {name}",)
        ) from None


def typed(template: Template, row: Row) -> Row:
    """The row with its values converted to the types the template declares for their fields.

    A column named like a field is read by the field's type, in every domain; other columns,
    and values already of the type, are left as the database returned them:

    * ``bool``: MariaDB has no boolean type (``BOOLEAN`` is ``TINYINT(1)``, read as 0 or 1), so
      an integer becomes ``true``/``false``;
    * ``decimal``: a number becomes a ``Decimal`` (on the wire, its exact text), as ``DECIMAL``
      columns already are;
    * ``json``: the column's text is parsed (``JSON`` is ``LONGTEXT`` with a check);
    * ``datetime``: text (an OUT parameter's value) is parsed as a naive UTC date-time.

    Raises:
        StoreError: a ``json`` field's column holds text that is not JSON.
    """
    for name, convert in _conversions(template):
        value = row.get(name)
        if value is not None:
            row[name] = convert(value, name)
    return row


_CONVERTERS: dict[FieldType, Callable[[Any, str], Any]] = {
    FieldType.BOOL: lambda value, _: _bool(value),
    FieldType.DECIMAL: lambda value, _: _decimal(value),
    FieldType.JSON: _json,
    FieldType.DATETIME: lambda value, _: _datetime(value),
}
_CONVERSIONS: dict[int, tuple[Template, tuple[tuple[str, Callable[[Any, str], Any]], ...]]] = {}
"""The fields of each template whose values :func:`typed` converts, by the template's ``id``."""


def _conversions(template: Template) -> tuple[tuple[str, Callable[[Any, str], Any]], ...]:
    cached = _CONVERSIONS.get(id(template))
    if cached is None or cached[0] is not template:  # kept with it: its id is not reused
        fields = template.fields.items()
        found = tuple(
            (name, _CONVERTERS[spec.type]) for name, spec in fields if spec.type in _CONVERTERS
        )
        cached = _CONVERSIONS[id(template)] = (template, found)
    return cached[1]


def typed_record(template: Template, call: Call, record: Row, limit: int) -> Row:
    """A one-record query's answer, typed: every row of each result set, and each OUT value.

    Each result set keeps at most ``limit`` rows (the procedure receives the limit too).
    """
    for name in call.result_sets:
        record[name] = [typed(template, row) for row in record[name][:limit]]
    record.update(typed(template, {name: record[name] for name in call.variables}))
    return record


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


async def in_transaction(conn: Connection, body: Callable[[RunCall], Awaitable[_T]]) -> _T:
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
