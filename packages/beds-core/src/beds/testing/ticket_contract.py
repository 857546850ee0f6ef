"""The :class:`~beds.calgon.tickets.TicketStore` contract, as tests every ticket store passes.

Subclass :class:`TicketStoreContract` in a test module and give it a ``ticket_store`` fixture
that yields an empty store (a fresh database or collection)::

    class TestMyTickets(TicketStoreContract):
        @pytest.fixture
        async def ticket_store(self):
            async with my_fresh_store() as store:
                yield store

beds-core runs it against :class:`~beds.testing.tickets.MemoryTickets`, beds-rel and beds-rec
against MariaDB and the MongoDB wire server.
"""

# Test methods: their names say what each checks (as in the project's test modules).
# ruff: noqa: D102

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import attrs

from beds.calgon.tickets import DEFAULT_LANE, WAREHOUSE_LANE, Ticket, TicketState

if TYPE_CHECKING:
    from beds.calgon.tickets import TicketStore

__all__ = ("TicketStoreContract", "new_ticket")

_T0 = 1_800_000_000.0
"""A fixed "now" (2027-01-15), so tests do not depend on the clock."""
_LEASE = 30.0
_CLOSE = 0.002
"""Stores keep times to the millisecond or better."""


def new_ticket(**changes: Any) -> Ticket:
    """A queued ticket with a fresh id, created at the contract's fixed time unless told."""
    base = Ticket(
        ticket_id=str(uuid.uuid4()),
        template="demo_post",
        operation="stats",
        params={"days": 7, "author": "ann", "note": "naïve ✓", "tags": ["a", "b"]},
        principal="p-ann",
        event_id="ev-1",
        depth=0,
        steps=3,
        created_at=_T0,
    )
    return attrs.evolve(base, **changes)


