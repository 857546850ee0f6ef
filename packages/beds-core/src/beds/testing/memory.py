"""An in-memory NamasteCore for unit tests and embedding demos. Never a stand-in for integration.

Records live in a dict per template, keyed by the template's key fields. Queries apply their
params' conditions, in the declared order (else insertion order), after a cursor's position.
Generated ``int`` fields count up from 1 (a locked template's version starts at 1 and counts
its changes) and generated ``datetime`` fields take the current UTC time. Idempotency keys are
kept in a dict (the same repeat rules as the real stores, :mod:`beds.idempotency`), and journal
entries in a list per template, for as long as the process. It offers every adapter feature
(:data:`beds.namaste.FEATURES`) but ``batch`` (the node's record-by-record fallback serves its
batches), as the reference the real stores are tested against.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from beds.envelopes import Operation
from beds.errors import Conflict, NotFound, StaleVersion
from beds.idempotency import encode_result, repeat_outcome
from beds.namaste import FEATURES, Record
from beds.templates.model import FieldType, FilterOp, OrderKey, Template
from beds.testing.tickets import MemoryTickets
from beds.values import to_wire_record

if TYPE_CHECKING:
    from collections.abc import Sequence

    from beds.namaste import CallContext, Query, SchemaFile, StoreSettings
    from beds.templates.model import LongOperation

__all__ = ("LongStep", "MemoryAdapter")

LongStep = Callable[[Mapping[str, Any], int, int], Awaitable[list[Record]]]
"""A memory long operation: (params, step, steps) → the step's records."""


@attrs.define
class _Claim:
    fingerprint: str
    expires: float
    """``time.monotonic()`` after which the key is forgotten."""
    result: bytes | None = None


