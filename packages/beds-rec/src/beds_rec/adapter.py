"""RecAdapter: serves REC templates from MongoDB through pymongo's ``AsyncMongoClient``.

Each template works on the one collection its ``[rec]`` table declares, with the query shapes
its ``[queries]`` declare (see :mod:`beds_rec.bindings`); requests supply values, never shapes.

The ``_id`` rule: ``_id`` is the store's private ``ObjectId`` and is never accepted from a
request. A template that declares a generated field ``id`` gets ``_id`` back as 24 hexadecimal
characters, and may name ``id`` in keys and query filters (invalid text is ``ValidationFailed``).
Any other template never sees ``_id``: every projection excludes it.

Every driver exception is translated at this boundary (:mod:`beds_rec.errors`). Writes with an
idempotency key run at most once (:mod:`beds_rec.idempotency`). The client's options, TLS
included, and the words for a failed connection come from :mod:`beds_rec.connect`.

Template features (:data:`beds.namaste.FEATURES`, docs/rec.md): conditions, order and cursors
become the find's filter and sort (:mod:`beds_rec.queries`); a locked template's update and
delete are conditioned on the version sent (a miss is then looked up: ``StaleVersion`` or
``NotFound``); a journaled template's writes append their entry to ``beds_journal`` right
after the write (:mod:`beds_rec.journal`), with the record before and after taken from the
write itself (``find_one_and_update`` / ``find_one_and_delete`` return the document before);
``consistency = "secondary"`` reads with ``secondaryPreferred``. On a server with ``bulkWrite``
(MongoDB 8.0), a create sends its document, its journal entry and its key's result in one ordered
command (:meth:`RecAdapter._insert_at_once`), and reports the record it stored to an audit
(:func:`beds.namaste.report_created`), which then does not read it back. Batches (feature ``batch``)
are :mod:`beds_rec.batch`. CALGON: the ticket store and the long operations' pipelines are
mixins (:mod:`beds_rec.tickets`, :mod:`beds_rec.long_operations`).

Why this module is long: it is the REC store's whole ``NamasteCore`` (start, verify, the four
operations with locking, journal entries and the recovery of keyed writes, lineage events,
schema apply) over one client; the parts that stand alone (bindings, queries, journal, errors,
idempotency, connecting) have their own modules.
"""

from __future__ import annotations

import contextvars
import time
from typing import TYPE_CHECKING, Any

import attrs
import bson
import pymongo
from bson import ObjectId
from pymongo import AsyncMongoClient, InsertOne, ReadPreference, ReturnDocument, UpdateOne
from pymongo.errors import (
    ClientBulkWriteException,
    ConnectionFailure,
    DuplicateKeyError,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
    WriteError,
)

from beds.envelopes import WRITE_OPERATIONS, Consistency, Operation
from beds.errors import (
    Conflict,
    DatabaseObjectMissing,
    DeadlineExceeded,
    NotFound,
    RequestError,
    StaleVersion,
    StoreUnavailable,
    TemplateError,
    UnsupportedOperation,
)
from beds.namaste import report_created
from beds_rec import batch as batches
from beds_rec import journal as journals
from beds_rec.bindings import CREATED_AT, TemplatePlan, plan_template
from beds_rec.connect import client_options, unreachable
from beds_rec.embedded import open_embedded
from beds_rec.errors import database_call, map_exceptions, translate
from beds_rec.events import COLLECTION as EVENTS_COLLECTION
from beds_rec.events import EventLog
from beds_rec.events import schema_file as events_schema_file
from beds_rec.idempotency import COLLECTION as KEYS_COLLECTION
from beds_rec.idempotency import (
    KEY_FIELD,
    KEY_INDEX,
    TTL_INDEX,
    UPDATES_FIELD,
    UPDATES_KEPT,
    AlreadyApplied,
    Claim,
    KeyStore,
    Pin,
    Recover,
    Write,
    allow_key_field,
    forbids_key_field,
    key_value,
)
from beds_rec.idempotency import schema_file as keys_schema_file
from beds_rec.long_operations import LongOperations
from beds_rec.migrations import MigrationsMixin
from beds_rec.migrations import schema_file as migrations_schema_file
from beds_rec.queries import find_filter, find_sort
from beds_rec.schema import apply_collection, parse_schema_file
from beds_rec.settings import parse_settings
from beds_rec.tickets import RecTickets
from beds_rec.tickets import schema_files as tickets_schema_files
from beds_rec.values import CODEC_OPTIONS, DOC_ID, to_record, utc_now

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from pymongo.asynchronous.collection import AsyncCollection
    from pymongo.asynchronous.database import AsyncDatabase

    from beds.namaste import CallContext, Query, Record, SchemaFile, StoreSettings
    from beds.templates.model import OperationSpec, Template

__all__ = ("RecAdapter",)

Document = dict[str, Any]


