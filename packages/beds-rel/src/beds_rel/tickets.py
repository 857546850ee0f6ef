"""CALGON tickets on MariaDB: the REL adapter's :class:`~beds.calgon.tickets.TicketStore`.

The objects are beds-rel's own (``sql/002_beds_tickets.sql``, applied by ``beds schema apply``):
tables ``beds_tickets`` and ``beds_ticket_results``, the view ``beds_tickets_v`` and one
``beds_ticket_*`` procedure per store method, called by name like every other object. Each
procedure is one atomic change: those that touch more than one row open and commit their own
transaction (ticket calls are never part of another), and the lease holder is checked inside
it. Claims use ``SELECT … FOR UPDATE SKIP LOCKED`` (MariaDB 10.6 or later), so concurrent
workers take different tickets without waiting for each other.

Times cross as ``DATETIME(6)`` in UTC: the adapter turns the core's Unix seconds into naive UTC
date-times and back, exact to the microsecond and independent of the session's time zone.
Every ticket has a lane (:mod:`beds.calgon.lanes`); a claim passes the worker's lane and
takes only its tickets, through the index that leads with it. Params, errors and records are
stored as JSON text; a step's records go to the server as one
JSON array, split there with ``JSON_TABLE`` in the transaction that counts the step done.
"""

from __future__ import annotations

import datetime as dt
import json
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

from beds.calgon.tickets import DEFAULT_LANE, FINISHED, ResultRow, Ticket, TicketState
from beds.errors import DatabaseObjectMissing, StoreError
from beds.namaste import SchemaFile
from beds_rel.bindings import Call
from beds_rel.errors import map_exceptions
from beds_rel.verify import missing_objects

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from contextlib import AbstractAsyncContextManager

    from asyncmy.connection import Connection

    from beds.namaste import Record
    from beds_rel.statements import Row

__all__ = ("CALLS", "TicketsMixin", "schema_file")

_SCHEMA = "002_beds_tickets.sql"
_EPOCH = dt.datetime(1970, 1, 1)
_MICROSECOND = dt.timedelta(microseconds=1)
_COLUMNS = (
    "ticket_id",
    "template",
    "operation",
    "params",
    "state",
    "principal",
    "idempotency_key",
    "fingerprint",
    "event_id",
    "depth",
    "steps",
    "lane",
    "steps_done",
    "attempts",
    "cancel_requested",
    "lease_owner",
    "lease_until",
    "created_at",
    "started_at",
    "finished_at",
    "expires_at",
    "error",
)


def _procedure(name: str, *params: str) -> Call:
    return Call(
        kind="procedure",
        name=name,
        sql=f"CALL `{name}`({', '.join(['%s'] * len(params))})",
        params=params,
        arity=len(params),
        modes=("IN",) * len(params),
    )


RECORD = _procedure(
    "beds_ticket_record",
    "ticket_id",
    "template",
    "operation",
    "params",
    "principal",
    "idempotency_key",
    "fingerprint",
    "event_id",
    "depth",
    "steps",
    "lane",
    "created_at",
)
READ = _procedure("beds_ticket_read", "ticket_id")
CLAIM = _procedure("beds_ticket_claim", "owner", "now", "lease_until", "lane")
RENEW = _procedure("beds_ticket_renew", "ticket_id", "owner", "lease_until")
SAVE_STEP = _procedure("beds_ticket_save_step", "ticket_id", "owner", "step", "records")
FINISH = _procedure(
    "beds_ticket_finish", "ticket_id", "owner", "state", "error", "now", "expires_at"
)
CANCEL = _procedure("beds_ticket_cancel", "ticket_id", "now", "expires_at")
RESULTS = _procedure("beds_ticket_results", "ticket_id", "after_step", "after_idx", "limit")
PURGE = _procedure("beds_ticket_purge", "now", "limit")
CALLS = (RECORD, READ, CLAIM, RENEW, SAVE_STEP, FINISH, CANCEL, RESULTS, PURGE)
"""The procedures a node that keeps tickets calls (and its account may execute)."""
VIEW = Call(
    kind="view",
    name="beds_tickets_v",
    sql=f"SELECT {', '.join(f'`{c}`' for c in _COLUMNS)} FROM `beds_tickets_v`",
    params=(),
    columns=_COLUMNS,
)
"""What the procedures answer a ticket from (read by them only; checked by ``verify``)."""


