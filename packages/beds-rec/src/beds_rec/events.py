"""The admin node's lineage store: ``msLogs``, one document per event (``_id`` = event id).

beds-rec's own collection (``schema_files/001_beds_mslogs.json``, created by ``beds schema
apply``), indexed by parent for reading a tree back level by level, and by time (``at``) for
purging old events (``lineage.retention_days``). Storing a batch twice (a redelivered logs
message) keeps one copy of each event: duplicate ids are ignored.
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

__all__ = ("AT_INDEX", "COLLECTION", "EventLog", "schema_file")

COLLECTION = "msLogs"
AT_INDEX = "msLogs_at"
"""The index on ``at`` (the schema file's) that a purge reads old events by."""
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

    async def purge(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` events whose ``at`` is before ``before``, oldest first.

        One bounded batch: the ids of the oldest events (read by ``at``'s index), then a delete
        of those ids. The logs broker calls it in a loop with pauses (:mod:`beds.broker.logs`).

        Args:
            before: a Unix time (seconds); older events go.
            limit: the most events deleted, at least 1.

        Returns:
            How many events were deleted (fewer than ``limit``: none older is left, unless
            another node purged some of the same at the same time).

        Raises:
            ValueError: ``limit`` is below 1 (MongoDB reads a limit of 0 as none).
            RequestError: the server refused or failed a command (:mod:`beds_rec.errors`).
        """
        if limit < 1:
            raise ValueError(f"a purge deletes at least one event, not {limit}")
        with map_exceptions(collection=COLLECTION):
            cursor = self.collection.find(
                {"at": {"$lt": before}}, {"_id": 1}, sort=[("at", 1)], limit=limit, hint=AT_INDEX
            )
            ids = [document["_id"] for document in await cursor.to_list()]
            if not ids:
                return 0
            deleted = await self.collection.delete_many({"_id": {"$in": ids}})
        return deleted.deleted_count


def schema_file() -> SchemaFile:
    """The schema file that creates ``msLogs`` and its indexes."""
    name = "001_beds_mslogs.json"
    text = resources.files("beds_rec").joinpath("schema_files", name).read_text("utf-8")
    return SchemaFile(name=f"beds_rec/schema_files/{name}", text=text, distribution="beds-rec")
