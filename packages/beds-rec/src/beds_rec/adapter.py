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

Why this module is long: it is the REC store's whole ``NamasteCore`` (start, verify, the four
operations with the recovery of keyed writes, lineage events, schema apply) over one client;
the parts that stand alone (bindings, errors, idempotency, connecting) have their own modules.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import attrs
import pymongo
from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError, ServerSelectionTimeoutError

from beds.envelopes import WRITE_OPERATIONS, Operation
from beds.errors import (
    Conflict,
    DatabaseObjectMissing,
    DeadlineExceeded,
    NotFound,
    StoreUnavailable,
    TemplateError,
    UnsupportedOperation,
)
from beds_rec.bindings import CREATED_AT, TemplatePlan, plan_template
from beds_rec.connect import client_options, unreachable
from beds_rec.embedded import open_embedded
from beds_rec.errors import database_call, map_exceptions
from beds_rec.events import COLLECTION as EVENTS_COLLECTION
from beds_rec.events import EventLog
from beds_rec.events import schema_file as events_schema_file
from beds_rec.idempotency import COLLECTION as KEYS_COLLECTION
from beds_rec.idempotency import (
    KEY_FIELD,
    KEY_INDEX,
    TTL_INDEX,
    AlreadyApplied,
    KeyStore,
    Pin,
    Recover,
    Write,
    allow_key_field,
    forbids_key_field,
    key_value,
)
from beds_rec.idempotency import schema_file as keys_schema_file
from beds_rec.schema import apply_collection, parse_schema_file
from beds_rec.settings import parse_settings
from beds_rec.values import CODEC_OPTIONS, DOC_ID, to_record, utc_now

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pymongo.asynchronous.collection import AsyncCollection
    from pymongo.asynchronous.database import AsyncDatabase

    from beds.namaste import CallContext, Query, Record, SchemaFile, StoreSettings
    from beds.templates.model import OperationSpec, Template

__all__ = ("RecAdapter",)

Document = dict[str, Any]


