"""A batch's store call: the adapter's own batch or one call per record, with audit and live.

:mod:`beds.dispatch.batch` decides what runs; this module runs it: ONE store call through the
dispatcher's deadline, retry and lineage machinery (:class:`BatchHost`), the audit's reads
before and after it (one ``fetch_many`` each), one audit event per written item, then one
cache invalidation and the live events. An adapter with the ``batch`` feature
(:class:`~beds.namaste.BatchStore`) takes the whole batch; any other is called record by
record, in order.

Why this module is long: the store call of a batch and everything that must wrap that one call
(the audit's reads before and after it, the idempotency context, the fallback's per-record
loop) share its inputs and its outcome list; :class:`BatchHost` spells out, typed, what it
takes from the dispatcher, so the dispatcher's module does not grow with it.
"""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import attrs
from loguru import logger

from beds.dispatch.plan import WRITES, idempotent_context
from beds.dispatch.retry import IN_DOUBT, retry_transient
from beds.dispatch.trace import store_object
from beds.envelopes import Operation
from beds.errors import InternalError, RequestError, StoreBusy
from beds.idempotency import item_context, watch_repeats
from beds.lineage import EventsNotPublished
from beds.namaste import BatchStore, CallContext, NamasteCore, Query, Record, watch_created_items

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from beds.config.model import ReliabilitySettings
    from beds.dispatch.cache import FetchCache
    from beds.dispatch.live import LivePublisher
    from beds.dispatch.trace import EventSink
    from beds.envelopes import Request
    from beds.handlers import Handler
    from beds.lineage import Event
    from beds.templates.model import Template

__all__ = (
    "BatchHost",
    "Outcome",
    "batched",
    "key_of",
    "read_many",
    "run_batch",
    "write_context",
    "written",
)

Outcome = Record | RequestError
"""One item's outcome: its result, or the error its single operation would have answered."""

_READS_BEFORE = frozenset({Operation.UPDATE, Operation.DELETE})
_READS_AFTER = frozenset({Operation.CREATE, Operation.UPDATE})


class BatchHost(Protocol):
    """What a batch takes from the dispatcher serving it (:class:`~beds.dispatch.Dispatcher`)."""

    @property
    def handlers(self) -> Mapping[tuple[str, Operation], Handler]:
        """The template handlers: a batch never bypasses one."""

    @property
    def max_batch_records(self) -> int:
        """The node's ``amqp.max_batch_records``."""

    @property
    def reliability(self) -> ReliabilitySettings:
        """Idempotency TTL and lease."""

    @property
    def cache(self) -> FetchCache | None:
        """The node's fetch cache."""

    @property
    def live(self) -> LivePublisher | None:
        """Publishes live templates' ``record.changed``."""

    @property
    def events(self) -> EventSink | None:
        """Where audit events go."""

    async def before_dispatch(self, request: Request, template: Template) -> None:
        """Run the plugins' before-dispatch hooks."""

    def audit_event(self, request: Request, ctx: CallContext) -> Event:
        """A new ``audit`` event of ``request``."""

    async def call_store(
        self,
        request: Request,
        template: Template,
        adapter: NamasteCore,
        ctx: CallContext,
        call: Callable[[], Awaitable[Any]],
        timings: dict[str, float],
        *,
        what: str | None = None,
    ) -> Any:
        """Run ``call`` within the deadline, with retries and a ``db`` lineage event."""


def key_of(template: Template, record: Record) -> Record | None:
    """``record``'s key fields, or ``None`` when one is missing or null."""
    key = {name: record.get(name) for name in template.key}
    return None if any(value is None for value in key.values()) else key


def batched(adapter: NamasteCore) -> bool:
    """Whether ``adapter`` serves batches itself (feature ``batch``, with its methods)."""
    return "batch" in adapter.features and isinstance(adapter, BatchStore)


async def read_many(
    adapter: NamasteCore,
    template: Template,
    keys: Sequence[Record],
    ctx: CallContext,
) -> list[Record | None]:
    """Each key's record through the key query: one ``fetch_many``, or one fetch per key."""
    if not keys:
        return []
    if batched(adapter):
        assert isinstance(adapter, BatchStore)
        return await adapter.fetch_many(template, keys, ctx)
    spec = template.key_query()
    if spec is None:
        return [None] * len(keys)
    found: list[Record | None] = []
    for key in keys:
        query = Query(spec=spec, params=key, limit=1, consistency=ctx.consistency)
        rows = await adapter.fetch(template, query, ctx)
        found.append(rows[0] if rows else None)
    return found


