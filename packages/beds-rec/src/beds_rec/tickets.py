"""The REC ticket store (CALGON): tickets and their results in two beds-rec collections.

``beds_tickets`` holds one document per ticket (``_id`` = the ticket id), ``beds_ticket_results``
one per result record (``{ticket, step, idx, record}``, ``_id`` = ``"{ticket}/{step}/{idx}"``).
Both are beds-rec's own objects (``schema_files/003_beds_tickets.json`` and
``004_beds_ticket_results.json``, installed by ``beds schema apply``), with the indexes:

* ``beds_tickets_submit_uq``, unique and sparse on ``submit_key`` = ``{principal, key}``, which
  only keyed tickets have: one ticket per (principal, key), an anonymous principal (null)
  included, and any number of unkeyed ones (:meth:`RecTickets.record_ticket`);
* ``beds_tickets_lane_claim_ix`` on (lane, state, lease_until, created_at), for claims, which
  take only the tickets of the worker's lane (:mod:`beds.calgon.lanes`). A ticket recorded
  before lanes existed has no ``lane`` field and is on the ``default`` lane;
* ``beds_tickets_expiry_ix`` on ``expires_at``, for the purge (not a TTL index: an expired
  ticket answers ``BEDS-410`` until it is purged, with its results);
* ``beds_ticket_results_uq``, unique on (ticket, step, idx), for reading results in order.

A standalone MongoDB server has no multi-document transactions, so each method is one atomic
single-document change, and the one that writes many documents (:meth:`RecTickets.save_step`)
is made safe to repeat instead. Times are BSON dates (millisecond precision, UTC).
"""

from __future__ import annotations

import datetime as dt
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, Protocol, overload

from pymongo import ReplaceOne, ReturnDocument
from pymongo.errors import DuplicateKeyError

from beds.calgon.tickets import DEFAULT_LANE, Ticket, TicketState
from beds.errors import Conflict, DatabaseObjectMissing
from beds.namaste import SchemaFile
from beds_rec.errors import map_exceptions

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pymongo.asynchronous.database import AsyncDatabase

    from beds.calgon.tickets import ResultRow
    from beds.namaste import Record

__all__ = (
    "CLAIM_INDEX",
    "EXPIRY_INDEX",
    "RESULTS",
    "RESULTS_INDEX",
    "SUBMIT_INDEX",
    "TICKETS",
    "RecTickets",
    "schema_files",
)

TICKETS: Final = "beds_tickets"
RESULTS: Final = "beds_ticket_results"
SUBMIT_INDEX: Final = "beds_tickets_submit_uq"
CLAIM_INDEX: Final = "beds_tickets_lane_claim_ix"
EXPIRY_INDEX: Final = "beds_tickets_expiry_ix"
RESULTS_INDEX: Final = "beds_ticket_results_uq"
_INDEXES: Final = {TICKETS: (SUBMIT_INDEX, CLAIM_INDEX, EXPIRY_INDEX), RESULTS: (RESULTS_INDEX,)}
_SCHEMAS: Final = ("003_beds_tickets.json", "004_beds_ticket_results.json")
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_UNFINISHED: Final = [TicketState.QUEUED.value, TicketState.RUNNING.value]

Document = dict[str, Any]


def schema_files() -> list[SchemaFile]:
    """The schema files that create the two ticket collections and their indexes."""
    folder = resources.files("beds_rec").joinpath("schema_files")
    return [
        SchemaFile(
            name=f"beds_rec/schema_files/{name}",
            text=folder.joinpath(name).read_text("utf-8"),
            distribution="beds-rec",
        )
        for name in _SCHEMAS
    ]


class _Adapter(Protocol):
    """What the mixin uses of the adapter."""

    @property
    def _database(self) -> AsyncDatabase[Document]: ...