class RecAdapter(RecTickets, LongOperations, MigrationsMixin):
    """The REC store adapter (a :class:`beds.namaste.NamasteCore`).

    Args:
        settings: the ``[stores.rec]`` table (see :mod:`beds_rec.settings`).

    Raises:
        ConfigError: invalid settings, or an embedded server that cannot be used.
    """

    store = "rec"
    features: frozenset[str] = frozenset(
        {"locking", "journal", "pagination", "filters", "long_operations", "batch"}
    )
    """Every template feature (:data:`beds.namaste.FEATURES`); docs/rec.md says how each maps
    to MongoDB, and where the journal differs (its entry follows the write, not atomically)."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = parse_settings(settings)
        self._embedded = (
            open_embedded(
                self.settings.embedded_path,
                production=settings.production,
                store=settings.store,
                file=settings.file,
            )
            if self.settings.embedded
            else None
        )
        self._client: AsyncMongoClient[Document] | None = None
        self._db: AsyncDatabase[Document] | None = None
        self._collections: dict[str, AsyncCollection[Document]] = {}
        self._secondaries: dict[str, AsyncCollection[Document]] = {}
        self._plans: dict[str, TemplatePlan] = {}
        self._keys: KeyStore | None = None
        self._events: EventLog | None = None
        self._journal: journals.Journal | None = None
        self.idempotent_writes = self.settings.idempotency
        """Whether writes honour idempotency keys (``[stores.rec] idempotency``)."""
        self.transactions = False
        """Whether the server has multi-document transactions (a replica set or a sharded
        cluster; learnt at start): all-or-nothing batches need them (:mod:`beds_rec.batch`)."""
        self.bulk_writes = False
        """Whether the server has the client-level ``bulkWrite`` command (MongoDB 8.0, wire
        version 25; learnt at start): a create then writes in one command."""

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> RecAdapter:
        """Build the adapter from the ``[stores.rec]`` table (the registered factory).

        Raises:
            ConfigError: the table is invalid; the message names the key.
        """
        return cls(settings)

    def prepare(self, template: Template) -> None:
        """Check the template's ``[rec]`` table and query shapes, and keep its plan."""
        self._plans[template.name] = plan_template(template)
        self._prepare_long_operations(template)  # beds_rec.long_operations

    async def start(self) -> None:
        """Start the embedded server if configured, connect, and ping the server.

        Raises:
            StoreUnavailable: the server cannot be reached within ``server_selection_timeout``;
                ``details`` say why for each server (:func:`beds_rec.connect.unreachable`).
        """
        if self._client is not None:
            return
        try:
            uri = self.settings.uri
            if uri is None and self._embedded is not None:
                try:
                    uri = await self._embedded.start()
                except StoreUnavailable:
                    raise
                except Exception as exc:
                    raise StoreUnavailable(
                        "the embedded MongoDB server did not start",
                        details=[f"error: {type(exc).__name__}"],
                    ) from exc
            with map_exceptions():
                self._client = AsyncMongoClient(uri, **self._client_options())
                try:
                    hello = await self._client.admin.command("hello")
                except ServerSelectionTimeoutError as exc:
                    # Say why (a refused certificate, a plaintext server), not "unreachable".
                    raise unreachable(self._client, self.settings) from exc
            # A replica set member names its set; mongos says isdbgrid: both have transactions.
            self.transactions = bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"
            self.bulk_writes = int(hello.get("maxWireVersion") or 0) >= _BULK_WRITE_WIRE_VERSION
            self._db = self._client.get_database(
                self.settings.database, codec_options=CODEC_OPTIONS
            )
            self._keys = KeyStore(self._db[KEYS_COLLECTION])
            self._events = EventLog(self._db[EVENTS_COLLECTION])
            self._journal = journals.Journal(self._db[journals.COLLECTION])
        except BaseException:
            await self.aclose()
            raise

    def _client_options(self) -> dict[str, Any]:
        """The client's keyword arguments (:func:`beds_rec.connect.client_options`).

        A method so that a test can listen to the commands the adapter sends.
        """
        return client_options(self.settings)

    async def optional_checks(self) -> list[tuple[str, str | None]]:
        """IPL's optional checks: none, the REC store has no optional parts."""
        return []

    async def verify(self, template: Template) -> None:
        """Check that the template's collection and declared indexes exist.

        With idempotency keys, also the keys collection, the key index and a validator that
        lets the marker fields through; with a journal, ``beds_journal`` and its indexes; with
        long operations, the collections their pipelines read (:mod:`beds_rec.long_operations`).
        The ticket store's objects are checked by ``verify_tickets`` (:mod:`beds_rec.tickets`).

        Raises:
            DatabaseObjectMissing: ``details`` names each missing collection and index.
        """
        plan = self._plan(template)
        database = self._database
        with map_exceptions(collection=plan.collection):
            found = [
                info
                async for info in await database.list_collections(filter={"name": plan.collection})
            ]
            indexes: set[str] = set()
            if found:
                cursor = await database[plan.collection].list_indexes()
                indexes = {str(index["name"]) async for index in cursor}
        missing = [] if found else [plan.collection]
        missing += [name for name in plan.indexes if name not in indexes]
        if self.idempotent_writes and not WRITE_OPERATIONS.isdisjoint(template.operations):
            missing += await self._missing_keys_objects()
            if Operation.CREATE in template.operations and found and KEY_INDEX not in indexes:
                missing.append(f"{plan.collection}.{KEY_INDEX}")
            validator = (found[0].get("options") or {}).get("validator") if found else None
            missing += [
                f"{plan.collection} validator property {field}"
                for field in self._marker_fields(plan)
                if forbids_key_field(validator, field)
            ]
        if template.capabilities.journal:
            missing += await self._missing_journal_objects()
        missing += await self._missing_long_operation_objects(template)
        if template.batch.atomic and not self.transactions:
            raise UnsupportedOperation(batches.needs_transactions(template))
        if missing:
            raise DatabaseObjectMissing(
                f"template {template.name!r}: declared MongoDB objects are missing "
                f"from database {database.name!r}",
                details=list(dict.fromkeys(missing)),  # a collection a pipeline reads: once
            )

    async def _missing_keys_objects(self) -> list[str]:
        database = self._database
        with map_exceptions(collection=KEYS_COLLECTION):
            if not await database.list_collection_names(filter={"name": KEYS_COLLECTION}):
                return [KEYS_COLLECTION]
            cursor = await database[KEYS_COLLECTION].list_indexes()
            indexes = {str(index["name"]) async for index in cursor}
        return [] if TTL_INDEX in indexes else [TTL_INDEX]

    async def _missing_journal_objects(self) -> list[str]:
        database, name = self._database, journals.COLLECTION
        with map_exceptions(collection=name):
            if not await database.list_collection_names(filter={"name": name}):
                return [name]
            cursor = await database[name].list_indexes()
            indexes = {str(index["name"]) async for index in cursor}
        wanted = (journals.EVENT_INDEX, journals.KEY_INDEX)
        return [f"{name}.{index}" for index in wanted if index not in indexes]

    async def _reachable(self, ctx: CallContext, *, write: bool, secondary: bool = False) -> None:
        """Fail fast (``StoreUnavailable``, retried) while the driver knows no usable server.

        Under a request's deadline pymongo would wait the whole remaining time to select a
        server, turning every outage into ``DeadlineExceeded``; a ping bounded by
        ``server_selection_timeout`` tells an unreachable server apart first. Costs nothing while
        a server is known.
        """
        if ctx.deadline is not None and ctx.deadline <= time.time():
            raise DeadlineExceeded("the request's deadline passed before the database call")
        client = self._client
        if client is None:
            raise StoreUnavailable("the REC store is not started")
        topology = client.topology_description
        preference = ReadPreference.SECONDARY_PREFERRED if secondary else ReadPreference.PRIMARY
        if topology.has_writable_server() if write else topology.has_readable_server(preference):
            return
        limit = self.settings.server_selection_timeout
        if ctx.deadline is not None:
            limit = min(limit, max(0.001, ctx.deadline - time.time()))
        with map_exceptions(deadline=ctx.deadline), pymongo.timeout(limit):
            await client.admin.command("ping")

    async def _write(
        self, ctx: CallContext, write: Write, recover: Recover | None = None
    ) -> Record:
        """Run a write: at most once per idempotency key when the request has one.

        ``write`` gets the claim's pin when keyed, else ``None``; ``recover`` tells whether a
        lost attempt's write applied (:mod:`beds_rec.idempotency`); without one, the write is
        idempotent in its effect and simply runs again.
        """
        await self._reachable(ctx, write=True)
        if not self._keyed(ctx):
            return await write(None)
        if self._keys is None:
            raise StoreUnavailable("the REC store is not started")
        return await self._keys.once(ctx, write, recover or _runs_again)

    async def create(self, template: Template, record: Record, ctx: CallContext) -> Record:
        """Insert the record (stamping ``created_at`` and the version); return ``returns``."""
        return await self._write(
            ctx,
            lambda claim: self._create_claimed(template, record, ctx, claim),
            lambda pinned: self._created(template, ctx),
        )

    async def _create_claimed(
        self, template: Template, record: Record, ctx: CallContext, claim: Claim | None
    ) -> Record:
        """:meth:`_create` with the key's claim, which it may complete in its own command."""
        token = _CLAIM.set(claim)
        try:
            return await self._create(template, record, ctx)
        finally:
            _CLAIM.reset(token)

    async def _create(self, template: Template, record: Record, ctx: CallContext) -> Record:
        """Insert the record (with its entry, and its key's result when it holds the claim)."""
        claim = _CLAIM.get()
        plan = self._plan(template)
        spec = self._operation(template, Operation.CREATE)
        document = plan.document(spec.params, record, "$.payload")
        if plan.stamps_created_at:
            document[CREATED_AT] = utc_now()
        if plan.version_field is not None:
            document[plan.version_field] = 1
        keyed = self._keyed(ctx)
        if keyed:
            # In the same insert: a later attempt can see whether this one applied.
            document[KEY_FIELD] = key_value(ctx)
        document[DOC_ID] = ObjectId()  # made here, as the driver would: the result is known now
        result = to_record(document, spec.returns, id_mapped=plan.id_mapped)
        try:
            if self.bulk_writes and (claim is not None or ctx.journal):
                await self._insert_at_once(plan, document, result, ctx, claim)
            else:
                with database_call(collection=plan.collection, deadline=ctx.deadline):
                    await self._collection(plan).insert_one(document)
                if ctx.journal:
                    await self._journal_entry(plan, Operation.CREATE, None, document, ctx)
        except Conflict as exc:
            if keyed and _on_key_index(exc.__cause__):
                raise AlreadyApplied from exc
            raise
        self._report_created(plan, document)
        return result

    async def _insert_at_once(
        self,
        plan: TemplatePlan,
        document: Document,
        result: Record,
        ctx: CallContext,
        claim: Claim | None,
    ) -> None:
        """Insert ``document``, then its journal entry, then its key's result: one command.

        An ordered ``bulkWrite`` runs each write only if the ones before it applied, so the key
        never records a result, nor the journal an entry, for a document that is not there. What
        failed after the insert is handled as a separate call's failure would be: the entry of
        the same event already there is no failure (the key's result is then recorded by the
        key store); any other failure leaves the claim without a result, in doubt, for the
        repeat to recover (:mod:`beds_rec.idempotency`).

        Raises:
            Conflict: the insert met a unique index (``_beds_key``: an earlier attempt's).
            StoreUnavailable: the insert applied, but not its entry or its key's result.
        """
        models: list[InsertOne[Document] | UpdateOne] = [
            InsertOne(document, namespace=self._collection(plan).full_name)
        ]
        journal = self._journal_store
        entry_at = completion_at = None
        if ctx.journal:
            after = to_record(document, plan.fields, id_mapped=plan.id_mapped)
            key = journals.wire_key(plan.template, after)
            entry = journal.entry(plan.template, Operation.CREATE.value, key, None, after, ctx)
            entry_at = len(models)
            models.append(InsertOne(entry, namespace=journal.namespace))
        if claim is not None:
            completion_at = len(models)
            models.append(UpdateOne(*claim.completion(result), namespace=claim.namespace))
        with database_call(collection=plan.collection, deadline=ctx.deadline):
            try:
                await self._mongo_client.bulk_write(models, ordered=True)
            except ClientBulkWriteException as exc:
                at, error = _bulk_error(exc)
                if at == 0 or (at is None and _unanswered(error)):
                    raise error from exc  # the insert's own failure; a timeout, a lost server
                if at is None:  # refused whole, or failed part way: which writes applied?
                    raise StoreUnavailable(
                        "the MongoDB server did not tell whether the write applied",
                        details=translate(error, collection=plan.collection).details,
                    ) from error
                if at == entry_at and isinstance(error, DuplicateKeyError):
                    return  # this event's entry is there already; the key store records it
                where = "its journal entry" if at == entry_at else "its idempotency key's result"
                raise StoreUnavailable(
                    f"the write applied, but {where} could not be written",
                    details=translate(error, collection=plan.collection).details,
                ) from error
        if claim is not None and completion_at is not None:
            claim.completed = True

    def _report_created(self, plan: TemplatePlan, document: Mapping[str, Any]) -> None:
        """Tell an audit the record just stored, as the key query reads it back."""
        read = self.as_read(plan)
        if read is not None:
            report_created(plan.template.name, lambda: read(document))

    def as_read(self, plan: TemplatePlan) -> Callable[[Mapping[str, Any]], Record] | None:
        """What the template's key query would read of a stored document (``None``: no such query).

        The document goes through BSON and back first (what the server keeps: dates to the
        millisecond, in UTC), so the record is the one a read would give.
        """
        spec = plan.template.key_query()
        shape = None if spec is None else plan.queries.get(spec.name)
        if shape is None:
            return None
        projection, id_mapped = shape.projection, plan.id_mapped
        return lambda document: to_record(
            bson.decode(bson.encode(document), codec_options=_DECODE),
            projection,
            id_mapped=id_mapped,
        )

    async def _created(self, template: Template, ctx: CallContext) -> Record | None:
        """The result of a lost keyed create if it applied (its document holds the key)."""
        plan = self._plan(template)
        spec = self._operation(template, Operation.CREATE)
        with database_call(collection=plan.collection, deadline=ctx.deadline):
            document = await self._collection(plan).find_one({KEY_FIELD: key_value(ctx)})
        if document is None:
            return None
        if ctx.journal:  # the lost attempt may have stopped before its entry (a repeat adds none)
            await self._journal_entry(plan, Operation.CREATE, None, document, ctx)
        self._report_created(plan, document)
        return to_record(document, spec.returns, id_mapped=plan.id_mapped)

    async def fetch(self, template: Template, query: Query, ctx: CallContext) -> list[Record]:
        """Run a declared query: its conditions after its cursor, in its order, at most ``limit``.

        ``query.consistency`` ``secondary`` reads with ``secondaryPreferred`` (a replica set's
        secondary when one answers, else the primary).
        """
        secondary = query.consistency is Consistency.SECONDARY
        await self._reachable(ctx, write=False, secondary=secondary)
        plan = self._plan(template)
        shape = plan.queries.get(query.spec.name)
        if shape is None:
            raise UnsupportedOperation(
                f"template {template.name!r} has no query {query.spec.name!r}"
            )
        filter_ = find_filter(plan, shape, query)
        with database_call(collection=plan.collection, deadline=ctx.deadline):
            cursor = self._collection(plan, secondary=secondary).find(
                filter_,
                plan.projection(shape.projection),
                sort=find_sort(plan, shape),
                limit=query.limit,
            )
            documents = await cursor.to_list()
        return [to_record(doc, shape.projection, id_mapped=plan.id_mapped) for doc in documents]

    async def create_many(
        self, template: Template, records: Sequence[Record], ctx: CallContext
    ) -> list[Record | RequestError]:
        """Insert the records in one ``insert_many`` (:mod:`beds_rec.batch`); one entry each."""
        return await batches.create_many(self, template, records, ctx)

    async def update_many(
        self, template: Template, records: Sequence[Record], ctx: CallContext
    ) -> list[Record | RequestError]:
        """Update the records by key: one ``find``, one ``bulk_write`` (:mod:`beds_rec.batch`)."""
        return await batches.update_many(self, template, records, ctx)

    async def delete_many(
        self, template: Template, keys: Sequence[Record], ctx: CallContext
    ) -> list[Record | RequestError]:
        """Delete the keys' records: one ``find``, one ``bulk_write`` (:mod:`beds_rec.batch`)."""
        return await batches.delete_many(self, template, keys, ctx)

    async def fetch_many(
        self, template: Template, keys: Sequence[Record], ctx: CallContext
    ) -> list[Record | None]:
        """Each key's record through the key query, by ``$in`` (:mod:`beds_rec.batch`)."""
        return await batches.fetch_many(self, template, keys, ctx)

    async def read_journal(
        self, template: Template, key: Record, *, limit: int, after: tuple[Any, ...] | None
    ) -> list[Record]:
        """The journal entries of the record with ``key`` (:class:`beds.namaste.JournalStore`)."""
        return await self._journal_store.read(template, key, limit=limit, after=after)

    async def update(self, template: Template, record: Record, ctx: CallContext) -> Record:
        """``$set`` the sent non-key fields of the record with the key; return ``returns``.

        A locked template's record changes only at the version sent, and its version goes up.

        Raises:
            StaleVersion: (locked) the record has another version; nothing was written.
            NotFound: no record has the key.
        """
        locked = self._plan(template).version_field is not None
        return await self._write(
            ctx,
            lambda pin: self._update(template, record, ctx),
            (lambda pinned: self._updated(template, record, ctx)) if locked else None,
        )

    async def _update(self, template: Template, record: Record, ctx: CallContext) -> Record:
        plan = self._plan(template)
        spec = self._operation(template, Operation.UPDATE)
        version = plan.version_field
        where = plan.key_filter(record)
        sent = [
            name
            for name in spec.params
            if name in record and name not in template.key and name != version
        ]
        changes = plan.document(sent, record, "$.payload")
        change: dict[str, Any] = {"$set": changes} if changes else {}
        if version is not None:
            where[version] = record.get(version)
            change["$inc"] = {version: 1}
            if self._keyed(ctx):  # lets recovery tell this update applied (beds_rec.idempotency)
                marker = {"$each": [key_value(ctx)], "$slice": -UPDATES_KEPT}
                change["$push"] = {UPDATES_FIELD: marker}
        collection = self._collection(plan)
        # What the answer takes from the document (the journal: all of it), as it was before.
        needed = plan.fields if ctx.journal else (*spec.returns, *_only(version))
        projection = plan.projection(needed)
        with database_call(collection=plan.collection, deadline=ctx.deadline):
            if change:
                # The document before, in the same atomic step: the journal's exact "before".
                before = await collection.find_one_and_update(
                    where, change, projection=projection, return_document=ReturnDocument.BEFORE
                )
            else:
                before = await collection.find_one(where, projection)
        if before is None:
            raise await self._missed(plan, record, ctx)
        after = {**before, **changes}
        if version is not None:
            after[version] = before[version] + 1
        if ctx.journal:
            await self._journal_entry(plan, Operation.UPDATE, before, after, ctx)
        return to_record(after, spec.returns, id_mapped=plan.id_mapped)

    async def _updated(self, template: Template, record: Record, ctx: CallContext) -> Record | None:
        """The result of a lost keyed update of a locked record, if it applied.

        Its document holds the update's ``key_value`` in ``_beds_updates`` (pushed with the
        version bump); without it, the update did not apply and is run now (``None``).
        """
        plan = self._plan(template)
        spec = self._operation(template, Operation.UPDATE)
        where = {**plan.key_filter(record), UPDATES_FIELD: key_value(ctx)}
        with database_call(collection=plan.collection, deadline=ctx.deadline):
            document = await self._collection(plan).find_one(where, plan.projection(plan.fields))
        if document is None:
            return None
        return to_record(document, spec.returns, id_mapped=plan.id_mapped)

    async def delete(self, template: Template, key: Record, ctx: CallContext) -> Record:
        """Delete the record with the key (at the version sent, if locked): ``{"deleted": 1}``.

        Raises:
            StaleVersion: (locked) the record has another version; nothing was deleted.
            NotFound: no record has the key.
        """
        return await self._write(
            ctx,
            lambda pin: self._delete(template, key, ctx, pin),
            lambda pinned: self._deleted_again(template, key, ctx, pinned),
        )

    async def _delete(
        self, template: Template, key: Record, ctx: CallContext, pin: Pin | None
    ) -> Record:
        plan = self._plan(template)
        self._operation(template, Operation.DELETE)
        version = plan.version_field
        where = plan.key_filter(key)
        collection = self._collection(plan)
        with database_call(collection=plan.collection, deadline=ctx.deadline):
            if pin is not None:
                # Keyed: pin the document on the claim first, so that recovery deletes this
                # document again and never one created later with the same key.
                found = await collection.find_one(where, {DOC_ID: 1, **_only(version)})
                if found is None:
                    raise self._not_found(template)
                if version is not None and found.get(version) != key.get(version):
                    raise _stale(found.get(version))  # nothing pinned, nothing written
                await pin(found[DOC_ID])
                where = {**where, DOC_ID: found[DOC_ID]}
            if version is not None:
                where[version] = key.get(version)
            projection = plan.projection(plan.fields) if ctx.journal else {DOC_ID: 1}
            before = await collection.find_one_and_delete(where, projection=projection)
        if before is None:
            raise await self._missed(plan, key, ctx)
        if ctx.journal:
            await self._journal_entry(plan, Operation.DELETE, before, None, ctx)
        return {"deleted": 1}

    async def _deleted_again(
        self, template: Template, key: Record, ctx: CallContext, pinned: Any
    ) -> Record | None:
        """Recover a lost keyed delete: delete the document it pinned, if it is still there.

        Without a pin the lost attempt deleted nothing (it pins first): run it (``None``). A
        locked record still there at another version was not deleted either: run it (then it
        is ``StaleVersion``).
        """
        if pinned is None:
            return None
        plan = self._plan(template)
        version = plan.version_field
        where = {**plan.key_filter(key), DOC_ID: pinned}
        if version is not None:
            where[version] = key.get(version)
        collection = self._collection(plan)
        with database_call(collection=plan.collection, deadline=ctx.deadline):
            before = await collection.find_one_and_delete(
                where, projection=plan.projection(plan.fields)
            )
            still_there = before is None and version is not None
            if still_there and await collection.find_one({DOC_ID: pinned}, {DOC_ID: 1}):
                return None
        if before is not None and ctx.journal:  # deleted now, by this attempt
            await self._journal_entry(plan, Operation.DELETE, before, None, ctx)
        return {"deleted": 1}  # by this attempt or the lost one: the outcome the first one had

    async def _missed(
        self, plan: TemplatePlan, key: Record, ctx: CallContext
    ) -> NotFound | Conflict:
        """Why a conditioned update or delete matched nothing: a stale version, or no record."""
        version = plan.version_field
        if version is None:
            return self._not_found(plan.template)
        with database_call(collection=plan.collection, deadline=ctx.deadline):
            current = await self._collection(plan).find_one(
                plan.key_filter(key), {DOC_ID: 0, version: 1}
            )
        if current is None:
            return self._not_found(plan.template)
        return _stale(current.get(version))

    async def _journal_entry(
        self,
        plan: TemplatePlan,
        operation: Operation,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        ctx: CallContext,
    ) -> None:
        """Append the entry of a write that applied; ``before``/``after`` are documents."""
        records = [
            None if doc is None else to_record(doc, plan.fields, id_mapped=plan.id_mapped)
            for doc in (before, after)
        ]
        whole = records[1] if records[1] is not None else records[0]
        key = journals.wire_key(plan.template, whole or {})
        try:
            await self._journal_store.append(
                plan.template, operation.value, key, records[0], records[1], ctx
            )
        except RequestError as exc:
            # The write applied: never let it pass for one that changed nothing. Transient, so
            # a keyed write keeps its claim (the repeat recovers) and a keyless one is in doubt.
            raise StoreUnavailable(
                "the write applied, but its journal entry could not be written",
                details=exc.details,
            ) from exc

    async def store_events(self, events: Sequence[dict[str, Any]]) -> None:
        """Keep lineage events in ``msLogs`` (the admin node's logs broker; :mod:`beds.lineage`)."""
        await self._event_log.store(events)

    async def find_events(
        self, *, event_ids: Sequence[str] = (), parent_ids: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """Lineage events by id and by parent, oldest first."""
        return await self._event_log.find(event_ids=event_ids, parent_ids=parent_ids)

    async def purge_events(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` lineage events older than ``before`` (Unix time), oldest first.

        One batch of the logs broker's purge (``lineage.retention_days``).
        """
        return await self._event_log.purge(before, limit)

    @property
    def _event_log(self) -> EventLog:
        if self._events is None:
            raise StoreUnavailable("the REC store is not started")
        return self._events

    @property
    def _key_store(self) -> KeyStore:
        if self._keys is None:
            raise StoreUnavailable("the REC store is not started")
        return self._keys

    @property
    def _mongo_client(self) -> AsyncMongoClient[Document]:
        if self._client is None:
            raise StoreUnavailable("the REC store is not started")
        return self._client

    @property
    def _journal_store(self) -> journals.Journal:
        if self._journal is None:
            raise StoreUnavailable("the REC store is not started")
        return self._journal

    async def apply_schema(self, files: Sequence[SchemaFile]) -> list[str]:
        """Create or update the collections, validators and indexes the files declare.

        Returns:
            The names of the files applied, in order.

        Raises:
            TemplateError: a file that is not a valid REC schema file (``*.json``).
        """
        # `beds schema apply` calls this without start(): connect for the duration if needed.
        started_here = self._client is None
        if started_here:
            await self.start()
        try:
            database = self._database
            applied: list[str] = []
            own = [
                *([keys_schema_file()] if self.idempotent_writes else []),
                events_schema_file(),
                journals.schema_file(),
                *tickets_schema_files(),
                migrations_schema_file(),  # the record of migrations (beds_rec.migrations)
            ]
            marked = self._marked_collections()
            for file in [*own, *files]:
                if not file.name.endswith(".json"):
                    raise TemplateError("REC schema files must be *.json", template=file.name)
                schema = parse_schema_file(file)
                if schema.collection in marked:  # keyed writes mark documents: allow the fields
                    allowed = allow_key_field(schema.validator, marked[schema.collection])
                    schema = attrs.evolve(schema, validator=allowed)
                with map_exceptions(collection=schema.collection):
                    await apply_collection(database, schema)
                applied.append(file.name)
            if self.idempotent_writes:
                applied += await self._apply_key_indexes(database)
            return applied
        finally:
            if started_here:
                await self.aclose()

    def _marker_fields(self, plan: TemplatePlan) -> tuple[str, ...]:
        """The fields keyed writes of the template store in its documents (idempotency)."""
        if not self.idempotent_writes:
            return ()
        operations = plan.template.operations
        fields: tuple[str, ...] = (KEY_FIELD,) if Operation.CREATE in operations else ()
        if plan.version_field is not None and Operation.UPDATE in operations:
            fields += (UPDATES_FIELD,)
        return fields

    def _marked_collections(self) -> dict[str, tuple[str, ...]]:
        """Collection → the marker fields keyed writes store in its documents."""
        marked: dict[str, tuple[str, ...]] = {}
        for plan in self._plans.values():
            for field in self._marker_fields(plan):
                if field not in marked.get(plan.collection, ()):
                    marked[plan.collection] = (*marked.get(plan.collection, ()), field)
        return marked

    def _keyed_collections(self) -> set[str]:
        """The collections keyed creates write to (they store ``_beds_key``)."""
        if not self.idempotent_writes:
            return set()
        return {
            plan.collection
            for plan in self._plans.values()
            if Operation.CREATE in plan.template.operations
        }

    async def _apply_key_indexes(self, database: AsyncDatabase[Document]) -> list[str]:
        """The unique sparse ``_beds_key`` index of every collection a keyed create writes to."""
        applied = []
        for collection in sorted(self._keyed_collections()):
            with map_exceptions(collection=collection):
                await database[collection].create_index(
                    [(KEY_FIELD, 1)], name=KEY_INDEX, unique=True, sparse=True
                )
            applied.append(f"{collection}.{KEY_INDEX}")
        return applied

    async def aclose(self) -> None:
        """Close the client, then stop the embedded server; safe to call twice."""
        client, self._client, self._db = self._client, None, None
        self._keys = self._events = None
        self._journal = None
        self._collections.clear()
        self._secondaries.clear()
        try:
            if client is not None:
                await client.close()
        finally:
            if self._embedded is not None:
                await self._embedded.stop()

    # -- helpers ---------------------------------------------------------------------------

    def _keyed(self, ctx: CallContext) -> bool:
        return ctx.idempotency_key is not None and self.idempotent_writes

    def _plan(self, template: Template) -> TemplatePlan:
        plan = self._plans.get(template.name)
        if plan is None or plan.template is not template:
            plan = self._plans[template.name] = plan_template(template)
        return plan

    @property
    def _database(self) -> AsyncDatabase[Document]:
        if self._db is None:
            raise StoreUnavailable("the REC store is not started")
        return self._db

    def _collection(
        self, plan: TemplatePlan, *, secondary: bool = False
    ) -> AsyncCollection[Document]:
        """The template's collection; ``secondary``: reading with ``secondaryPreferred``."""
        collection = self._collections.get(plan.collection)
        if collection is None:
            collection = self._collections[plan.collection] = self._database[plan.collection]
        if not secondary:
            return collection
        replica = self._secondaries.get(plan.collection)
        if replica is None:
            replica = collection.with_options(read_preference=ReadPreference.SECONDARY_PREFERRED)
            self._secondaries[plan.collection] = replica
        return replica

    @staticmethod
    def _operation(template: Template, operation: Operation) -> OperationSpec:
        spec = template.operations.get(operation)
        if spec is None:
            raise UnsupportedOperation(
                f"template {template.name!r} does not support {operation.value}"
            )
        return spec

    @staticmethod
    def _not_found(template: Template) -> NotFound:
        return NotFound(
            f"template {template.name!r}: no record has this key",
            details=[f"$.payload.{name}" for name in template.key],
        )


_CLAIM: contextvars.ContextVar[Claim | None] = contextvars.ContextVar(
    "beds_rec_claim", default=None
)
"""The claim of the keyed create running in this task (:meth:`RecAdapter._create_claimed`)."""
_DECODE: Any = CODEC_OPTIONS
"""How a stored document reads back (typed loosely: ``bson.decode`` wants a Mapping class)."""
_BULK_WRITE_WIRE_VERSION = 25
"""The wire version of MongoDB 8.0, whose servers have the client-level ``bulkWrite``."""


def _bulk_error(exc: ClientBulkWriteException) -> tuple[int | None, PyMongoError]:
    """Which write of an ordered ``bulkWrite`` failed (``None``: unknown) and its error.

    A write error names its write (an ordered bulk has at most one). A top-level error (the
    connection, a timeout, a refused command) or a write concern error leaves the outcome
    unknown: the error is returned as it is, so that the key store keeps its claim.
    """
    errors: list[Any] = list(exc.write_errors or [])  # documents, whatever the stubs say
    if errors:
        error = dict(errors[0])
        code = int(error.get("code") or 0)
        kind = DuplicateKeyError if code == _DUPLICATE_KEY else WriteError
        return int(error.get("idx") or 0), kind(str(error.get("errmsg", "")), code, error)
    top = exc.error
    if isinstance(top, PyMongoError):
        return None, top
    concern: list[Any] = list(exc.write_concern_errors or [])
    if concern:
        first = dict(concern[0])
        return None, WriteConcernError(str(first.get("errmsg", "")), first.get("code"), first)
    return None, exc


_DUPLICATE_KEY = 11000


def _unanswered(error: PyMongoError) -> bool:
    """Whether an error is a timeout or a lost server (the errors module's unknown outcomes)."""
    return bool(error.timeout) or isinstance(error, ConnectionFailure)


def _only(field: str | None) -> dict[str, int]:
    """A projection naming ``field``, if there is one."""
    return {} if field is None else {field: 1}


def _stale(current: Any) -> StaleVersion:
    return StaleVersion(
        "the record changed since it was read", details=(f"current_version: {current}",)
    )


async def _runs_again(pinned: Any) -> None:
    """Recovery of a write that is idempotent in its effect: nothing to find, run it again."""
    return None


def _on_key_index(exc: BaseException | None) -> bool:
    """Whether a duplicate-key error is on ``_beds_key`` (the create's idempotency key)."""
    if not isinstance(exc, DuplicateKeyError):
        return False
    details = exc.details or {}
    pattern = details.get("keyPattern")
    if isinstance(pattern, dict) and pattern:
        return KEY_FIELD in pattern
    return KEY_INDEX in str(details.get("errmsg", ""))
