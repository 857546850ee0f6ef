"""Audit records for templates declared with ``capabilities.audit = true``.

For every write the broker reads the record by its key before (update, delete) and after
(create, update) the write, through the template's key query (the query whose params are exactly
the key; the template loader requires one), and publishes who, what, when, before and after as
an ``audit`` event, confirmed before the write is answered.

A create's "after" is not read back when the adapter reported the record it stored
(:func:`beds.namaste.report_created`: the record as the key query reads it, an explicit promise
of that adapter, such as REC's); every other adapter's is read.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger

from beds.envelopes import Operation
from beds.idempotency import watch_repeats
from beds.namaste import Query, watch_created

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from beds.dispatch.trace import EventSink
    from beds.envelopes import Request
    from beds.lineage import Event
    from beds.namaste import CallContext, NamasteCore, Record
    from beds.templates.model import Template

__all__ = ("audit_write", "audited_write")

_READS_BEFORE = frozenset({Operation.UPDATE, Operation.DELETE})
_READS_AFTER = frozenset({Operation.CREATE, Operation.UPDATE})


async def _read(
    adapter: NamasteCore, template: Template, key: Record | None, ctx: CallContext
) -> Record | None:
    spec = template.key_query()
    if spec is None or key is None or any(key.get(name) is None for name in template.key):
        return None
    rows = await adapter.fetch(template, Query(spec=spec, params=key, limit=1), ctx)
    return rows[0] if rows else None


async def audited_write(
    request: Request,
    template: Template,
    adapter: NamasteCore,
    record: Record,
    ctx: CallContext,
    write: Callable[[], Awaitable[Record]],
) -> tuple[Record, dict[str, Any]]:
    """Run ``write`` between a read before and a read after; return its result and the record.

    The audit record: ``principal``, ``origin``, ``key``, ``before`` and ``after`` (``None``
    where the record does not exist), and ``at`` (when the write finished).
    """
    operation = request.operation
    key = {name: record.get(name) for name in template.key}
    before = await _read(adapter, template, key, ctx) if operation in _READS_BEFORE else None
    with watch_created(template.name) as created:
        result = await write()
    after = None
    if operation is Operation.CREATE:
        key = {name: result.get(name, record.get(name)) for name in template.key}
        after = created()  # the adapter's report of what it stored, if it makes one
    if after is None and operation in _READS_AFTER:
        after = await _read(adapter, template, key, ctx)
    return result, {
        "principal": request.meta.principal,
        "origin": request.meta.origin,
        "key": key,
        "before": before,
        "after": after,
        "at": time.time(),
    }


async def audit_write(
    events: EventSink | None,
    new_event: Callable[[], Event],
    request: Request,
    template: Template,
    adapter: NamasteCore,
    record: Record,
    ctx: CallContext,
    write: Callable[[], Awaitable[Record]],
) -> Record:
    """Run an audited write and publish its audit record before the write is answered.

    The record is a new event (``new_event``, made once the write is done) with the audit as
    its data, published to ``events`` (or logged, without them); a repeat answered from its
    idempotency key was audited when it ran.
    """
    with watch_repeats() as repeated:
        result, audit = await audited_write(request, template, adapter, record, ctx, write)
        repeat = repeated()
    if repeat:
        return result  # answered from its idempotency key: audited when it ran
    event = attrs.evolve(new_event(), data=audit)
    if events is None:
        logger.info("audit {}: {}", ctx.event_id, event.to_record())
        return result
    try:
        await events.publish_now(event)
    except Exception as exc:  # the write is done: keep the record for the next batch
        logger.warning("audit record of {} waits for the logs exchange ({})", ctx.event_id, exc)
        events.emit(event)
    return result