class RecTickets:
    """The adapter's :class:`beds.calgon.tickets.TicketStore` (a mixin of RecAdapter)."""

    async def verify_tickets(self: _Adapter) -> None:
        """Check both ticket collections and their indexes exist.

        Raises:
            DatabaseObjectMissing: ``details`` names each missing collection and index.
        """
        database, missing = self._database, list[str]()
        for name, indexes in _INDEXES.items():
            with map_exceptions(collection=name):
                if not await database.list_collection_names(filter={"name": name}):
                    missing.append(name)
                    continue
                found = {str(index["name"]) async for index in await database[name].list_indexes()}
            missing += [f"{name}.{index}" for index in indexes if index not in found]
        if missing:
            raise DatabaseObjectMissing(
                f"the ticket store's MongoDB objects are missing from database {database.name!r}",
                details=missing,
            )

    async def record_ticket(self: _Adapter, ticket: Ticket) -> tuple[Ticket, bool]:
        """Insert a new ticket; a keyed one the principal recorded before is answered instead.

        The unique ``submit_key`` index decides between concurrent submits with one key.
        """
        tickets = self._database[TICKETS]
        try:
            with map_exceptions(collection=TICKETS):
                await tickets.insert_one(_document(ticket))
        except Conflict as exc:
            if ticket.idempotency_key is None or not isinstance(exc.__cause__, DuplicateKeyError):
                raise
            with map_exceptions(collection=TICKETS):
                held = await tickets.find_one({"submit_key": _submit_key(ticket)})
            if held is None:  # the duplicate was the ticket id itself
                raise
            return _ticket(held), False
        return ticket, True

    async def read_ticket(self: _Adapter, ticket_id: str) -> Ticket | None:
        """The ticket, or ``None``."""
        with map_exceptions(collection=TICKETS):
            found = await self._database[TICKETS].find_one({"_id": ticket_id})
        return None if found is None else _ticket(found)

    async def claim_ticket(
        self: _Adapter, owner: str, lease: float, now: float, lane: str = DEFAULT_LANE
    ) -> Ticket | None:
        """Take the oldest queued ticket of ``lane``, or running one whose lease lapsed.

        In one change: ``find_one_and_update`` matches and changes one document atomically, so
        two claimers never get the same ticket. An update pipeline keeps the first
        ``started_at``.
        """
        # A ticket recorded before lanes existed has no lane field: it is a default-lane one.
        lanes = [lane, None] if lane == DEFAULT_LANE else [lane]
        waiting = {
            "lane": {"$in": lanes},
            "$or": [
                {"state": TicketState.QUEUED.value},
                {"state": TicketState.RUNNING.value, "lease_until": {"$lt": _date(now)}},
            ],
        }
        claim = {
            "state": TicketState.RUNNING.value,
            "lease_owner": {"$literal": owner},  # a pipeline reads "$…" text as a field
            "lease_until": _date(now + lease),
            "attempts": {"$add": ["$attempts", 1]},
            "started_at": {"$ifNull": ["$started_at", _date(now)]},
        }
        with map_exceptions(collection=TICKETS):
            claimed = await self._database[TICKETS].find_one_and_update(
                waiting,
                [{"$set": claim}],
                sort=[("created_at", 1), ("_id", 1)],
                return_document=ReturnDocument.AFTER,
            )
        return None if claimed is None else _ticket(claimed)

    async def renew_lease(
        self: _Adapter, ticket_id: str, owner: str, lease: float, now: float
    ) -> Ticket | None:
        """Extend ``owner``'s lease to ``now + lease``; ``None``: it no longer holds it."""
        with map_exceptions(collection=TICKETS):
            renewed = await self._database[TICKETS].find_one_and_update(
                _held(ticket_id, owner),
                {"$set": {"lease_until": _date(now + lease)}},
                return_document=ReturnDocument.AFTER,
            )
        return None if renewed is None else _ticket(renewed)

    async def save_step(
        self: _Adapter,
        ticket_id: str,
        owner: str,
        step: int,
        records: Sequence[Record],
        now: float,
    ) -> bool:
        """Keep step ``step``'s records and count it done, if ``owner`` holds the ticket there.

        Three changes, safe in any interleaving with a crash: the records are upserted under
        ids made of (ticket, step, index), rows an earlier try of the step left beyond this
        try's count are deleted, and only then ``steps_done`` moves on, conditioned on the
        owner and the step. A try that stopped before the last change left rows the next try
        overwrites, and :meth:`read_results` never shows a step that is not done. The lease is
        checked first, so a node that lost the ticket does not write its rows (unless it stalls
        for a whole lease between that check and its write).
        """
        held = {**_held(ticket_id, owner), "steps_done": step}
        tickets, results = self._database[TICKETS], self._database[RESULTS]
        with map_exceptions(collection=TICKETS):
            if await tickets.find_one(held, {"_id": 1}) is None:
                return False
        with map_exceptions(collection=RESULTS):
            if records:
                await results.bulk_write(
                    [
                        ReplaceOne(
                            {"_id": f"{ticket_id}/{step}/{index}"},
                            {
                                "ticket": ticket_id,
                                "step": step,
                                "idx": index,
                                "record": dict(record),
                            },
                            upsert=True,
                        )
                        for index, record in enumerate(records)
                    ],
                    ordered=False,
                )
            await results.delete_many(
                {"ticket": ticket_id, "step": step, "idx": {"$gte": len(records)}}
            )
        with map_exceptions(collection=TICKETS):
            done = await tickets.update_one(held, {"$set": {"steps_done": step + 1}})
        return done.matched_count == 1

    async def finish_ticket(
        self: _Adapter,
        ticket_id: str,
        owner: str | None,
        state: TicketState,
        error: Mapping[str, Any] | None,
        now: float,
        expires_at: float,
    ) -> bool:
        """Put an unfinished ticket in ``state`` (with ``owner``: only if it holds the lease)."""
        where = (
            _held(ticket_id, owner)
            if owner is not None
            else {"_id": ticket_id, "state": {"$in": _UNFINISHED}}
        )
        change = {
            "state": state.value,
            "error": None if error is None else dict(error),
            "finished_at": _date(now),
            "expires_at": _date(expires_at),
            "lease_owner": "",
            "lease_until": None,
        }
        with map_exceptions(collection=TICKETS):
            done = await self._database[TICKETS].update_one(where, {"$set": change})
        return done.matched_count == 1

    async def cancel_ticket(
        self: _Adapter, ticket_id: str, now: float, expires_at: float
    ) -> Ticket | None:
        """Cancel a queued ticket, or ask a running one to stop; return it after the change.

        Each try is one conditional change; a ticket claimed or finished between them is met
        by the next one.
        """
        tickets = self._database[TICKETS]
        with map_exceptions(collection=TICKETS):
            changed = await tickets.find_one_and_update(
                {"_id": ticket_id, "state": TicketState.QUEUED.value},
                {
                    "$set": {
                        "state": TicketState.CANCELLED.value,
                        "finished_at": _date(now),
                        "expires_at": _date(expires_at),
                    }
                },
                return_document=ReturnDocument.AFTER,
            )
            if changed is None:
                changed = await tickets.find_one_and_update(
                    {"_id": ticket_id, "state": TicketState.RUNNING.value},
                    {"$set": {"cancel_requested": True}},
                    return_document=ReturnDocument.AFTER,
                )
            if changed is None:
                changed = await tickets.find_one({"_id": ticket_id})
        return None if changed is None else _ticket(changed)

    async def read_results(
        self: _Adapter, ticket_id: str, after: tuple[int, int] | None, limit: int
    ) -> list[ResultRow]:
        """Up to ``limit`` records of the steps done, in (step, index) order, after ``after``."""
        with map_exceptions(collection=TICKETS):
            ticket = await self._database[TICKETS].find_one({"_id": ticket_id}, {"steps_done": 1})
        if ticket is None or limit <= 0:
            return []
        where: Document = {"ticket": ticket_id, "step": {"$lt": ticket["steps_done"]}}
        if after is not None:
            step, index = after
            where["$or"] = [{"step": {"$gt": step}}, {"step": step, "idx": {"$gt": index}}]
        with map_exceptions(collection=RESULTS):
            cursor = self._database[RESULTS].find(
                where,
                {"_id": 0, "step": 1, "idx": 1, "record": 1},
                sort=[("ticket", 1), ("step", 1), ("idx", 1)],
                limit=limit,
            )
            rows = await cursor.to_list()
        return [(row["step"], row["idx"], row["record"]) for row in rows]

    async def purge_tickets(self: _Adapter, now: float, limit: int) -> int:
        """Delete up to ``limit`` tickets that expired before ``now``, their results first.

        Results go first, so a purge that stops half-way leaves expired tickets (purged next
        time), never results without their ticket.
        """
        tickets = self._database[TICKETS]
        expired = {"expires_at": {"$lt": _date(now)}}
        with map_exceptions(collection=TICKETS):
            found = await tickets.find(expired, {"_id": 1}, limit=limit).to_list()
        ids = [document["_id"] for document in found]
        if not ids:
            return 0
        with map_exceptions(collection=RESULTS):
            await self._database[RESULTS].delete_many({"ticket": {"$in": ids}})
        with map_exceptions(collection=TICKETS):
            deleted = await tickets.delete_many({**expired, "_id": {"$in": ids}})
        return deleted.deleted_count