def schema_file() -> SchemaFile:
    """The DBA file that creates the ticket tables, their view and the procedures."""
    text = resources.files("beds_rel").joinpath("sql", _SCHEMA).read_text(encoding="utf-8")
    return SchemaFile(name=f"beds_rel/sql/{_SCHEMA}", text=text, distribution="beds-rel")


def _at(seconds: float) -> dt.datetime:
    """Unix seconds as the naive UTC date-time stored (microseconds)."""
    return _EPOCH + dt.timedelta(microseconds=round(seconds * 1_000_000))


def _seconds(value: dt.datetime) -> float:
    return (value - _EPOCH) / _MICROSECOND / 1_000_000


def _maybe_seconds(value: dt.datetime | None) -> float | None:
    return None if value is None else _seconds(value)


def _json(value: Any) -> str:
    """Stored JSON text (compact, unescaped: the session's character set is utf8mb4).

    Raises:
        StoreError: the value holds something JSON cannot (NaN, infinity, an object).
    """
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(
            "a ticket value is not JSON", details=(f"{type(exc).__name__}: {exc}",)
        ) from None


def _loaded(text: Any) -> Any:
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8")
    return json.loads(text)


def ticket_of(row: Mapping[str, Any]) -> Ticket:
    """A ticket from its row of ``beds_tickets_v``."""
    return Ticket(
        ticket_id=row["ticket_id"],
        template=row["template"],
        operation=row["operation"],
        params=_loaded(row["params"]),
        state=TicketState(row["state"]),
        principal=row["principal"],
        idempotency_key=row["idempotency_key"],
        fingerprint=row["fingerprint"],
        event_id=row["event_id"],
        depth=int(row["depth"]),
        steps=int(row["steps"]),
        lane=row["lane"],
        steps_done=int(row["steps_done"]),
        attempts=int(row["attempts"]),
        cancel_requested=bool(row["cancel_requested"]),
        lease_owner=row["lease_owner"],
        lease_until=_maybe_seconds(row["lease_until"]),
        created_at=_seconds(row["created_at"]),
        started_at=_maybe_seconds(row["started_at"]),
        finished_at=_maybe_seconds(row["finished_at"]),
        expires_at=_maybe_seconds(row["expires_at"]),
        error=None if row["error"] is None else _loaded(row["error"]),
    )


def _ticket_or_none(rows: list[Row]) -> Ticket | None:
    return ticket_of(rows[0]) if rows else None


def _flag(rows: list[Row], column: str) -> int:
    """The count or flag of a procedure's one-row answer."""
    return int(rows[0][column]) if rows else 0


class _Adapter(Protocol):
    """What the mixin uses of :class:`beds_rel.adapter.RelAdapter`."""

    async def _rows(self, call: Call, args: Sequence[Any]) -> list[Row]: ...

    def _connection(self) -> AbstractAsyncContextManager[Connection]: ...


