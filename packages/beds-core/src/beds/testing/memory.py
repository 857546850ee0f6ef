"""An in-memory NamasteCore for unit tests and embedding demos. Never a stand-in for integration.

Records live in a dict per template, keyed by the template's key fields. Queries filter by
equality on their params, in insertion order. Generated ``int`` fields count up from 1 and
generated ``datetime`` fields take the current UTC time. Idempotency keys are kept in a dict
(the same repeat rules as the real stores, :mod:`beds.idempotency`), for as long as the process.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from typing import TYPE_CHECKING, Any

import attrs

from beds.envelopes import Operation
from beds.errors import Conflict, NotFound
from beds.idempotency import encode_result, repeat_outcome
from beds.templates.model import FieldType, Template
from beds.values import to_wire_record

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from beds.namaste import CallContext, Query, Record, SchemaFile, StoreSettings

__all__ = ("MemoryAdapter",)


@attrs.define
class _Claim:
    fingerprint: str
    expires: float
    """``time.monotonic()`` after which the key is forgotten."""
    result: bytes | None = None


class MemoryAdapter:
    """A NamasteCore that keeps records in memory.

    Args:
        store: the store name it serves (templates select it by ``store``).
    """

    idempotent_writes: bool = True
    """Writes honour idempotency keys (:class:`~beds.namaste.NamasteCore` capability)."""

    def __init__(self, store: str = "memory") -> None:
        self.store = store
        self.tables: dict[str, dict[tuple[Any, ...], Record]] = {}
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

    def _key(self, template: Template, record: Record) -> tuple[Any, ...]:
        return tuple(record[name] for name in template.key)

    async def _once(self, ctx: CallContext, write: Callable[[], Awaitable[Record]]) -> Record:
        """Run ``write`` at most once per idempotency key (every write when there is none)."""
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

    async def create(self, template: Template, record: Record, ctx: CallContext) -> Record:
        """Insert a record, filling generated fields."""
        return await self._once(ctx, lambda: self._create(template, record))

    async def _create(self, template: Template, record: Record) -> Record:
        self.calls.append(("create", template.name))
        row = dict(record)
        for field in template.fields.values():
            if field.generated and field.type is FieldType.INT:
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
        """Return records whose fields equal the query params."""
        self.calls.append(("fetch", template.name))
        rows = [
            row
            for row in self.tables.get(template.name, {}).values()
            if all(row.get(name) == value for name, value in query.params.items())
        ]
        return [to_wire_record(row) for row in rows[: query.limit]]

    async def update(self, template: Template, record: Record, ctx: CallContext) -> Record:
        """Change the given fields of the record with this key."""
        return await self._once(ctx, lambda: self._update(template, record))

    async def _update(self, template: Template, record: Record) -> Record:
        self.calls.append(("update", template.name))
        row = self.tables.get(template.name, {}).get(self._key(template, record))
        if row is None:
            raise NotFound("no record has that key")
        row.update(record)
        returns = template.operations[Operation.UPDATE].returns
        return to_wire_record({name: row.get(name) for name in returns or template.key})

    async def delete(self, template: Template, key: Record, ctx: CallContext) -> Record:
        """Remove the record with this key."""
        return await self._once(ctx, lambda: self._delete(template, key))

    async def _delete(self, template: Template, key: Record) -> Record:
        self.calls.append(("delete", template.name))
        if self.tables.get(template.name, {}).pop(self._key(template, key), None) is None:
            raise NotFound("no record has that key")
        return {"deleted": 1}

    async def apply_schema(self, files: Sequence[SchemaFile]) -> list[str]:
        """Nothing to install."""
        return [file.name for file in files]

    async def aclose(self) -> None:
        """Nothing to close."""
