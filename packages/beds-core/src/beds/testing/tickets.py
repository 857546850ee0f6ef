"""An in-memory :class:`~beds.calgon.tickets.TicketStore`, the reference the real stores follow.

For unit tests and embedding (``MemoryAdapter`` includes it). Each method is one step with no
``await`` inside, so it is atomic on the event loop, as each is one transaction in a real store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from beds.calgon.tickets import DEFAULT_LANE, FINISHED, ResultRow, Ticket, TicketState

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from beds.namaste import Record

__all__ = ("MemoryTickets",)


class MemoryTickets:
    """Tickets and their results in dicts, for as long as the process."""

    def __init__(self) -> None:
        self.tickets: dict[str, Ticket] = {}
        self.results: dict[str, dict[tuple[int, int], Record]] = {}

    async def verify_tickets(self) -> None:
        """Nothing to check: the dicts exist."""

    async def record_ticket(self, ticket: Ticket) -> tuple[Ticket, bool]:
        """Keep a new ticket, or answer the one the principal submitted with the same key."""
        if ticket.idempotency_key is not None:
            for held in self.tickets.values():
                if (held.principal, held.idempotency_key) == (
                    ticket.principal,
                    ticket.idempotency_key,
                ):
                    return held, False
        self.tickets[ticket.ticket_id] = ticket
        self.results[ticket.ticket_id] = {}
        return ticket, True

    async def read_ticket(self, ticket_id: str) -> Ticket | None:
        """The ticket with that id."""
        return self.tickets.get(ticket_id)

    async def claim_ticket(
        self, owner: str, lease: float, now: float, lane: str = DEFAULT_LANE
    ) -> Ticket | None:
        """Take the oldest queued ticket of ``lane``, or running one whose lease lapsed."""
        ready = [
            t
            for t in self.tickets.values()
            if t.lane == lane
            and (
                t.state is TicketState.QUEUED
                or (t.state is TicketState.RUNNING and (t.lease_until or 0) < now)
            )
        ]
        if not ready:
            return None
        oldest = min(ready, key=lambda t: (t.created_at, t.ticket_id))
        claimed = attrs.evolve(
            oldest,
            state=TicketState.RUNNING,
            lease_owner=owner,
            lease_until=now + lease,
            attempts=oldest.attempts + 1,
            started_at=oldest.started_at if oldest.started_at is not None else now,
        )
        self.tickets[claimed.ticket_id] = claimed
        return claimed

    def _held(self, ticket_id: str, owner: str) -> Ticket | None:
        ticket = self.tickets.get(ticket_id)
        if ticket is None or ticket.state is not TicketState.RUNNING or ticket.lease_owner != owner:
            return None
        return ticket

    async def renew_lease(
        self, ticket_id: str, owner: str, lease: float, now: float
    ) -> Ticket | None:
        """Extend the owner's lease, if it still holds it."""
        ticket = self._held(ticket_id, owner)
        if ticket is None:
            return None
        renewed = attrs.evolve(ticket, lease_until=now + lease)
        self.tickets[ticket_id] = renewed
        return renewed

    async def save_step(
        self, ticket_id: str, owner: str, step: int, records: Sequence[Record], now: float
    ) -> bool:
        """Keep the step's records and count it done, if the owner holds the lease."""
        ticket = self._held(ticket_id, owner)
        if ticket is None or ticket.steps_done != step:
            return False
        kept = self.results[ticket_id]
        for index, record in enumerate(records):
            kept[(step, index)] = dict(record)
        self.tickets[ticket_id] = attrs.evolve(ticket, steps_done=step + 1)
        return True

    async def finish_ticket(
        self,
        ticket_id: str,
        owner: str | None,
        state: TicketState,
        error: Mapping[str, Any] | None,
        now: float,
        expires_at: float,
    ) -> bool:
        """Put an unfinished ticket in its final state (with ``owner``: only the holder)."""
        ticket = self.tickets.get(ticket_id)
        if ticket is None or ticket.state in FINISHED:
            return False
        if owner is not None and self._held(ticket_id, owner) is None:
            return False
        self.tickets[ticket_id] = attrs.evolve(
            ticket,
            state=state,
            error=dict(error) if error is not None else None,
            finished_at=now,
            expires_at=expires_at,
            lease_owner="",
            lease_until=None,
        )
        return True

    async def cancel_ticket(self, ticket_id: str, now: float, expires_at: float) -> Ticket | None:
        """Cancel a queued ticket, or ask a running one to stop."""
        ticket = self.tickets.get(ticket_id)
        if ticket is None:
            return None
        if ticket.state is TicketState.QUEUED:
            ticket = attrs.evolve(
                ticket, state=TicketState.CANCELLED, finished_at=now, expires_at=expires_at
            )
        elif ticket.state is TicketState.RUNNING:
            ticket = attrs.evolve(ticket, cancel_requested=True)
        self.tickets[ticket_id] = ticket
        return ticket

    async def read_results(
        self, ticket_id: str, after: tuple[int, int] | None, limit: int
    ) -> list[ResultRow]:
        """The result records after ``after``, in (step, index) order."""
        kept = self.results.get(ticket_id, {})
        positions = sorted(p for p in kept if after is None or p > after)[:limit]
        return [(step, index, kept[(step, index)]) for step, index in positions]

    async def purge_tickets(self, now: float, limit: int) -> int:
        """Forget up to ``limit`` expired tickets."""
        expired = [
            t.ticket_id
            for t in self.tickets.values()
            if t.expires_at is not None and t.expires_at < now
        ][:limit]
        for ticket_id in expired:
            del self.tickets[ticket_id]
            self.results.pop(ticket_id, None)
        return len(expired)
