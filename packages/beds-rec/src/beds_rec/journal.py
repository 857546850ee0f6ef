"""The journal of journaled REC templates: one ``beds_journal`` entry per write, never changed.

beds-rec's own collection (``schema_files/002_beds_journal.json``, installed by ``beds schema
apply``; the node verifies it at start when it serves a journaled template). An entry is::

    {template, event_id, operation, key, before, after, principal, origin, at}

``key``, ``before`` and ``after`` are wire records (JSON-safe: datetimes and decimals as text,
``id`` as its 24 hexadecimal characters), ``at`` a BSON date. The unique index
``beds_journal_event_uq`` on (template, event_id) makes a write run again for the same event add
no second entry; ``beds_journal_key_ix`` on (template, key, at, event_id) serves the ``history``
query, oldest first and paged by (at, event_id). A batch appends one entry per written item in
one insert, each with the event id ``<event_id>/<index>`` (:meth:`Journal.append_many`).

Not atomic with the write: a standalone MongoDB server has no multi-document transactions, so
the adapter appends the entry right after the write it describes (docs/rec.md, "Journal").
"""

from __future__ import annotations

import datetime as dt
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from pymongo.errors import BulkWriteError, DuplicateKeyError

from beds.errors import Conflict, MalformedRequest, StoreError
from beds.namaste import SchemaFile
from beds.values import to_wire, to_wire_record
from beds_rec.errors import database_call
from beds_rec.values import utc_now

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pymongo.asynchronous.collection import AsyncCollection

    from beds.namaste import CallContext, Record
    from beds.templates.model import Template

__all__ = ("COLLECTION", "EVENT_INDEX", "KEY_INDEX", "Journal", "schema_file", "wire_key")

COLLECTION: Final = "beds_journal"
EVENT_INDEX: Final = "beds_journal_event_uq"
KEY_INDEX: Final = "beds_journal_key_ix"
_SCHEMA: Final = "002_beds_journal.json"
_DUPLICATE_KEY: Final = 11000
_RETURNED: Final = {
    "_id": 0,
    "event_id": 1,
    "operation": 1,
    "key": 1,
    "before": 1,
    "after": 1,
    "principal": 1,
    "origin": 1,
    "at": 1,
}


def schema_file() -> SchemaFile:
    """The schema file that creates the journal collection and its two indexes."""
    text = resources.files("beds_rec").joinpath("schema_files", _SCHEMA).read_text("utf-8")
    return SchemaFile(name=f"beds_rec/schema_files/{_SCHEMA}", text=text, distribution="beds-rec")


def wire_key(template: Template, record: Mapping[str, Any]) -> Record:
    """The key of ``record`` as entries store it: wire values, in the template's key order.

    MongoDB compares embedded documents field by field in order, so the order is part of it.
    """
    return {name: to_wire(record.get(name)) for name in template.key}


class Journal:
    """The journal entries of one database."""

    def __init__(self, collection: AsyncCollection[dict[str, Any]]) -> None:
        self.collection = collection

    async def append(
        self,
        template: Template,
        operation: str,
        key: Record,
        before: Record | None,
        after: Record | None,
        ctx: CallContext,
    ) -> None:
        """Append the entry of a write that applied; a repeat of its event adds nothing."""
        entry = self.entry(template, operation, key, before, after, ctx)
        try:
            # Without the request's deadline: the write it describes applied already, and its
            # entry matters more than a reply that may come late (as the key's result record).
            with database_call(collection=COLLECTION, deadline=None):
                await self.collection.insert_one(entry)
        except Conflict as exc:
            if isinstance(exc.__cause__, DuplicateKeyError):
                return  # the same event's write ran again (a redelivery): its entry exists
            raise

    @staticmethod
    def entry(
        template: Template,
        operation: str,
        key: Record,
        before: Record | None,
        after: Record | None,
        ctx: CallContext,
    ) -> dict[str, Any]:
        """The entry document of one write (a keyed create sends it in its own ``bulkWrite``)."""
        return {
            "template": template.name,
            "event_id": ctx.event_id,
            "operation": operation,
            "key": key,
            "before": None if before is None else to_wire_record(before),
            "after": None if after is None else to_wire_record(after),
            "principal": ctx.identity.handle if ctx.identity is not None else None,
            "origin": ctx.origin,
            "at": utc_now(),
        }

    @property
    def namespace(self) -> str:
        """``database.beds_journal`` (for a client-level bulk)."""
        return self.collection.full_name

    async def append_many(
        self,
        template: Template,
        entries: Sequence[tuple[int, str, Record, Record | None, Record | None]],
        ctx: CallContext,
    ) -> None:
        """Append a batch's entries in one insert: ``(index, operation, key, before, after)``.

        Each entry's event id is ``f"{ctx.event_id}/{index}"``; those a run of the same batch
        appended before are left as they are (the batch's writes ran again).
        """
        if not entries:
            return
        now = utc_now()
        principal = ctx.identity.handle if ctx.identity is not None else None
        documents = [
            {
                "template": template.name,
                "event_id": f"{ctx.event_id}/{index}",
                "operation": operation,
                "key": key,
                "before": None if before is None else to_wire_record(before),
                "after": None if after is None else to_wire_record(after),
                "principal": principal,
                "origin": ctx.origin,
                "at": now,
            }
            for index, operation, key, before, after in entries
        ]
        try:
            with database_call(collection=COLLECTION, deadline=None):
                await self.collection.insert_many(documents, ordered=False)
        except StoreError as exc:
            cause = exc.__cause__
            details = (cause.details or {}) if isinstance(cause, BulkWriteError) else {}
            errors = details.get("writeErrors") or []
            # Only entries of this batch's events already there: a run again of its writes.
            if details.get("writeConcernErrors") or not errors:
                raise
            if any(error.get("code") != _DUPLICATE_KEY for error in errors):
                raise

    async def read(
        self, template: Template, key: Record, *, limit: int, after: tuple[Any, ...] | None
    ) -> list[Record]:
        """Entries of the record with ``key``, by (at, event_id), strictly after ``after``.

        Raises:
            MalformedRequest: ``after`` is not an (at, event_id) position.
        """
        where: dict[str, Any] = {"template": template.name, "key": wire_key(template, key)}
        if after is not None:
            at, event_id = _position(after)
            where["$or"] = [{"at": {"$gt": at}}, {"at": at, "event_id": {"$gt": event_id}}]
        with database_call(collection=COLLECTION, deadline=None):
            cursor = self.collection.find(
                where, _RETURNED, sort=[("at", 1), ("event_id", 1)], limit=limit
            )
            entries = await cursor.to_list()
        return [_entry(entry) for entry in entries]


def _entry(document: Mapping[str, Any]) -> Record:
    """An entry as the JournalStore protocol answers it (``at`` as ISO 8601 text)."""
    return {name: to_wire(document.get(name)) for name in _RETURNED if name != "_id"}


def _position(after: tuple[Any, ...]) -> tuple[dt.datetime, str]:
    """The (at, event_id) of a history cursor; ``at`` is its ISO text or a datetime."""
    at, event_id = after if len(after) == 2 else (None, None)
    try:
        when = at if isinstance(at, dt.datetime) else dt.datetime.fromisoformat(str(at))
    except ValueError:
        when = None
    if when is None or not isinstance(event_id, str):
        raise MalformedRequest(
            "bad cursor", details=("$.payload.cursor: is not a position in a journal",)
        )
    return (when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)), event_id