class TicketStoreContract:
    """Tests any ticket store passes; subclasses provide the ``ticket_store`` fixture."""

    async def test_a_recorded_ticket_reads_back_as_it_was(self, ticket_store: TicketStore) -> None:
        ticket = new_ticket(idempotency_key="k1", fingerprint="f1", depth=2)
        kept, new = await ticket_store.record_ticket(ticket)
        assert new
        assert kept == ticket
        read = await ticket_store.read_ticket(ticket.ticket_id)
        assert read is not None
        assert attrs.evolve(read, created_at=_T0) == ticket
        assert abs(read.created_at - _T0) < _CLOSE
        assert await ticket_store.read_ticket(str(uuid.uuid4())) is None

    async def test_a_key_is_the_principals_own(self, ticket_store: TicketStore) -> None:
        first = new_ticket(idempotency_key="k", fingerprint="f")
        await ticket_store.record_ticket(first)
        again, new = await ticket_store.record_ticket(new_ticket(idempotency_key="k"))
        assert not new
        assert again.ticket_id == first.ticket_id
        assert again.fingerprint == "f"
        other = new_ticket(idempotency_key="k", principal="p-bob")
        kept, new = await ticket_store.record_ticket(other)
        assert new
        assert kept.ticket_id == other.ticket_id
        unkeyed = [new_ticket(), new_ticket()]
        for ticket in unkeyed:
            assert (await ticket_store.record_ticket(ticket))[1]

    async def test_claims_take_the_oldest_and_hold_it_for_the_lease(
        self, ticket_store: TicketStore
    ) -> None:
        older = new_ticket(created_at=_T0 - 10)
        newer = new_ticket()
        await ticket_store.record_ticket(newer)
        await ticket_store.record_ticket(older)
        claimed = await ticket_store.claim_ticket("node-a", _LEASE, _T0)
        assert claimed is not None
        assert claimed.ticket_id == older.ticket_id
        assert claimed.state is TicketState.RUNNING
        assert claimed.lease_owner == "node-a"
        assert claimed.attempts == 1
        assert claimed.started_at is not None
        assert abs(claimed.started_at - _T0) < _CLOSE
        assert claimed.lease_until is not None
        assert abs(claimed.lease_until - (_T0 + _LEASE)) < _CLOSE
        second = await ticket_store.claim_ticket("node-b", _LEASE, _T0 + 1)
        assert second is not None
        assert second.ticket_id == newer.ticket_id
        assert await ticket_store.claim_ticket("node-c", _LEASE, _T0 + 2) is None

    async def test_a_lapsed_lease_is_taken_over_as_another_attempt(
        self, ticket_store: TicketStore
    ) -> None:
        ticket = new_ticket()
        await ticket_store.record_ticket(ticket)
        await ticket_store.claim_ticket("node-a", _LEASE, _T0)
        assert await ticket_store.claim_ticket("node-b", _LEASE, _T0 + _LEASE - 1) is None
        taken = await ticket_store.claim_ticket("node-b", _LEASE, _T0 + _LEASE + 1)
        assert taken is not None
        assert taken.lease_owner == "node-b"
        assert taken.attempts == 2
        assert taken.started_at is not None
        assert abs(taken.started_at - _T0) < _CLOSE  # the first start stands
        assert await ticket_store.renew_lease(ticket.ticket_id, "node-a", _LEASE, _T0 + 40) is None

    async def test_renewing_extends_only_the_holders_lease(self, ticket_store: TicketStore) -> None:
        ticket = new_ticket()
        await ticket_store.record_ticket(ticket)
        assert await ticket_store.renew_lease(ticket.ticket_id, "node-a", _LEASE, _T0) is None
        await ticket_store.claim_ticket("node-a", _LEASE, _T0)
        renewed = await ticket_store.renew_lease(ticket.ticket_id, "node-a", _LEASE, _T0 + 20)
        assert renewed is not None
        assert renewed.lease_until is not None
        assert abs(renewed.lease_until - (_T0 + 20 + _LEASE)) < _CLOSE
        assert await ticket_store.claim_ticket("node-b", _LEASE, _T0 + _LEASE + 1) is None
        assert await ticket_store.renew_lease(ticket.ticket_id, "node-b", _LEASE, _T0 + 21) is None

    async def test_a_lease_given_back_is_taken_at_once(self, ticket_store: TicketStore) -> None:
        ticket = new_ticket()
        await ticket_store.record_ticket(ticket)
        await ticket_store.claim_ticket("node-a", _LEASE, _T0)
        assert await ticket_store.renew_lease(ticket.ticket_id, "node-a", 0.0, _T0 + 1)
        taken = await ticket_store.claim_ticket("node-b", _LEASE, _T0 + 1.5)
        assert taken is not None
        assert taken.lease_owner == "node-b"

    async def test_steps_are_saved_once_in_order_by_the_holder(
        self, ticket_store: TicketStore
    ) -> None:
        ticket = new_ticket()
        await ticket_store.record_ticket(ticket)
        await ticket_store.claim_ticket("node-a", _LEASE, _T0)
        step0 = [{"author": "ann", "posts": 3}, {"author": "bob", "posts": 1}]
        assert await ticket_store.save_step(ticket.ticket_id, "node-a", 0, step0, _T0 + 1)
        assert not await ticket_store.save_step(ticket.ticket_id, "node-a", 0, step0, _T0 + 2)
        assert not await ticket_store.save_step(ticket.ticket_id, "node-a", 2, [{}], _T0 + 2)
        assert not await ticket_store.save_step(ticket.ticket_id, "node-b", 1, [{}], _T0 + 2)
        assert await ticket_store.save_step(ticket.ticket_id, "node-a", 1, [], _T0 + 3)
        step2 = [{"author": f"u{n}", "posts": n, "ratio": n / 4, "none": None} for n in range(12)]
        assert await ticket_store.save_step(ticket.ticket_id, "node-a", 2, step2, _T0 + 4)
        read = await ticket_store.read_ticket(ticket.ticket_id)
        assert read is not None
        assert read.steps_done == 3
        rows = await ticket_store.read_results(ticket.ticket_id, None, 100)
        assert [(s, i) for s, i, _ in rows] == [(0, 0), (0, 1)] + [(2, n) for n in range(12)]
        assert [r for _, _, r in rows] == step0 + step2
        page = await ticket_store.read_results(ticket.ticket_id, (0, 1), 5)
        assert [(s, i) for s, i, _ in page] == [(2, n) for n in range(5)]
        assert await ticket_store.read_results(ticket.ticket_id, (2, 11), 5) == []

    async def test_a_taken_over_ticket_resumes_at_the_next_step(
        self, ticket_store: TicketStore
    ) -> None:
        ticket = new_ticket()
        await ticket_store.record_ticket(ticket)
        await ticket_store.claim_ticket("node-a", _LEASE, _T0)
        assert await ticket_store.save_step(ticket.ticket_id, "node-a", 0, [{"n": 0}], _T0 + 1)
        taken = await ticket_store.claim_ticket("node-b", _LEASE, _T0 + 1 + _LEASE + 1)
        assert taken is not None
        assert taken.steps_done == 1
        assert not await ticket_store.save_step(ticket.ticket_id, "node-a", 1, [{}], _T0 + 33)
        assert await ticket_store.save_step(ticket.ticket_id, "node-b", 1, [{"n": 1}], _T0 + 34)
        rows = await ticket_store.read_results(ticket.ticket_id, None, 10)
        assert [r for _, _, r in rows] == [{"n": 0}, {"n": 1}]

    async def test_finishing_is_final_and_the_holders(self, ticket_store: TicketStore) -> None:
        ticket = new_ticket()
        await ticket_store.record_ticket(ticket)
        await ticket_store.claim_ticket("node-a", _LEASE, _T0)
        error = {"code": "BEDS-502", "message": 'it failed: "quoted" ✓', "details": ["a", "b"]}
        assert not await ticket_store.finish_ticket(
            ticket.ticket_id, "node-b", TicketState.FAILED, error, _T0 + 1, _T0 + 100
        )
        assert await ticket_store.finish_ticket(
            ticket.ticket_id, "node-a", TicketState.FAILED, error, _T0 + 1, _T0 + 100
        )
        assert not await ticket_store.finish_ticket(
            ticket.ticket_id, "node-a", TicketState.SUCCEEDED, None, _T0 + 2, _T0 + 100
        )
        done = await ticket_store.read_ticket(ticket.ticket_id)
        assert done is not None
        assert done.state is TicketState.FAILED
        assert done.error == error
        assert done.finished_at is not None
        assert abs(done.finished_at - (_T0 + 1)) < _CLOSE
        assert done.expires_at is not None
        assert abs(done.expires_at - (_T0 + 100)) < _CLOSE
        assert await ticket_store.claim_ticket("node-c", _LEASE, _T0 + 1000) is None
        assert await ticket_store.renew_lease(ticket.ticket_id, "node-a", _LEASE, _T0 + 3) is None

    async def test_a_ticket_is_finished_without_a_holder_when_told(
        self, ticket_store: TicketStore
    ) -> None:
        ticket = new_ticket()
        await ticket_store.record_ticket(ticket)
        assert await ticket_store.finish_ticket(
            ticket.ticket_id, None, TicketState.FAILED, None, _T0, _T0 + 10
        )
        done = await ticket_store.read_ticket(ticket.ticket_id)
        assert done is not None
        assert done.state is TicketState.FAILED

    async def test_cancel_stops_queued_at_once_and_asks_running_to_stop(
        self, ticket_store: TicketStore
    ) -> None:
        queued, running = new_ticket(created_at=_T0 + 1), new_ticket()
        await ticket_store.record_ticket(queued)
        await ticket_store.record_ticket(running)
        await ticket_store.claim_ticket("node-a", _LEASE, _T0 + 2)  # takes the older: running
        cancelled = await ticket_store.cancel_ticket(queued.ticket_id, _T0 + 3, _T0 + 50)
        assert cancelled is not None
        assert cancelled.state is TicketState.CANCELLED
        assert cancelled.expires_at is not None
        asked = await ticket_store.cancel_ticket(running.ticket_id, _T0 + 3, _T0 + 50)
        assert asked is not None
        assert asked.state is TicketState.RUNNING
        assert asked.cancel_requested
        renewed = await ticket_store.renew_lease(running.ticket_id, "node-a", _LEASE, _T0 + 4)
        assert renewed is not None
        assert renewed.cancel_requested
        assert await ticket_store.claim_ticket("node-b", _LEASE, _T0 + 5) is None
        assert await ticket_store.finish_ticket(
            running.ticket_id, "node-a", TicketState.CANCELLED, None, _T0 + 6, _T0 + 60
        )
        again = await ticket_store.cancel_ticket(running.ticket_id, _T0 + 7, _T0 + 70)
        assert again is not None
        assert again.state is TicketState.CANCELLED
        assert await ticket_store.cancel_ticket(str(uuid.uuid4()), _T0, _T0) is None

    async def test_a_worker_claims_only_tickets_of_its_lane(
        self, ticket_store: TicketStore
    ) -> None:
        sweep = new_ticket(lane=WAREHOUSE_LANE, steps=0, created_at=_T0 - 10)
        submit = new_ticket()
        await ticket_store.record_ticket(sweep)
        await ticket_store.record_ticket(submit)
        read = await ticket_store.read_ticket(sweep.ticket_id)
        assert read is not None
        assert read.lane == WAREHOUSE_LANE
        # The older ticket is the sweep, yet a default-lane worker takes the submit.
        claimed = await ticket_store.claim_ticket("app-1", _LEASE, _T0, DEFAULT_LANE)
        assert claimed is not None
        assert (claimed.ticket_id, claimed.lane) == (submit.ticket_id, DEFAULT_LANE)
        assert await ticket_store.claim_ticket("app-2", _LEASE, _T0 + 1) is None
        swept = await ticket_store.claim_ticket("seg-1", _LEASE, _T0 + 2, WAREHOUSE_LANE)
        assert swept is not None
        assert (swept.ticket_id, swept.lane) == (sweep.ticket_id, WAREHOUSE_LANE)
        assert await ticket_store.claim_ticket("seg-2", _LEASE, _T0 + 3, WAREHOUSE_LANE) is None

    async def test_a_lapsed_lease_is_taken_over_only_within_its_lane(
        self, ticket_store: TicketStore
    ) -> None:
        sweep = new_ticket(lane=WAREHOUSE_LANE, steps=0)
        await ticket_store.record_ticket(sweep)
        await ticket_store.claim_ticket("seg-1", _LEASE, _T0, WAREHOUSE_LANE)
        later = _T0 + _LEASE + 1  # seg-1's lease lapsed: its node died
        assert await ticket_store.claim_ticket("app-1", _LEASE, later, DEFAULT_LANE) is None
        taken = await ticket_store.claim_ticket("seg-2", _LEASE, later, WAREHOUSE_LANE)
        assert taken is not None
        assert (taken.ticket_id, taken.lease_owner, taken.attempts) == (
            sweep.ticket_id,
            "seg-2",
            2,
        )
        assert taken.lane == WAREHOUSE_LANE

    async def test_expired_tickets_are_purged_with_their_results(
        self, ticket_store: TicketStore
    ) -> None:
        old, young, open_ = new_ticket(created_at=_T0 - 1), new_ticket(), new_ticket()
        for ticket in (old, young, open_):
            await ticket_store.record_ticket(ticket)
        await ticket_store.claim_ticket("node-a", _LEASE, _T0)
        await ticket_store.save_step(old.ticket_id, "node-a", 0, [{"n": 1}], _T0)
        await ticket_store.finish_ticket(
            old.ticket_id, "node-a", TicketState.SUCCEEDED, None, _T0, _T0 + 10
        )
        await ticket_store.finish_ticket(
            young.ticket_id, None, TicketState.SUCCEEDED, None, _T0, _T0 + 1000
        )
        assert await ticket_store.purge_tickets(_T0 + 20, 100) == 1
        assert await ticket_store.read_ticket(old.ticket_id) is None
        assert await ticket_store.read_results(old.ticket_id, None, 10) == []
        assert await ticket_store.read_ticket(young.ticket_id) is not None
        assert await ticket_store.read_ticket(open_.ticket_id) is not None
        assert await ticket_store.purge_tickets(_T0 + 20, 100) == 0