class MemoryAdapter(MemoryTickets):
    """A NamasteCore that keeps records (and CALGON tickets) in memory.

    Args:
        store: the store name it serves (templates select it by ``store``).
    """

    idempotent_writes: bool = True
    """Writes honour idempotency keys (:class:`~beds.namaste.NamasteCore` capability)."""
    features: frozenset[str] = frozenset(FEATURES) - {"batch"}
    """Every feature but ``batch``: the node serves its batches record by record."""

    def __init__(self, store: str = "memory") -> None:
        super().__init__()
        self.store = store
        self.long_operations: dict[tuple[str, str], LongStep] = {}
        """Long operations by (template, operation): what a step returns. Without one, a step
        answers the template's records whose fields equal the params (null: any), every
        ``steps``-th from the ``step``-th (so the steps together answer each once)."""
        self.tables: dict[str, dict[tuple[Any, ...], Record]] = {}
        self.journals: dict[str, list[Record]] = {}
        self.idempotency: dict[str, _Claim] = {}
        self.calls: list[tuple[str, str]] = []
        self._ids = itertools.count(1)

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> MemoryAdapter:
        """Adapter factory for ``AdapterRegistry.add``."""
        return cls(settings.store)

    def prepare(self, template: Template) -> None:
        """Accept every template."""
        self.tables.setdefault(template.name, {})

    async def start(self) -> None:
        """Nothing to connect."""

    async def optional_checks(self) -> list[tuple[str, str | None]]:
        """No optional parts."""
        return []

    async def verify(self, template: Template) -> None:
        """Every declared object exists in memory."""

    async def run_step(
        self,
        template: Template,
        operation: LongOperation,
        params: Mapping[str, Any],
        step: int,
        ctx: CallContext,
    ) -> list[Record]:
        """One step of a long operation (``long_operations``, else the records it matches)."""
        self.calls.append(("run_step", template.name))
        run = self.long_operations.get((template.name, operation.name))
        if run is not None:
            return await run(params, step, operation.steps)
        wanted = {k: v for k, v in params.items() if k in template.fields and v is not None}
        rows = [
            to_wire_record(row)
            for row in self.tables.get(template.name, {}).values()
            if all(row.get(k) == v for k, v in wanted.items())
        ]
        if not operation.steps:  # open-ended: everything at once, then nothing
            return rows if step == 0 else []
        return rows[step :: operation.steps]

    def _key(self, template: Template, record: Record) -> tuple[Any, ...]:
        return tuple(record[name] for name in template.key)

    async def _once(
        self,
        ctx: CallContext,
        write: Callable[[], Awaitable[Record]],
        template: Template | None = None,
        record: Record | None = None,
    ) -> Record:
        """Run ``write`` at most once per idempotency key (every write when there is none)."""
        if ctx.journal and template is not None and record is not None:
            write = functools.partial(self._journaled, template, record, ctx, write)
        key = ctx.idempotency_key
        if key is None:
            return await write()
        now = time.monotonic()
        claim = self.idempotency.get(key)
        if claim is not None and claim.expires > now:
            return repeat_outcome(ctx, claim.fingerprint, claim.result)
        claim = self.idempotency[key] = _Claim(ctx.fingerprint, now + ctx.idempotency_ttl)
        try:
            result = await write()
        except BaseException:
            del self.idempotency[key]  # nothing was written: a repeat may run it
            raise
        claim.result = encode_result(result)
        return result

    async def _journaled(
        self,
        template: Template,
        record: Record,
        ctx: CallContext,
        write: Callable[[], Awaitable[Record]],
    ) -> Record:
        """Run ``write`` and append its journal entry (in memory, so atomically)."""
        table = self.tables.setdefault(template.name, {})
        key = {name: record.get(name) for name in template.key}
        before = table.get(self._key(template, key))
        before = to_wire_record(before) if before is not None else None
        result = await write()
        if all(name in result for name in template.key):
            key = {name: result[name] for name in template.key}
        after = table.get(self._key(template, key))
        entries = self.journals.setdefault(template.name, [])
        if not any(entry["event_id"] == ctx.event_id for entry in entries):
            entries.append(
                {
                    "event_id": ctx.event_id,
                    "operation": _operation_of(before, after),
                    "key": to_wire_record(key),
                    "before": before,
                    "after": to_wire_record(after) if after is not None else None,
                    "principal": ctx.identity.handle if ctx.identity is not None else None,
                    "origin": ctx.origin,
                    "at": dt.datetime.now(dt.UTC).isoformat(),
                }
            )
        return result

    async def read_journal(
        self, template: Template, key: Record, *, limit: int, after: tuple[Any, ...] | None
    ) -> list[Record]:
        """The journal entries of the record with ``key`` (``JournalStore``)."""
        wanted = to_wire_record(dict(key))
        entries = [e for e in self.journals.get(template.name, []) if e["key"] == wanted]
        entries.sort(key=lambda entry: (entry["at"], entry["event_id"]))
        if after is not None:
            position = (_iso(after[0]), after[1])
            entries = [e for e in entries if (e["at"], e["event_id"]) > position]
        return entries[:limit]

    async def create(self, template: Template, record: Record, ctx: CallContext) -> Record:
        """Insert a record, filling generated fields."""
        return await self._once(ctx, lambda: self._create(template, record), template, record)

    async def _create(self, template: Template, record: Record) -> Record:
        self.calls.append(("create", template.name))
        row = dict(record)
        for field in template.fields.values():
            if template.capabilities.locking and field.name == template.capabilities.version_field:
                row[field.name] = 1
            elif field.generated and field.type is FieldType.INT:
                row[field.name] = next(self._ids)
            elif field.generated and field.type is FieldType.DATETIME:
                row[field.name] = dt.datetime.now(dt.UTC)
        table = self.tables.setdefault(template.name, {})
        key = self._key(template, row)
        if key in table:
            raise Conflict("a record with that key exists", details=(f"key: {list(template.key)}",))
        table[key] = row
        returns = template.operations[Operation.CREATE].returns
        return to_wire_record({name: row.get(name) for name in returns or template.key})

    async def fetch(self, template: Template, query: Query, ctx: CallContext) -> list[Record]:
        """Records meeting the params' conditions, in the declared order, after ``after``."""
        self.calls.append(("fetch", template.name))
        spec = query.spec
        rows = [
            row
            for row in self.tables.get(template.name, {}).values()
            if all(
                _meets(row.get(spec.condition(name).field), spec.condition(name).op, value)
                for name, value in query.params.items()
            )
        ]
        if spec.order_by:
            order = spec.order_by
            rows.sort(key=functools.cmp_to_key(lambda a, b: _compare(order, a, b)))
            if query.after is not None:
                position = {key.field: value for key, value in zip(order, query.after, strict=True)}
                rows = [row for row in rows if _compare(order, row, position) > 0]
        return [to_wire_record(row) for row in rows[: query.limit]]

    async def update(self, template: Template, record: Record, ctx: CallContext) -> Record:
        """Change the given fields of the record with this key (at its version, if locked)."""
        return await self._once(ctx, lambda: self._update(template, record), template, record)

    async def _update(self, template: Template, record: Record) -> Record:
        self.calls.append(("update", template.name))
        row = self.tables.get(template.name, {}).get(self._key(template, record))
        if row is None:
            raise NotFound("no record has that key")
        changes = dict(record)
        version = _check_version(template, row, changes)
        row.update(changes)
        if version is not None:
            row[version] += 1
        returns = template.operations[Operation.UPDATE].returns
        return to_wire_record({name: row.get(name) for name in returns or template.key})

    async def delete(self, template: Template, key: Record, ctx: CallContext) -> Record:
        """Remove the record with this key (at its version, if locked)."""
        return await self._once(ctx, lambda: self._delete(template, key), template, key)

    async def _delete(self, template: Template, key: Record) -> Record:
        self.calls.append(("delete", template.name))
        table = self.tables.get(template.name, {})
        row = table.get(self._key(template, key))
        if row is None:
            raise NotFound("no record has that key")
        _check_version(template, row, dict(key))
        del table[self._key(template, key)]
        return {"deleted": 1}

    async def apply_schema(self, files: Sequence[SchemaFile]) -> list[str]:
        """Nothing to install."""
        return [file.name for file in files]

    async def aclose(self) -> None:
        """Nothing to close."""


