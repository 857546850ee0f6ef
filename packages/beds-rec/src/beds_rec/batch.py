"""Batches of REC writes and key look-ups in as few MongoDB round trips as the store allows.

The adapter's :class:`beds.namaste.BatchStore` methods (feature ``batch``; docs/rec.md,
"Batches"), each a function of the adapter:

* ``create_many``: one ``insert_many(ordered=False)``; ``BulkWriteError.writeErrors`` name each
  failing item by index and its error (a duplicate key is the ``Conflict`` a create raises).
* ``update_many`` / ``delete_many``: one ``find`` of every key (existence, version, the record
  before), then one ``bulk_write`` of ``UpdateOne`` / ``DeleteOne`` conditioned on the key, the
  document found and (locked) the version sent. A count short of the ops sent means a concurrent
  writer changed some record in between: the items are read again to tell which. Items with
  the same key run in rounds (the second occurrence in the second round, and so on), so each
  sees what the one before it did, as single writes one after another would.
* ``fetch_many``: ``find`` by ``$in`` (lists of at most 100 values, sent at once; a compound key:
  each field's ``$in``, or ``$or`` of the keys), mapped back to input order.

All or nothing (``[batch] atomic = true``) runs the writes in one multi-document transaction,
which MongoDB has on a replica set or a sharded cluster only: on a standalone server such a
batch is refused (``verify`` and every call say so). An item that fails aborts the transaction;
a create is then tried again without the items known to fail, to find the others (each round
one aborted transaction), and nothing is ever committed.

With an idempotency key the whole batch runs at most once
(:meth:`~beds_rec.idempotency.KeyStore.once_batch`): a keyed create stores
``key#fingerprint/index`` in each document (a repeat finds the ones that applied), a locked keyed
update pushes it onto ``_beds_updates``, and a keyed delete pins the ``_id`` of each document
before deleting it. Journal entries (``ctx.journal``) follow the writes, one per
written item, event id ``f"{ctx.event_id}/{index}"``.

Why this module is long: its four operations share the parts that make a batch one round trip
(the ``find`` of many keys, the bulk write and its per-item errors, the transaction, the
outcomes in input order); the adapter's module only calls them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from bson.decimal128 import Decimal128
from pymongo import DeleteOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, WriteError

from beds.envelopes import Consistency, Operation
from beds.errors import (
    NotFound,
    RequestError,
    StaleVersion,
    StoreUnavailable,
    UnsupportedOperation,
    WriteInDoubt,
)
from beds.namaste import report_created_items
from beds_rec.bindings import CREATED_AT
from beds_rec.errors import database_call, translate
from beds_rec.idempotency import KEY_FIELD, KEY_INDEX, UPDATES_FIELD, UPDATES_KEPT, key_value
from beds_rec.journal import wire_key
from beds_rec.values import DOC_ID, to_record, utc_now

if TYPE_CHECKING:
    from pymongo.asynchronous.client_session import AsyncClientSession

    from beds.namaste import CallContext, Record
    from beds.templates.model import Template
    from beds_rec.adapter import RecAdapter
    from beds_rec.bindings import TemplatePlan

__all__ = ("create_many", "delete_many", "fetch_many", "needs_transactions", "update_many")

Document = dict[str, Any]
_Entry = tuple[int, str, "Record", "Record | None", "Record | None"]
"""A journal entry of a written item: (index, operation, key, before, after)."""
_DUPLICATE_KEYS: Final = frozenset({11000, 11001, 12582})
_PAYLOAD: Final = "$.payload"
"""Item errors name fields as the single operation's do: an item is one operation's payload
(the node may have sent only some of the request's items, so indexes here are not the
request's)."""
_IN_CHUNK: Final = 100
"""Keys per ``$in`` list (:func:`_key_queries`)."""
_PRODUCT_FACTOR: Final = 4
"""A compound key's product of ``$in`` lists may match this many records per key sent."""


class _Rollback(Exception):
    """Abort the transaction: some item failed, so nothing of the batch may be committed."""


class _ItemFailed(Exception):
    """An item's write failed inside a transaction (which the server aborted)."""

    def __init__(self, index: int, error: Mapping[str, Any]) -> None:
        super().__init__(index)
        self.index = index
        self.error = error


def needs_transactions(template: Template) -> str:
    """Why a standalone server cannot serve this template's all-or-nothing batches."""
    return (
        f"template {template.name!r} declares [batch] atomic = true, which needs MongoDB "
        "multi-document transactions: the server is standalone (no replica set), so its "
        "batches are refused; use a replica set (stores.rec.uri) or set atomic = false"
    )


def _refuse_atomic(adapter: RecAdapter, template: Template) -> None:
    if template.batch.atomic and not adapter.transactions:
        raise UnsupportedOperation(needs_transactions(template))


# -- create_many -------------------------------------------------------------------------------


async def create_many(
    adapter: RecAdapter, template: Template, records: Sequence[Record], ctx: CallContext
) -> list[Record | RequestError]:
    """Insert each record (stamping ``created_at`` and the version); each one's ``returns``."""
    plan = await _writable(adapter, template, Operation.CREATE, ctx)
    if not adapter._keyed(ctx):
        return await _create(adapter, plan, records, ctx)
    return await adapter._key_store.once_batch(
        ctx, lambda pin: _create(adapter, plan, records, ctx), _run_again
    )


async def _create(
    adapter: RecAdapter, plan: TemplatePlan, records: Sequence[Record], ctx: CallContext
) -> list[Record | RequestError]:
    spec = plan.template.operations[Operation.CREATE]
    outcomes: list[Record | RequestError | None] = [None] * len(records)
    documents: dict[int, Document] = {}
    now = utc_now() if plan.stamps_created_at else None
    marker = key_value(ctx) if adapter._keyed(ctx) else None
    for index, record in enumerate(records):
        try:
            document = plan.document(spec.params, record, _PAYLOAD)
        except RequestError as exc:
            outcomes[index] = exc
            continue
        if now is not None:
            document[CREATED_AT] = now
        if plan.version_field is not None:
            document[plan.version_field] = 1
        if marker is not None:  # a repeat can see which items applied (beds_rec.idempotency)
            document[KEY_FIELD] = f"{marker}/{index}"
        documents[index] = document
    if plan.template.batch.atomic:
        failed, known = await _insert_atomic(adapter, plan, documents, ctx)
    else:
        failed, known = await _insert(adapter, plan, documents, ctx)
    entries: list[_Entry] = []
    created: dict[int, Document] = {}
    for index, document in documents.items():
        if index in failed:
            outcomes[index] = failed[index]
            continue
        created[index] = stored = known.get(index, document)
        if ctx.journal:
            whole = to_record(stored, plan.fields, id_mapped=plan.id_mapped)
            entries.append((index, Operation.CREATE.value, _key(plan, whole), None, whole))
        outcomes[index] = to_record(stored, spec.returns, id_mapped=plan.id_mapped)
    if not plan.template.batch.atomic or not any(isinstance(o, RequestError) for o in outcomes):
        await _journal(adapter, plan, entries, ctx)
    read = adapter.as_read(plan)
    if read is not None and not (plan.template.batch.atomic and failed):
        # The audit's "after" of each created item, without reading them back.
        report_created_items(
            plan.template.name, lambda: {index: read(doc) for index, doc in created.items()}
        )
    return _complete(outcomes)


async def _insert(
    adapter: RecAdapter, plan: TemplatePlan, documents: Mapping[int, Document], ctx: CallContext
) -> tuple[dict[int, RequestError], dict[int, Document]]:
    """One unordered ``insert_many``: the items that failed, and the ones a lost attempt wrote."""
    if not documents:
        return {}, {}
    order = list(documents)
    failed: dict[int, RequestError] = {}
    applied: dict[int, RequestError] = {}
    collection = adapter._collection(plan)
    try:
        with database_call(collection=plan.collection, deadline=ctx.deadline):
            await collection.insert_many([documents[i] for i in order], ordered=False)
    except RequestError as exc:
        for position, error in _write_errors(exc):
            index = order[position]
            if _on_key_index(error):  # an earlier attempt of this keyed batch inserted it
                applied[index] = _item_error(error, plan)
            else:
                failed[index] = _item_error(error, plan)
    known = await _applied(adapter, plan, documents, list(applied), ctx)
    # Gone since (deleted by another request): no document to answer from, the conflict stays.
    failed.update((index, error) for index, error in applied.items() if index not in known)
    return failed, known


async def _insert_atomic(
    adapter: RecAdapter, plan: TemplatePlan, documents: Mapping[int, Document], ctx: CallContext
) -> tuple[dict[int, RequestError], dict[int, Document]]:
    """Insert all in one transaction, or none: every failing item, found round by round."""
    failed: dict[int, RequestError] = {}
    known: dict[int, Document] = {}
    collection = adapter._collection(plan)
    while True:
        order = [i for i in documents if i not in failed and i not in known]
        if not order:
            return failed, known

        async def attempt(session: AsyncClientSession, order: list[int] = order) -> None:
            try:
                await collection.insert_many(
                    [documents[i] for i in order], ordered=True, session=session
                )
            except BulkWriteError as exc:
                (error, *_) = exc.details.get("writeErrors") or [{}]
                if not error:
                    raise
                raise _ItemFailed(order[int(error["index"])], error) from exc
            if failed:
                raise _Rollback

        try:
            await _transaction(adapter, plan, ctx, attempt)
        except _Rollback:
            return failed, known
        except _ItemFailed as item:
            if _on_key_index(item.error):
                # A lost attempt of this keyed batch committed it: the others are there too.
                known = await _applied(adapter, plan, documents, list(documents), ctx)
                if item.index in known:
                    continue
            failed[item.index] = _item_error(item.error, plan)
            continue
        return failed, known


async def _applied(
    adapter: RecAdapter,
    plan: TemplatePlan,
    documents: Mapping[int, Document],
    indexes: Sequence[int],
    ctx: CallContext,
) -> dict[int, Document]:
    """The documents an earlier attempt of this keyed batch inserted, by item index."""
    if not indexes:
        return {}
    markers = {documents[i][KEY_FIELD]: i for i in indexes if KEY_FIELD in documents[i]}
    with database_call(collection=plan.collection, deadline=ctx.deadline):
        cursor = adapter._collection(plan).find({KEY_FIELD: {"$in": list(markers)}})
        found = await cursor.to_list()
    return {markers[doc[KEY_FIELD]]: doc for doc in found if doc.get(KEY_FIELD) in markers}


# -- update_many / delete_many -------------------------------------------------------------------


async def _writable(
    adapter: RecAdapter, template: Template, operation: Operation, ctx: CallContext
) -> TemplatePlan:
    """The template's plan, once the operation is declared, allowed and the store answers."""
    plan = adapter._plan(template)
    adapter._operation(template, operation)
    _refuse_atomic(adapter, template)
    await adapter._reachable(ctx, write=True)
    return plan


async def update_many(
    adapter: RecAdapter, template: Template, records: Sequence[Record], ctx: CallContext
) -> list[Record | RequestError]:
    """``$set`` each record's sent fields by its key (at its version, if locked)."""
    plan = await _writable(adapter, template, Operation.UPDATE, ctx)
    if not adapter._keyed(ctx):
        return await _change(adapter, plan, Operation.UPDATE, records, ctx, None, None)
    # A repeat recognises its own locked updates by their marker: no recovery step needed.
    return await adapter._key_store.once_batch(
        ctx,
        lambda pin: _change(adapter, plan, Operation.UPDATE, records, ctx, None, None),
        _run_again,
    )


async def delete_many(
    adapter: RecAdapter, template: Template, keys: Sequence[Record], ctx: CallContext
) -> list[Record | RequestError]:
    """Delete each key's record (at its version, if locked): ``{"deleted": 1}`` each."""
    plan = await _writable(adapter, template, Operation.DELETE, ctx)
    if not adapter._keyed(ctx):
        return await _change(adapter, plan, Operation.DELETE, keys, ctx, None, None)
    lost: list[Any] = [None]

    async def recover(pinned: Any) -> None:
        lost[0] = pinned  # what a lost attempt pinned: the write below answers from it
        return None

    return await adapter._key_store.once_batch(
        ctx,
        lambda pin: _change(adapter, plan, Operation.DELETE, keys, ctx, pin, lost[0]),
        recover,
    )


async def _change(
    adapter: RecAdapter,
    plan: TemplatePlan,
    operation: Operation,
    records: Sequence[Record],
    ctx: CallContext,
    pin: Callable[[Any], Awaitable[None]] | None,
    pinned: Any,
) -> list[Record | RequestError]:
    """Update or delete the records by key: one find, then one bulk write."""
    template = plan.template
    spec = template.operations[operation]
    version = plan.version_field
    update = operation is Operation.UPDATE
    marker = key_value(ctx) if update and version is not None and adapter._keyed(ctx) else None
    outcomes: list[Record | RequestError | None] = [None] * len(records)
    filters: dict[int, Document] = {}
    for index, record in enumerate(records):
        try:
            filters[index] = plan.key_filter(record)
        except RequestError as exc:
            outcomes[index] = exc
    needed = plan.fields if ctx.journal else (*spec.returns, *template.key)
    projection = plan.projection(needed)
    projection[DOC_ID] = 1
    if version is not None:
        projection[version] = 1
    if marker is not None:
        projection[UPDATES_FIELD] = 1
    lost = pinned if isinstance(pinned, list) and len(pinned) == len(records) else None
    planned: dict[int, Record] = {}  # what each written item answers
    fields = [plan.document_field(name) for name in template.key]
    # Items with the same key run in rounds (the second of them in the second round...), each
    # after the writes of the ones before it: they see what those did, as one after another.
    rounds: list[dict[int, Document]] = []
    seen: dict[tuple[Any, ...], int] = {}
    for index, where in filters.items():
        key = _tuple(where, fields)
        turn = seen[key] = seen.get(key, -1) + 1
        if turn == len(rounds):
            rounds.append({})
        rounds[turn][index] = where
    pins: list[Any] = [None] * len(records)

    async def one_round(
        batch: Mapping[int, Document], session: AsyncClientSession | None
    ) -> list[tuple[int, tuple[Any, Document, Document]]]:
        found = await _find_keys(adapter, plan, batch, projection, ctx, session=session)
        plans: dict[int, tuple[Any, Document, Document]] = {}  # index → (op, before, after)
        for index, where in batch.items():
            document = found.get(index)
            record = records[index]
            pinned_id = None if lost is None else lost[index]
            if pinned_id is not None and (document is None or document[DOC_ID] != pinned_id):
                outcomes[index] = {"deleted": 1}  # the lost attempt deleted it
                pins[index] = pinned_id  # still pinned, should this attempt be lost too
                continue
            if document is None:
                outcomes[index] = _not_found(template)
                continue
            item_marker = None if marker is None else f"{marker}/{index}"
            if item_marker is not None and item_marker in (document.get(UPDATES_FIELD) or ()):
                # A lost attempt of this keyed batch applied this update.
                outcomes[index] = to_record(document, spec.returns, id_mapped=plan.id_mapped)
                continue
            if version is not None and document.get(version) != record.get(version):
                outcomes[index] = _stale(document.get(version))
                continue
            condition = {**where, DOC_ID: document[DOC_ID]}
            if version is not None:
                condition[version] = record.get(version)
            if update:
                made = _update_op(plan, spec.params, record, condition, document, item_marker)
                if isinstance(made, RequestError):
                    outcomes[index] = made
                    continue
                op: UpdateOne | DeleteOne
                op, after = made
                planned[index] = to_record(after, spec.returns, id_mapped=plan.id_mapped)
            else:
                op, after = DeleteOne(condition), document
                planned[index] = {"deleted": 1}
                pins[index] = document[DOC_ID]
            plans[index] = (op, document, after)
        if template.batch.atomic and any(isinstance(o, RequestError) for o in outcomes):
            raise _Rollback  # nothing may be written
        if pin is not None and not update:
            # Keyed: pin each document on the claim first, so that recovery deletes exactly
            # these again (and answers those already gone), never a record created later.
            await pin(pins)
        missed = await _bulk(adapter, plan, plans, outcomes, ctx, session=session)
        if missed:
            if session is not None:  # pragma: no cover - the snapshot cannot change
                raise WriteInDoubt("the batch met a concurrent write in its transaction")
            await _explain(adapter, plan, plans, missed, outcomes, marker, ctx)
        return [(index, plans[index]) for index in plans if outcomes[index] is None]

    async def run(session: AsyncClientSession | None) -> list[Any]:
        for index in filters:  # a transaction the driver retries starts over
            outcomes[index] = None
            pins[index] = None
        planned.clear()
        written = []
        for batch in rounds:
            written += await one_round(batch, session)
        return written

    if template.batch.atomic:
        try:
            written = await _transaction(adapter, plan, ctx, run)
        except (_Rollback, _ItemFailed) as failure:
            if isinstance(failure, _ItemFailed):
                outcomes[failure.index] = _item_error(failure.error, plan)
            # Rolled back: an item that would have succeeded answers as if (the node ignores it);
            # one whose round never ran (after a failing one), an empty record.
            return _complete(
                [planned.get(i, {}) if o is None else o for i, o in enumerate(outcomes)]
            )
    else:
        written = await run(None)
    entries: list[_Entry] = []
    for index, (_, before, after) in written:
        outcomes[index] = planned[index]
        if ctx.journal:
            whole = to_record(before, plan.fields, id_mapped=plan.id_mapped)
            changed = to_record(after, plan.fields, id_mapped=plan.id_mapped) if update else None
            entries.append((index, operation.value, _key(plan, whole), whole, changed))
    await _journal(adapter, plan, entries, ctx)
    return _complete(outcomes)


def _update_op(
    plan: TemplatePlan,
    params: Sequence[str],
    record: Record,
    condition: Document,
    before: Document,
    marker: str | None,
) -> tuple[UpdateOne, Document] | RequestError:
    """The ``UpdateOne`` of one item and the document after it (or the item's error)."""
    template = plan.template
    version = plan.version_field
    sent = [n for n in params if n in record and n not in template.key and n != version]
    try:
        changes = plan.document(sent, record, _PAYLOAD)
    except RequestError as exc:
        return exc
    change: Document = {"$set": changes}  # an empty $set: the update matches and changes nothing
    after = {**before, **changes}
    if version is not None:
        change["$inc"] = {version: 1}
        after[version] = before[version] + 1
    if marker is not None:  # lets a repeat tell this update applied (beds_rec.idempotency)
        change["$push"] = {UPDATES_FIELD: {"$each": [marker], "$slice": -UPDATES_KEPT}}
    return UpdateOne(condition, change), after


async def _bulk(
    adapter: RecAdapter,
    plan: TemplatePlan,
    plans: Mapping[int, tuple[Any, Document, Document]],
    outcomes: list[Record | RequestError | None],
    ctx: CallContext,
    *,
    session: AsyncClientSession | None,
) -> int:
    """One unordered ``bulk_write`` of the planned ops; how many matched nothing."""
    if not plans:
        return 0
    order = list(plans)
    ops = [plans[index][0] for index in order]
    update = isinstance(ops[0], UpdateOne)
    try:
        with database_call(collection=plan.collection, deadline=ctx.deadline):
            result = await adapter._collection(plan).bulk_write(
                ops, ordered=session is not None, session=session
            )
        hit = result.matched_count if update else result.deleted_count
        refused = 0
    except RequestError as exc:
        errors = _write_errors(exc)
        if session is not None and errors:
            position, error = errors[0]
            raise _ItemFailed(order[position], error) from exc
        for position, error in errors:
            outcomes[order[position]] = _item_error(error, plan)
        cause = exc.__cause__
        details = cause.details if isinstance(cause, BulkWriteError) else {}
        hit = int(details.get("nMatched" if update else "nRemoved", 0))
        refused = len(errors)
    return len(ops) - refused - hit


async def _explain(
    adapter: RecAdapter,
    plan: TemplatePlan,
    plans: Mapping[int, tuple[Any, Document, Document]],
    missed: int,
    outcomes: list[Record | RequestError | None],
    marker: str | None,
    ctx: CallContext,
) -> None:
    """Tell which ops matched nothing (a concurrent writer changed their record in between).

    The documents are read again by ``_id``: one that is gone, or (locked) at a version this
    batch did not give it, missed for sure. When those are fewer than the count the server gave,
    the others cannot be told from writes that applied: they are ``WriteInDoubt``.
    """
    version = plan.version_field
    pending = [i for i in plans if outcomes[i] is None]
    ids = list({plans[i][1][DOC_ID] for i in pending})
    projection = {DOC_ID: 1, **({version: 1} if version else {}), UPDATES_FIELD: 1}
    with database_call(collection=plan.collection, deadline=ctx.deadline):
        cursor = adapter._collection(plan).find({DOC_ID: {"$in": ids}}, projection)
        now = {doc[DOC_ID]: doc for doc in await cursor.to_list()}
    unsure: list[int] = []
    for index in pending:
        op, before, after = plans[index]
        document = now.get(before[DOC_ID])
        if isinstance(op, DeleteOne):
            if document is None:  # deleted: by this op, or by the concurrent writer
                unsure.append(index)
                continue
            outcomes[index] = _doubt() if version is None else _stale(document.get(version))
        elif document is None:
            outcomes[index] = _not_found(plan.template)
        elif marker is not None and f"{marker}/{index}" in (document.get(UPDATES_FIELD) or ()):
            continue  # this batch's own update applied
        elif version is not None and document.get(version) != after.get(version):
            outcomes[index] = _stale(document.get(version))
        else:
            unsure.append(index)
            continue
        missed -= 1
    if missed > 0:
        for index in unsure:
            outcomes[index] = _doubt()


# -- fetch_many ----------------------------------------------------------------------------------


async def fetch_many(
    adapter: RecAdapter, template: Template, keys: Sequence[Record], ctx: CallContext
) -> list[Record | None]:
    """Each key's record as the key query answers it, in input order; ``None`` when missing."""
    spec = template.key_query()
    plan = adapter._plan(template)
    shape = plan.queries.get(spec.name) if spec is not None else None
    if shape is None:
        raise UnsupportedOperation(f"template {template.name!r} has no key query")
    secondary = ctx.consistency is Consistency.SECONDARY
    await adapter._reachable(ctx, write=False, secondary=secondary)
    filters = {index: plan.key_filter(key) for index, key in enumerate(keys)}
    projection = plan.projection((*shape.projection, *template.key))
    found = await _find_keys(
        adapter, plan, filters, projection, ctx, session=None, secondary=secondary
    )
    return [
        to_record(found[index], shape.projection, id_mapped=plan.id_mapped)
        if index in found
        else None
        for index in range(len(keys))
    ]


# -- shared ----------------------------------------------------------------------------------------


async def _find_keys(
    adapter: RecAdapter,
    plan: TemplatePlan,
    filters: Mapping[int, Document],
    projection: Mapping[str, int],
    ctx: CallContext,
    *,
    session: AsyncClientSession | None,
    secondary: bool = False,
) -> dict[int, Document]:
    """The document of each item whose key has one: ``find`` by ``$in``, in few round trips."""
    if not filters:
        return {}
    fields = [plan.document_field(name) for name in plan.template.key]
    wanted = {_tuple(where, fields): where for where in filters.values()}
    collection = adapter._collection(plan, secondary=secondary)

    async def find(query: Document) -> list[Document]:
        cursor = collection.find(query, dict(projection), session=session)
        return await cursor.to_list()

    queries = _key_queries(fields, list(wanted.values()))
    with database_call(collection=plan.collection, deadline=ctx.deadline):
        if session is not None or len(queries) == 1:  # a session runs one command at a time
            answers = [await find(query) for query in queries]
        else:
            answers = list(await asyncio.gather(*(find(query) for query in queries)))
    by_key: dict[tuple[Any, ...], Document] = {}
    for document in (document for answer in answers for document in answer):
        key = _tuple(document, fields)
        if key in wanted:  # a compound key's product of $in lists finds others too
            by_key.setdefault(key, document)
    return {
        index: by_key[key]
        for index, where in filters.items()
        if (key := _tuple(where, fields)) in by_key
    }


def _key_queries(fields: Sequence[str], keys: Sequence[Document]) -> list[Document]:
    """The ``find`` filters that together match every key (and, compound, a few others).

    One field: ``$in`` lists of at most :data:`_IN_CHUNK` values, sent at once (SecantusDB's
    time for one ``$in`` grows with the square of its list; MongoDB does not mind). Compound:
    each field's ``$in`` of its distinct values, when their product is small, so that the
    surplus found is small too; else ``$or`` of the keys (which SecantusDB answers by a scan).
    """
    if len(fields) == 1:
        (field,) = fields
        values = [key[field] for key in keys]
        with contextlib.suppress(TypeError):  # sorted: SecantusDB looks them up in order
            values = sorted(values)
        return [
            {field: {"$in": values[start : start + _IN_CHUNK]}}
            for start in range(0, len(values), _IN_CHUNK)
        ]
    distinct = [
        list({_hashable(key[field]): key[field] for key in keys}.values()) for field in fields
    ]
    if math.prod(len(values) for values in distinct) <= _PRODUCT_FACTOR * len(keys):
        return [{field: {"$in": values} for field, values in zip(fields, distinct, strict=True)}]
    return [{"$or": list(keys)}]


def _tuple(document: Mapping[str, Any], fields: Sequence[str]) -> tuple[Any, ...]:
    return tuple(_hashable(document.get(field)) for field in fields)


def _hashable(value: Any) -> Any:
    """A key value as a dictionary key that equals the same value read back from MongoDB."""
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, dict | list):
        return repr(value)
    return value