class RecAdapter:
    """The REC store adapter (a :class:`beds.namaste.NamasteCore`).

    Args:
        settings: the ``[stores.rec]`` table (see :mod:`beds_rec.settings`).

    Raises:
        ConfigError: invalid settings, or an embedded server that cannot be used.
    """

    store = "rec"
    features: frozenset[str] = frozenset()
    """No template features beyond CRUD yet (:data:`beds.namaste.FEATURES`): templates that
    need one are refused when the node starts."""

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
        self._plans: dict[str, TemplatePlan] = {}
        self._keys: KeyStore | None = None
        self._events: EventLog | None = None
        self.idempotent_writes = self.settings.idempotency
        """Whether writes honour idempotency keys (``[stores.rec] idempotency``)."""

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
                self._client = AsyncMongoClient(uri, **client_options(self.settings))
                try:
                    await self._client.admin.command("ping")
                except ServerSelectionTimeoutError as exc:
                    # Say why (a refused certificate, a plaintext server), not "unreachable".
                    raise unreachable(self._client, self.settings) from exc
            self._db = self._client.get_database(
                self.settings.database, codec_options=CODEC_OPTIONS
            )
            self._keys = KeyStore(self._db[KEYS_COLLECTION])
            self._events = EventLog(self._db[EVENTS_COLLECTION])
        except BaseException:
            await self.aclose()
            raise

    async def optional_checks(self) -> list[tuple[str, str | None]]:
        """IPL's optional checks: none, the REC store has no optional parts."""
        return []

    async def verify(self, template: Template) -> None:
        """Check that the template's collection and declared indexes exist.

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
            if Operation.CREATE in template.operations and found:
                if KEY_INDEX not in indexes:
                    missing.append(f"{plan.collection}.{KEY_INDEX}")
                validator = (found[0].get("options") or {}).get("validator")
                if forbids_key_field(validator):
                    missing.append(f"{plan.collection} validator property {KEY_FIELD}")
        if missing:
            raise DatabaseObjectMissing(
                f"template {template.name!r}: declared MongoDB objects are missing "
                f"from database {database.name!r}",
                details=missing,
            )

    async def _missing_keys_objects(self) -> list[str]:
        database = self._database
        with map_exceptions(collection=KEYS_COLLECTION):
            if not await database.list_collection_names(filter={"name": KEYS_COLLECTION}):
                return [KEYS_COLLECTION]
            cursor = await database[KEYS_COLLECTION].list_indexes()
            indexes = {str(index["name"]) async for index in cursor}
        return [] if TTL_INDEX in indexes else [TTL_INDEX]

    async def _reachable(self, ctx: CallContext, *, write: bool) -> None:
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
        if topology.has_writable_server() if write else topology.has_readable_server():
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
        """Insert the record (stamping ``created_at`` if generated); return ``returns``."""
        return await self._write(
            ctx,
            lambda pin: self._create(template, record, ctx),
            lambda pinned: self._created(template, ctx),
        )

    async def _create(self, template: Template, record: Record, ctx: CallContext) -> Record:
        plan = self._plan(template)
        spec = self._operation(template, Operation.CREATE)
        document = plan.document(spec.params, record, "$.payload")
        if plan.stamps_created_at:
            document[CREATED_AT] = utc_now()
        keyed = self._keyed(ctx)
        if keyed:
            # In the same insert: a later attempt can see whether this one applied.
            document[KEY_FIELD] = key_value(ctx)
        try:
            with database_call(collection=plan.collection, deadline=ctx.deadline):
                result = await self._collection(plan).insert_one(document)
        except Conflict as exc:
            if keyed and _on_key_index(exc.__cause__):
                raise AlreadyApplied from exc
            raise
        document[DOC_ID] = result.inserted_id
        return to_record(document, spec.returns, id_mapped=plan.id_mapped)

    async def _created(self, template: Template, ctx: CallContext) -> Record | None:
        """The result of a lost keyed create if it applied (its document holds the key)."""
        plan = self._plan(template)
        spec = self._operation(template, Operation.CREATE)
        with database_call(collection=plan.collection, deadline=ctx.deadline):
            document = await self._collection(plan).find_one({KEY_FIELD: key_value(ctx)})
        if document is None:
            return None
        return to_record(document, spec.returns, id_mapped=plan.id_mapped)

    async def fetch(self, template: Template, query: Query, ctx: CallContext) -> list[Record]:
        """Run a declared query: equality filter, projection, sort, at most ``query.limit``."""
        await self._reachable(ctx, write=False)
        plan = self._plan(template)
        shape = plan.queries.get(query.spec.name)
        if shape is None:
            raise UnsupportedOperation(
                f"template {template.name!r} has no query {query.spec.name!r}"
            )
        filter_ = plan.document(shape.filter, query.params, "$.payload.params")
        sort = [(plan.document_field(name), direction) for name, direction in shape.sort]
        with database_call(collection=plan.collection, deadline=ctx.deadline):
            cursor = self._collection(plan).find(
                filter_, plan.projection(shape.projection), sort=sort or None, limit=query.limit
            )
            documents = await cursor.to_list()
        return [to_record(doc, shape.projection, id_mapped=plan.id_mapped) for doc in documents]

    async def update(self, template: Template, record: Record, ctx: CallContext) -> Record:
        """``$set`` the sent non-key fields of the record with the key; return ``returns``.

        Raises:
            NotFound: no record has the key.
        """
        return await self._write(ctx, lambda pin: self._update(template, record, ctx))

    async def _update(self, template: Template, record: Record, ctx: CallContext) -> Record:
        plan = self._plan(template)
        spec = self._operation(template, Operation.UPDATE)
        where = plan.key_filter(record)
        sent = [name for name in spec.params if name in record and name not in template.key]
        changes = plan.document(sent, record, "$.payload")
        projection = plan.projection(spec.returns) if spec.returns else {DOC_ID: 1}
        collection = self._collection(plan)
        with database_call(collection=plan.collection, deadline=ctx.deadline):
            if changes:
                document = await collection.find_one_and_update(
                    where,
                    {"$set": changes},
                    projection=projection,
                    return_document=ReturnDocument.AFTER,
                )
            else:
                document = await collection.find_one(where, projection)
        if document is None:
            raise self._not_found(template)
        return to_record(document, spec.returns, id_mapped=plan.id_mapped)

    async def delete(self, template: Template, key: Record, ctx: CallContext) -> Record:
        """Delete the record with the key and return ``{"deleted": 1}``.

        Raises:
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
        where = plan.key_filter(key)
        collection = self._collection(plan)
        with database_call(collection=plan.collection, deadline=ctx.deadline):
            if pin is not None:
                # Keyed: pin the document on the claim first, so that recovery deletes this
                # document again and never one created later with the same key.
                found = await collection.find_one(where, {DOC_ID: 1})
                if found is None:
                    raise self._not_found(template)
                await pin(found[DOC_ID])
                where = {**where, DOC_ID: found[DOC_ID]}
            result = await collection.delete_one(where)
        if result.deleted_count == 0:
            raise self._not_found(template)
        return {"deleted": result.deleted_count}

    async def _deleted_again(
        self, template: Template, key: Record, ctx: CallContext, pinned: Any
    ) -> Record | None:
        """Recover a lost keyed delete: delete the document it pinned, if it is still there.

        Without a pin the lost attempt deleted nothing (it pins first): run it (``None``).
        """
        if pinned is None:
            return None
        plan = self._plan(template)
        where = {**plan.key_filter(key), DOC_ID: pinned}
        with database_call(collection=plan.collection, deadline=ctx.deadline):
            await self._collection(plan).delete_one(where)
        return {"deleted": 1}  # by this attempt or the lost one: the outcome the first one had

    async def store_events(self, events: Sequence[dict[str, Any]]) -> None:
        """Keep lineage events in ``msLogs`` (the admin node's logs broker; :mod:`beds.lineage`)."""
        await self._event_log.store(events)

    async def find_events(
        self, *, event_ids: Sequence[str] = (), parent_ids: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """Lineage events by id and by parent, oldest first."""
        return await self._event_log.find(event_ids=event_ids, parent_ids=parent_ids)

    @property
    def _event_log(self) -> EventLog:
        if self._events is None:
            raise StoreUnavailable("the REC store is not started")
        return self._events

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
            own = [*([keys_schema_file()] if self.idempotent_writes else []), events_schema_file()]
            keyed = self._keyed_collections()
            for file in [*own, *files]:
                if not file.name.endswith(".json"):
                    raise TemplateError("REC schema files must be *.json", template=file.name)
                schema = parse_schema_file(file)
                if schema.collection in keyed:  # keyed creates store _beds_key: allow it
                    schema = attrs.evolve(schema, validator=allow_key_field(schema.validator))
                with map_exceptions(collection=schema.collection):
                    await apply_collection(database, schema)
                applied.append(file.name)
            if self.idempotent_writes:
                applied += await self._apply_key_indexes(database)
            return applied
        finally:
            if started_here:
                await self.aclose()

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
        self._collections.clear()
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

    def _collection(self, plan: TemplatePlan) -> AsyncCollection[Document]:
        collection = self._collections.get(plan.collection)
        if collection is None:
            collection = self._collections[plan.collection] = self._database[plan.collection]
        return collection

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
