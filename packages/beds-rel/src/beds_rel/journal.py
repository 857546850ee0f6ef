"""Journals on MariaDB: each write of a journaled template and its entry commit together.

The objects are beds-rel's own (``sql/001_beds_journal.sql``, applied by ``beds schema apply``),
called by name like every other object the adapter uses: ``beds_journal_append`` writes an
entry, ``beds_journal_v`` reads a record's entries back. The adapter runs the write, the reads
of the record before and after it (through the template's key query) and the append on one
connection in one transaction (:meth:`beds_rel.adapter.RelAdapter`), so an entry exists exactly
when its write committed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from importlib import resources
from typing import TYPE_CHECKING, Any

from beds.envelopes import Operation
from beds.namaste import SchemaFile
from beds.values import to_wire, to_wire_record
from beds_rel.bindings import Call
from beds_rel.idempotency import CALLS as IDEMPOTENCY_CALLS
from beds_rel.statements import read_by_key

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from asyncmy.connection import Connection

    from beds.namaste import CallContext, Record
    from beds.templates.model import Template
    from beds_rel.bindings import TemplatePlan
    from beds_rel.idempotency import RunCall
    from beds_rel.statements import Row

__all__ = (
    "APPEND",
    "CALLS",
    "READ",
    "append_args",
    "entry_of",
    "journaled_write",
    "read_args",
    "schema_file",
    "write_objects",
)

APPEND = Call(
    kind="procedure",
    name="beds_journal_append",
    sql="CALL `beds_journal_append`(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
    params=(
        "template",
        "event_id",
        "key_hash",
        "record_key",
        "operation",
        "before",
        "after",
        "principal",
        "origin",
    ),
    arity=9,
)
_COLUMNS = ("event_id", "operation", "record_key", "before_json", "after_json", "principal")
_READ_HEAD = (
    "SELECT `event_id`, `operation`, `record_key`, `before_json`, `after_json`, `principal`, "
    "`origin`, `at` FROM `beds_journal_v` WHERE `template` = %s AND `key_hash` = %s"
)
_READ_TAIL = " ORDER BY `at`, `event_id` LIMIT %s"
READ = Call(
    kind="view",
    name="beds_journal_v",
    sql=_READ_HEAD + _READ_TAIL,
    params=("template", "key_hash"),
    columns=(*_COLUMNS, "origin", "at", "template", "key_hash"),
)
_READ_AFTER = _READ_HEAD + " AND (`at` > %s OR (`at` = %s AND `event_id` > %s))" + _READ_TAIL
CALLS = (APPEND, READ)
"""Every object journaled templates need, for ``verify``."""

_SCHEMA = "001_beds_journal.sql"


def schema_file() -> SchemaFile:
    """The DBA file that creates the journal table, its view and the append procedure."""
    text = resources.files("beds_rel").joinpath("sql", _SCHEMA).read_text(encoding="utf-8")
    return SchemaFile(name=f"beds_rel/sql/{_SCHEMA}", text=text, distribution="beds-rel")


def _canonical_key(key: Mapping[str, Any]) -> str:
    return json.dumps(to_wire_record(key), sort_keys=True, separators=(",", ":"))


def _key_hash(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()


def _json(record: Record | None) -> str | None:
    # Stored text, never on the wire (the node encodes answers with beds.codec).
    return None if record is None else json.dumps(record, separators=(",", ":"))


def append_args(
    template: str,
    operation: Operation,
    key: Mapping[str, Any],
    before: Record | None,
    after: Record | None,
    ctx: CallContext,
) -> tuple[Any, ...]:
    """The arguments of ``beds_journal_append`` for one write (records already wire values)."""
    canonical = _canonical_key(key)
    principal = ctx.identity.handle if ctx.identity is not None else None
    return (
        template,
        ctx.event_id,
        _key_hash(canonical),
        canonical,
        operation.value,
        _json(before),
        _json(after),
        principal,
        ctx.origin,
    )


def read_args(
    template: str, key: Mapping[str, Any], limit: int, after: Sequence[Any] | None
) -> tuple[str, tuple[Any, ...]]:
    """The statement reading a record's entries after a position, and its arguments."""
    scope = (template, _key_hash(_canonical_key(key)))
    if after is None:
        return READ.sql, (*scope, limit)
    at = after[0]
    if isinstance(at, str):
        at = dt.datetime.fromisoformat(at)
    if isinstance(at, dt.datetime) and at.tzinfo is not None:
        at = at.astimezone(dt.UTC).replace(tzinfo=None)
    return _READ_AFTER, (*scope, at, at, after[1], limit)


def entry_of(row: Mapping[str, Any]) -> Record:
    """A journal entry as the ``history`` query answers it (``JournalStore``)."""

    def loaded(text: Any) -> Any:
        return None if text is None else json.loads(text)

    return {
        "event_id": row["event_id"],
        "operation": row["operation"],
        "key": loaded(row["record_key"]),
        "before": loaded(row["before_json"]),
        "after": loaded(row["after_json"]),
        "principal": row["principal"],
        "origin": row["origin"],
        "at": to_wire(row["at"]),
    }


async def journaled_write(
    conn: Connection,
    template: Template,
    plan: TemplatePlan,
    operation: Operation,
    args: Sequence[Any],
    key: Mapping[str, Any],
    ctx: CallContext,
    result_of: Callable[[list[Row]], Record],
    run: RunCall,
) -> Record:
    """Run a write and append its entry, inside the transaction open on ``conn``.

    The record is read through the key query before the write (held with ``FOR UPDATE`` when
    that query is a view, so that no other write slips in between) and after it. ``key`` is the
    record's key as the request gave it; a create with a generated key takes it from the
    write's result (``result_of`` turns the procedure's rows into it, raising ``NotFound``…).
    The write and the append go through ``run`` (the transaction's runner).
    """
    key = {name: key.get(name) for name in template.key}
    known = all(value is not None for value in key.values())
    before = await read_by_key(conn, template, plan, key, lock=True) if known else None
    result = result_of(await run(conn, plan.writes[operation], args))
    if not known:
        key = {name: result.get(name) for name in template.key}
    after = None
    if operation is not Operation.DELETE and all(v is not None for v in key.values()):
        after = await read_by_key(conn, template, plan, key)
    await run(conn, APPEND, append_args(template.name, operation, key, before, after, ctx))
    return result


def write_objects(plan: TemplatePlan, call: Call, *, keyed: bool, journaled: bool) -> list[str]:
    """The named objects a write calls, named in its errors.

    Its procedure; the idempotency key's when ``keyed``; when ``journaled``, the journal's and
    the key query (read before and after).
    """
    objects = [call.name, *(c.name for c in IDEMPOTENCY_CALLS if keyed)]
    if journaled and plan.key_query is not None:
        objects += [*(c.name for c in CALLS), plan.queries[plan.key_query].name]
    return objects
