"""CALGON tickets: what a submitted long operation is, and what stores keep them and run it.

A ``submit`` is answered as soon as its :class:`Ticket` is durably recorded in the ticket store
(``calgon.store``, an adapter that implements :class:`TicketStore` over DBA-owned objects shipped
like the idempotency schema). Workers (:mod:`beds.calgon.worker`) claim tickets under a lease,
run the operation one step at a time on the template's adapter (:class:`LongOperationRunner`)
and save each step's records with the step, so a ticket whose node dies is taken over where it
stopped once its lease lapses.

Every :class:`TicketStore` method is one atomic change in the store; the lease owner is checked
inside it, so a node that lost its lease cannot save a step or finish a ticket another node now
runs.

Every ticket is on a *lane* (:mod:`beds.calgon.lanes`): a worker claims only tickets of the lane
it serves, so the retention sweeps (lane ``warehouse``) run on the segundo role's ``whBroker``
and never take the appServer's workers (lane ``default``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from beds.config.model import DEFAULT_LANE, LANES, WAREHOUSE_LANE
from beds.templates.retention import RETENTION

if TYPE_CHECKING:
    from collections.abc import Sequence

    from beds.namaste import CallContext, Record
    from beds.templates.model import LongOperation, Template

__all__ = (
    "DEFAULT_LANE",
    "FINISHED",
    "LANES",
    "WAREHOUSE_LANE",
    "LongOperationRunner",
    "ResultRow",
    "Ticket",
    "TicketState",
    "TicketStore",
    "lane_of",
)


def lane_of(operation: str) -> str:
    """The lane a ticket of long operation ``operation`` is recorded on (sweeps: warehouse)."""
    return WAREHOUSE_LANE if operation == RETENTION else DEFAULT_LANE


class TicketState(enum.StrEnum):
    """Where a ticket is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = frozenset({TicketState.SUCCEEDED, TicketState.FAILED, TicketState.CANCELLED})
"""States a ticket never leaves (until it expires and is purged)."""


@attrs.frozen(kw_only=True)
class Ticket:
    """One submitted long operation. Times are Unix seconds (UTC)."""

    ticket_id: str
    """A random UUID (version 4) in its canonical text form."""
    template: str
    operation: str
    params: Mapping[str, Any]
    """The validated params, defaults applied (JSON-safe values)."""
    state: TicketState = TicketState.QUEUED
    principal: str | None = None
    """The submitting principal's id (``None``: anonymous): only it, or an admin, reads it."""
    idempotency_key: str | None = None
    """With a key, a repeated submit by the same principal answers this ticket."""
    fingerprint: str = ""
    """A digest of the template, operation and params: a key reused for another submit is
    refused (``BEDS-409K``)."""
    event_id: str = ""
    """The submit's lineage event: the work's events are its children."""
    depth: int = 0
    """The submit's lineage depth."""
    steps: int = 1
    """0: open-ended, steps run until one returns no record (a batched sweep)."""
    lane: str = DEFAULT_LANE
    """Which workers run it (:mod:`beds.calgon.lanes`): only those serving this lane claim it."""
    steps_done: int = 0
    attempts: int = 0
    """How many times a worker claimed it (a lapsed lease is taken over as a new attempt)."""
    cancel_requested: bool = False
    lease_owner: str = ""
    lease_until: float | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    """When a finished ticket is forgotten (``finished_at + calgon.ticket_ttl``)."""
    error: Mapping[str, Any] | None = None
    """A failed ticket's error: ``{"code", "message", "details"}`` from the catalogue."""

    @property
    def progress(self) -> float:
        """The share of steps done, 0.0 to 1.0 (open-ended: 0.0 until it succeeds)."""
        if self.state is TicketState.SUCCEEDED:
            return 1.0
        return self.steps_done / self.steps if self.steps else 0.0

    @property
    def finished(self) -> bool:
        """Whether the ticket is in a final state."""
        return self.state in FINISHED


ResultRow = tuple[int, int, "Record"]
"""One record of a ticket's result: (step, index within the step, record)."""


@runtime_checkable
class TicketStore(Protocol):
    """An adapter that keeps CALGON tickets (the store named by ``calgon.store``)."""

    async def verify_tickets(self) -> None:
        """Check the store's ticket objects exist (IPL, ``beds check``).

        Raises:
            DatabaseObjectMissing: ``details`` names each missing object.
        """

    async def record_ticket(self, ticket: Ticket) -> tuple[Ticket, bool]:
        """Store a new ticket; return it and ``True``.

        When ``ticket.idempotency_key`` is set and the same principal already has a ticket with
        that key, store nothing and return that ticket and ``False``.
        """

    async def read_ticket(self, ticket_id: str) -> Ticket | None:
        """The ticket, or ``None`` when the store has none with that id."""

    async def claim_ticket(
        self, owner: str, lease: float, now: float, lane: str = DEFAULT_LANE
    ) -> Ticket | None:
        """Take the oldest ticket of ``lane`` that is waiting; ``None``: none waits.

        Waiting: queued, or running with a lease that lapsed before ``now``. It becomes
        running, held by ``owner`` until ``now + lease``, with one more attempt, and
        ``started_at`` set if it was not. A ticket of another lane is never taken, even when
        its lease lapsed.
        """

    async def renew_lease(
        self, ticket_id: str, owner: str, lease: float, now: float
    ) -> Ticket | None:
        """Extend ``owner``'s lease to ``now + lease``; ``None``: ``owner`` no longer holds it.

        (Another node took the ticket over, or it finished.) The ticket returned tells whether
        a cancel was asked for.
        """

    async def save_step(
        self, ticket_id: str, owner: str, step: int, records: Sequence[Record], now: float
    ) -> bool:
        """Keep step ``step``'s records and count it done; ``False``: nothing was kept.

        Only when ``owner`` holds the lease and ``step`` is the next step not done. Saving a
        step's records again (a retry) must not duplicate them.
        """

    async def finish_ticket(
        self,
        ticket_id: str,
        owner: str | None,
        state: TicketState,
        error: Mapping[str, Any] | None,
        now: float,
        expires_at: float,
    ) -> bool:
        """Put an unfinished ticket in a final state; ``False``: it was not changed.

        With ``owner``, only if it holds the lease. ``False`` also when it was finished already.
        """

    async def cancel_ticket(self, ticket_id: str, now: float, expires_at: float) -> Ticket | None:
        """Cancel a ticket; return it after the change (``None``: there is none).

        A queued ticket becomes cancelled at once; a running one is marked
        ``cancel_requested`` (its worker stops it). A finished ticket is left as it is.
        """

    async def read_results(
        self, ticket_id: str, after: tuple[int, int] | None, limit: int
    ) -> list[ResultRow]:
        """Up to ``limit`` result records in (step, index) order, strictly after ``after``."""

    async def purge_tickets(self, now: float, limit: int) -> int:
        """Delete up to ``limit`` tickets expired before ``now`` and their results; say how many."""


@runtime_checkable
class LongOperationRunner(Protocol):
    """An adapter that runs long operations (feature ``long_operations``)."""

    async def run_step(
        self,
        template: Template,
        operation: LongOperation,
        params: Mapping[str, Any],
        step: int,
        ctx: CallContext,
    ) -> list[Record]:
        """Run step ``step`` (of ``operation.steps``) with ``params``; return its records.

        A step may run more than once (a retry, a takeover): it must only read, or write
        idempotently.
        """