async def _transaction(
    adapter: RecAdapter,
    plan: TemplatePlan,
    ctx: CallContext,
    work: Callable[[AsyncClientSession], Awaitable[Any]],
) -> Any:
    """Run ``work`` in one transaction (retried by the driver on a transient error)."""
    with database_call(collection=plan.collection, deadline=ctx.deadline):
        async with adapter._mongo_client.start_session() as session:
            return await session.with_transaction(work)


async def _journal(
    adapter: RecAdapter,
    plan: TemplatePlan,
    entries: Sequence[_Entry],
    ctx: CallContext,
) -> None:
    if not ctx.journal or not entries:
        return
    try:
        await adapter._journal_store.append_many(plan.template, entries, ctx)
    except RequestError as exc:
        # The writes applied: never let them pass for ones that changed nothing (as one write).
        raise StoreUnavailable(
            "the batch's writes applied, but their journal entries could not be written",
            details=exc.details,
        ) from exc


def _key(plan: TemplatePlan, record: Record) -> Record:
    return wire_key(plan.template, record)


def _write_errors(exc: RequestError) -> list[tuple[int, Mapping[str, Any]]]:
    """The ``writeErrors`` of a bulk write as (position, error); re-raise anything else.

    A write concern error means the writes applied unacknowledged: the whole batch is in doubt.
    """
    cause = exc.__cause__
    if not isinstance(cause, BulkWriteError):
        raise exc
    details = cause.details or {}
    errors = details.get("writeErrors") or []
    if details.get("writeConcernErrors") or not errors:
        raise exc
    return [(int(error["index"]), error) for error in errors]


