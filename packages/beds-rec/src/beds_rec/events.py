"""The admin node's lineage store: ``msLogs``, one document per event (``_id`` = event id).

beds-rec's own collection (``schema_files/001_beds_mslogs.json``, created by ``beds schema
apply``), indexed by parent for reading a tree back level by level. Storing a batch twice (a
redelivered logs message) keeps one copy of each event: duplicate ids are ignored.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

from pymongo.errors import BulkWriteError

from beds.namaste import SchemaFile
from beds_rec.errors import map_exceptions

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pymongo.asynchronous.collection import AsyncCollection

__all__ = ("COLLECTION", "EventLog", "schema_file")

COLLECTION = "msLogs"
_DUPLICATE_KEY = 11000


class EventLog:
    """Lineage events in one database's ``msLogs`` collection."""

    def __init__(self, collection: AsyncCollection[dict[str, Any]]) -> None:
        self.collection = collection

    async def store(self, events: Sequence[dict[str, Any]]) -> None:
        """Insert the events; ones already stored are left as they are."""
        if not events:
            return
        documents = [{"_id": event["event_id"], **event} for event in events]
        with map_exceptions(collection=COLLECTION):
            try:
                await self.collection.insert_many(documents, ordered=False)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if any(error.get("code") != _DUPLICATE_KEY for error in errors):
                    raise

    async def find(
        self, *, event_ids: Sequence[str] = (), parent_ids: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """The events with these ids and the children of ``parent_ids``, oldest first."""
        clauses: list[dict[str, Any]] = []
        if event_ids:
            clauses.append({"_id": {"$in": list(event_ids)}})
        if parent_ids:
            clauses.append({"parent_id": {"$in": list(parent_ids)}})
        if not clauses:
            return []
        query = clauses[0] if len(clauses) == 1 else {"$or": clauses}
        with map_exceptions(collection=COLLECTION):
            cursor = self.collection.find(query, {"_id": 0}, sort=[("at", 1)])
            return await cursor.to_list()


def schema_file() -> SchemaFile:
    """The schema file that creates ``msLogs`` and its indexes."""
    name = "001_beds_mslogs.json"
    text = resources.files("beds_rec").joinpath("schema_files", name).read_text("utf-8")
    return SchemaFile(name=f"beds_rec/schema_files/{name}", text=text, distribution="beds-rec")