def _check_version(template: Template, row: Record, sent: Record) -> str | None:
    """The version field of a locked template, once ``sent`` is found current (it is removed)."""
    if not template.capabilities.locking:
        return None
    field = template.capabilities.version_field
    if sent.pop(field, None) != row[field]:
        raise StaleVersion(
            "the record changed since it was read", details=(f"current_version: {row[field]}",)
        )
    return field


def _operation_of(before: Record | None, after: Record | None) -> str:
    if before is None:
        return Operation.CREATE.value
    return Operation.DELETE.value if after is None else Operation.UPDATE.value


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.datetime) else str(value)


def _meets(field: Any, op: FilterOp, value: Any) -> bool:
    if op is FilterOp.EQ:
        return bool(field == value)
    if op is FilterOp.IN:
        return bool(field in value)
    if field is None:
        return False
    comparisons: dict[FilterOp, bool] = {
        FilterOp.GT: field > value,
        FilterOp.GTE: field >= value,
        FilterOp.LT: field < value,
        FilterOp.LTE: field <= value,
    }
    return comparisons[op]


def _compare(order: Sequence[OrderKey], a: Record, b: Record) -> int:
    """Compare two records (or a record and a cursor position) in a declared order."""
    for key in order:
        left: Any = a.get(key.field)  # declared order fields are never null
        right: Any = b.get(key.field)
        if left != right:
            less = bool(left < right)
            return (1 if less else -1) if key.descending else (-1 if less else 1)
    return 0