def _store_call(
    template: Template,
    adapter: NamasteCore,
    single: Operation,
    records: list[Record],
    ctx: CallContext,
    settings: ReliabilitySettings,
) -> Callable[[], Awaitable[Sequence[Outcome | None]]]:
    """The one store call of a batch: the adapter's own batch, or one call per record."""
    if batched(adapter):
        assert isinstance(adapter, BatchStore)
        if single is Operation.FETCH:
            return lambda: adapter.fetch_many(template, records, ctx)
        many = {
            Operation.CREATE: adapter.create_many,
            Operation.UPDATE: adapter.update_many,
            Operation.DELETE: adapter.delete_many,
        }[single]
        return lambda: many(template, records, ctx)
    if single is Operation.FETCH:
        return lambda: read_many(adapter, template, records, ctx)
    return lambda: _one_by_one(WRITES[single], adapter, template, records, ctx, settings)


async def _one_by_one(
    write: Callable[[NamasteCore, Template, Record, CallContext], Awaitable[Record]],
    adapter: NamasteCore,
    template: Template,
    records: list[Record],
    ctx: CallContext,
    settings: ReliabilitySettings,
) -> list[Outcome]:
    """The fallback: each record its own single write, in order, each its own outcome.

    A record the database refused on a lock (``StoreBusy``: a deadlock victim, a lock wait
    timeout; the adapter rolled its write back) is tried again with the node's back-off, as a
    keyed write is. The store going away (``StoreUnavailable``) stops the batch: that item may
    have run, the ones after it did not. A journaled write's entry gets the event id
    ``f"{ctx.event_id}/{index}"``, as a store's own batch gives it.
    """
    outcomes: list[Outcome] = []
    for index, record in enumerate(records):
        call = partial(write, adapter, template, record, item_context(ctx, index))
        try:
            try:
                outcomes.append(await call())
            except StoreBusy as busy:
                outcomes.append(
                    await retry_transient(
                        call,
                        busy,
                        settings=settings,
                        event_id=ctx.event_id,
                        deadline=ctx.deadline,
                        on_retry=lambda: None,
                    )
                )
        except RequestError as exc:
            if not exc.TRANSIENT or isinstance(exc, StoreBusy):
                outcomes.append(exc)
                continue
            outcomes.append(type(exc)(exc.message, details=(*exc.details, IN_DOUBT)))
            skipped = type(exc)(
                "not run: an earlier item of the batch failed transiently",
                details=(f"records[{index}] failed; send this item again",),
            )
            outcomes += [skipped] * (len(records) - index - 1)
            break
    return outcomes


async def run_batch(
    host: BatchHost,
    request: Request,
    template: Template,
    adapter: NamasteCore,
    ctx: CallContext,
    single: Operation,
    records: list[Record],
    fast: bool,
    timings: dict[str, float],
) -> Sequence[Outcome | None]:
    """The store call (one ``db`` lineage event), with the audit's reads around it."""
    call = _store_call(template, adapter, single, records, ctx, host.reliability)
    audit = template.capabilities.audit and single is not Operation.FETCH
    audits: list[dict[str, Any]] = []
    if audit:
        call = _audited(template, adapter, single, records, ctx, call, request, audits)
    results: Sequence[Outcome | None] = await host.call_store(
        request,
        template,
        adapter,
        ctx,
        call,
        timings,
        what=store_object(template, request, batched=fast),
    )
    if len(results) != len(records):
        raise InternalError(
            f"store {adapter.store!r} answered {len(results)} results for {len(records)} items "
            f"of a {request.operation.value}; the node log has details"
        )
    if audits:
        await _publish_audits(host, request, ctx, audits)
    return results