def _item_error(error: Mapping[str, Any], plan: TemplatePlan) -> RequestError:
    """The error the single write would have raised for this ``writeErrors`` entry."""
    code = int(error.get("code", 0))
    message = str(error.get("errmsg", ""))
    kind = DuplicateKeyError if code in _DUPLICATE_KEYS else WriteError
    return translate(kind(message, code, dict(error)), collection=plan.collection)


def _on_key_index(error: Mapping[str, Any]) -> bool:
    """Whether a write error is a duplicate ``_beds_key`` (the batch's idempotency marker)."""
    if int(error.get("code", 0)) not in _DUPLICATE_KEYS:
        return False
    pattern = error.get("keyPattern")
    if isinstance(pattern, Mapping) and pattern:
        return KEY_FIELD in pattern
    return KEY_INDEX in str(error.get("errmsg", ""))


def _not_found(template: Template) -> NotFound:
    """The single operation's ``NotFound``."""
    return NotFound(
        f"template {template.name!r}: no record has this key",
        details=[f"{_PAYLOAD}.{name}" for name in template.key],
    )


def _stale(current: Any) -> StaleVersion:
    return StaleVersion(
        "the record changed since it was read", details=(f"current_version: {current}",)
    )


def _doubt() -> WriteInDoubt:
    return WriteInDoubt(
        "a concurrent write changed this record during the batch; whether this item applied "
        "is unknown",
        details=("read the record, then send the item again if needed",),
    )


def _complete(outcomes: list[Record | RequestError | None]) -> list[Record | RequestError]:
    """The outcomes, every item answered (a gap is a bug, never a silent success)."""
    missing = [i for i, outcome in enumerate(outcomes) if outcome is None]
    if missing:  # pragma: no cover - every path answers each item
        raise AssertionError(f"batch items without an outcome: {missing}")
    return [outcome for outcome in outcomes if outcome is not None]


async def _run_again(pinned: Any) -> None:
    """Recovery of a batch that finds its own applied items as it runs: run it again."""
    return None