class TicketsMixin:
    """:class:`~beds.calgon.tickets.TicketStore` for :class:`~beds_rel.adapter.RelAdapter`.

    Every method is one procedure call on a pooled connection; driver errors are mapped like
    every other call's (:func:`beds_rel.errors.map_exceptions`): the database away is
    ``StoreUnavailable``, a missing procedure ``DatabaseObjectMissing`` naming it.
    """

    async def verify_tickets(self: _Adapter) -> None:
        """Check the ticket procedures (and their view) exist and take the arguments sent.

        Raises:
            DatabaseObjectMissing: ``details`` names each missing or different object.
        """
        with map_exceptions():
            async with self._connection() as conn:
                missing = await missing_objects(conn, [*CALLS, VIEW])
        if missing:
            raise DatabaseObjectMissing(
                "the ticket store's database objects are missing or differ (beds schema apply "
                "creates them: beds_rel/sql/002_beds_tickets.sql)",
                details=missing,
            )

    async def record_ticket(self: _Adapter, ticket: Ticket) -> tuple[Ticket, bool]:
        """Store a new (queued) ticket, or answer the principal's ticket with the same key.

        Raises:
            ValueError: the ticket is not a new one (queued, no step or attempt yet).
            Conflict: a ticket with its id exists (and it has no key that found it).
        """
        if ticket.state is not TicketState.QUEUED or ticket.steps_done or ticket.attempts:
            raise ValueError("record_ticket takes a new ticket: queued, no step or attempt yet")
        rows = await self._rows(
            RECORD,
            (
                ticket.ticket_id,
                ticket.template,
                ticket.operation,
                _json(ticket.params),
                ticket.principal,
                ticket.idempotency_key,
                ticket.fingerprint,
                ticket.event_id,
                ticket.depth,
                ticket.steps,
                ticket.lane,
                _at(ticket.created_at),
            ),
        )
        if _flag(rows, "created"):
            return ticket, True
        return ticket_of(rows[0]), False

    async def read_ticket(self: _Adapter, ticket_id: str) -> Ticket | None:
        """The ticket, or ``None`` when there is none with that id."""
        return _ticket_or_none(await self._rows(READ, (ticket_id,)))

    async def claim_ticket(
        self: _Adapter, owner: str, lease: float, now: float, lane: str = DEFAULT_LANE
    ) -> Ticket | None:
        """Take the oldest waiting ticket of ``lane`` under a lease until ``now + lease``."""
        args = (owner, _at(now), _at(now + lease), lane)
        return _ticket_or_none(await self._rows(CLAIM, args))

    async def renew_lease(
        self: _Adapter, ticket_id: str, owner: str, lease: float, now: float
    ) -> Ticket | None:
        """Extend ``owner``'s lease to ``now + lease``; ``None``: it no longer holds it."""
        return _ticket_or_none(await self._rows(RENEW, (ticket_id, owner, _at(now + lease))))

    async def save_step(
        self: _Adapter,
        ticket_id: str,
        owner: str,
        step: int,
        records: Sequence[Record],
        now: float,
    ) -> bool:
        """Keep step ``step``'s records and count it done, if ``owner`` holds the lease.

        Raises:
            StoreError: a record holds a value JSON cannot (NaN, infinity).
        """
        del now  # a saved step changes no time: the lease is renewed on its own
        rows = await self._rows(SAVE_STEP, (ticket_id, owner, step, _json(list(records))))
        return bool(_flag(rows, "saved"))

    async def finish_ticket(
        self: _Adapter,
        ticket_id: str,
        owner: str | None,
        state: TicketState,
        error: Mapping[str, Any] | None,
        now: float,
        expires_at: float,
    ) -> bool:
        """Put an unfinished ticket in a final state (with ``owner``: only the holder).

        Raises:
            ValueError: ``state`` is not a final state.
        """
        if state not in FINISHED:
            raise ValueError(f"a ticket finishes succeeded, failed or cancelled, not {state}")
        body = None if error is None else _json(dict(error))
        args = (ticket_id, owner, state.value, body, _at(now), _at(expires_at))
        return bool(_flag(await self._rows(FINISH, args), "finished"))

    async def cancel_ticket(
        self: _Adapter, ticket_id: str, now: float, expires_at: float
    ) -> Ticket | None:
        """Cancel a queued ticket, or ask a running one to stop; the ticket after the change."""
        return _ticket_or_none(await self._rows(CANCEL, (ticket_id, _at(now), _at(expires_at))))

    async def read_results(
        self: _Adapter, ticket_id: str, after: tuple[int, int] | None, limit: int
    ) -> list[ResultRow]:
        """Up to ``limit`` result records in (step, index) order, strictly after ``after``."""
        step, index = after if after is not None else (-1, -1)
        rows = await self._rows(RESULTS, (ticket_id, step, index, limit))
        return [(int(row["step"]), int(row["idx"]), _loaded(row["record"])) for row in rows]

    async def purge_tickets(self: _Adapter, now: float, limit: int) -> int:
        """Delete up to ``limit`` tickets expired before ``now`` and their results."""
        return _flag(await self._rows(PURGE, (_at(now), limit)), "purged")