def _held(ticket_id: str, owner: str) -> Document:
    """The filter of a ticket ``owner`` runs."""
    return {"_id": ticket_id, "state": TicketState.RUNNING.value, "lease_owner": owner}


def _submit_key(ticket: Ticket) -> Document:
    """The value of the unique ``submit_key`` index: its fields in a fixed order."""
    return {"principal": ticket.principal, "key": ticket.idempotency_key}


def _document(ticket: Ticket) -> Document:
    """The ticket as stored."""
    document: Document = {
        "_id": ticket.ticket_id,
        "template": ticket.template,
        "operation": ticket.operation,
        "params": dict(ticket.params),
        "state": ticket.state.value,
        "principal": ticket.principal,
        "fingerprint": ticket.fingerprint,
        "event_id": ticket.event_id,
        "depth": ticket.depth,
        "steps": ticket.steps,
        "lane": ticket.lane,
        "steps_done": ticket.steps_done,
        "attempts": ticket.attempts,
        "cancel_requested": ticket.cancel_requested,
        "lease_owner": ticket.lease_owner,
        "lease_until": _date(ticket.lease_until),
        "created_at": _date(ticket.created_at),
        "started_at": _date(ticket.started_at),
        "finished_at": _date(ticket.finished_at),
        "expires_at": _date(ticket.expires_at),
        "error": None if ticket.error is None else dict(ticket.error),
    }
    if ticket.idempotency_key is not None:  # only keyed tickets are in the sparse index
        document["submit_key"] = _submit_key(ticket)
    return document