def _audited(
    template: Template,
    adapter: NamasteCore,
    single: Operation,
    records: list[Record],
    ctx: CallContext,
    write: Callable[[], Awaitable[Sequence[Outcome | None]]],
    request: Request,
    audits: list[dict[str, Any]],
) -> Callable[[], Awaitable[Sequence[Outcome | None]]]:
    """``write`` between one read of every record before it and one after (``audits`` filled)."""

    async def run() -> Sequence[Outcome | None]:
        audits.clear()  # a retried call audits what its last try did
        keys = [key_of(template, record) for record in records]
        before: list[Record | None] = [None] * len(records)
        if single in _READS_BEFORE:
            before = await _read_some(adapter, template, keys, ctx)
        with watch_repeats() as repeated, watch_created_items(template.name) as reported:
            results = await write()
            repeat = repeated()
            stored = reported() if single is Operation.CREATE else {}
        if repeat:
            return results  # answered from its idempotency key: audited when it ran
        written = [i for i, result in enumerate(results) if not isinstance(result, RequestError)]
        if single is Operation.CREATE:
            for index in written:
                result = results[index]
                assert isinstance(result, dict)
                keys[index] = key_of(
                    template, {k: result.get(k, records[index].get(k)) for k in template.key}
                )
        after: list[Record | None] = [stored.get(index) for index in range(len(records))]
        if single in _READS_AFTER:
            # Read back what the adapter did not report (beds.namaste.report_created_items).
            unread = [index for index in written if index not in stored]
            found = await _read_some(adapter, template, [keys[i] for i in unread], ctx)
            for index, row in zip(unread, found, strict=True):
                after[index] = row
        at = time.time()
        audits.extend(
            {
                "principal": request.meta.principal,
                "origin": request.meta.origin,
                "key": keys[index] or {name: records[index].get(name) for name in template.key},
                "before": before[index],
                "after": after[index],
                "at": at,
            }
            for index in written
        )
        return results

    return run


async def _read_some(
    adapter: NamasteCore, template: Template, keys: list[Record | None], ctx: CallContext
) -> list[Record | None]:
    """:func:`_read_many` of the complete keys; ``None`` for the others."""
    wanted = [i for i, key in enumerate(keys) if key is not None]
    found = await read_many(adapter, template, [keys[i] or {} for i in wanted], ctx)
    rows: list[Record | None] = [None] * len(keys)
    for index, row in zip(wanted, found, strict=True):
        rows[index] = row
    return rows


async def _publish_audits(
    host: BatchHost, request: Request, ctx: CallContext, audits: list[dict[str, Any]]
) -> None:
    """One audit event per written item, all confirmed before the batch is answered."""
    events = [attrs.evolve(host.audit_event(request, ctx), data=audit) for audit in audits]
    sink = host.events
    if sink is None:
        for event in events:
            logger.info("audit {}: {}", ctx.event_id, event.to_record())
        return
    try:
        await sink.publish_now(*events)
    except Exception as exc:  # the writes are done: keep them for the next lineage batch
        lost = exc.events if isinstance(exc, EventsNotPublished) else events
        logger.warning(
            "{} audit records of {} wait for the logs exchange ({})", len(lost), ctx.event_id, exc
        )
        for event in lost:
            sink.emit(event)


async def written(
    host: BatchHost,
    request: Request,
    template: Template,
    ctx: CallContext,
    single: Operation,
    payloads: list[Any],
    sent: list[int],
    results: Sequence[Outcome | None],
) -> None:
    """After the writes: one cache invalidation, and a live template's events."""
    written = [
        (payloads[index], result)
        for index, result in zip(sent, results, strict=True)
        if not isinstance(result, RequestError)
    ]
    if not written:
        return
    if host.cache is not None:
        await host.cache.written(template.name)
    live = host.live
    if live is not None and template.capabilities.live:
        identity = ctx.identity
        live.written_many(
            template,
            single.value,
            written,
            principal=identity.handle if identity is not None else None,
            trace_id=ctx.event_id,
        )


def write_context(
    host: BatchHost,
    request: Request,
    template: Template,
    adapter: NamasteCore,
    ctx: CallContext,
    single: Operation,
    fast: bool,
) -> CallContext:
    """The idempotency key (whole batch) and journal flag of a batch write."""
    if single is Operation.FETCH:
        return ctx
    if request.meta.idempotency_key is not None:
        # Record by record (no batch feature), each item is keyed on its own (item_key).
        ctx = idempotent_context(ctx, request, adapter, host.reliability)
    if template.capabilities.journal:
        ctx = attrs.evolve(ctx, journal=True)
    return ctx