def _ticket(document: Mapping[str, Any]) -> Ticket:
    """A stored ticket."""
    submitted = document.get("submit_key")
    return Ticket(
        ticket_id=document["_id"],
        template=document["template"],
        operation=document["operation"],
        params=document["params"],
        state=TicketState(document["state"]),
        principal=document["principal"],
        idempotency_key=None if submitted is None else submitted["key"],
        fingerprint=document["fingerprint"],
        event_id=document["event_id"],
        depth=document["depth"],
        steps=document["steps"],
        lane=document.get("lane") or DEFAULT_LANE,
        steps_done=document["steps_done"],
        attempts=document["attempts"],
        cancel_requested=document["cancel_requested"],
        lease_owner=document["lease_owner"],
        lease_until=_seconds(document.get("lease_until")),
        created_at=_seconds(document["created_at"]),
        started_at=_seconds(document.get("started_at")),
        finished_at=_seconds(document.get("finished_at")),
        expires_at=_seconds(document.get("expires_at")),
        error=document.get("error"),
    )


@overload
def _date(seconds: float) -> dt.datetime: ...
@overload
def _date(seconds: float | None) -> dt.datetime | None: ...
def _date(seconds: float | None) -> dt.datetime | None:
    """Unix seconds as a BSON date, rounded to the millisecond BSON keeps."""
    if seconds is None:
        return None
    return _EPOCH + dt.timedelta(milliseconds=round(seconds * 1000))


@overload
def _seconds(date: dt.datetime) -> float: ...
@overload
def _seconds(date: dt.datetime | None) -> float | None: ...
def _seconds(date: dt.datetime | None) -> float | None:
    """A BSON date as Unix seconds."""
    if date is None:
        return None
    aware = date if date.tzinfo is not None else date.replace(tzinfo=dt.UTC)
    return (aware - _EPOCH).total_seconds()
