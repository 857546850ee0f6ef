"""Run CALGON tickets: claim one under a lease, run its steps, save each, finish it.

A node runs one :class:`TicketWorkers` per ticket lane it serves (:mod:`beds.calgon.lanes`):
``calgon.workers`` loops of the ``default`` lane when its role has the ``calgon.broker``
broker, and ``instances`` loops of each ``type = "tickets"`` broker's lane. A loop claims the
oldest ticket of its lane that is queued or whose lease lapsed (its node died), renews
the lease a few times per ``calgon.lease_seconds`` while it runs, and saves every step's
records with the step in one store change, so a ticket taken over resumes at the first step not
done. A step that fails with a transient error (the store away) gives the ticket back at once
(another attempt follows); any other error fails the ticket with that error's catalogue code.
A ticket claimed more than ``calgon.max_attempts`` times is failed with ``BEDS-500A``. Stopping
a node gives its running tickets back, so another node resumes them without waiting for the
lease to lapse. Each batch a retention sweep saves adds its ``retired`` count to
:attr:`TicketWorkers.retired` (the ``beds_retention_retired_total`` metric).

Why this module is long: claiming, renewing, stepping, cancelling and giving a ticket back all
change one lease, and their order is what keeps a ticket from running on two nodes; they stay
in one class to be read together.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger

from beds.bugs import report_bug
from beds.calgon.tickets import (
    DEFAULT_LANE,
    LongOperationRunner,
    Ticket,
    TicketState,
    TicketStore,
)
from beds.config.model import CalgonSettings
from beds.dispatch.calgon import long_params
from beds.dispatch.trace import EventSink
from beds.errors import (
    DeadlineExceeded,
    InternalError,
    RequestError,
    TicketAbandoned,
    UnsupportedOperation,
)
from beds.factory import Factory
from beds.lineage import Event, new_event_id
from beds.namaste import CallContext
from beds.templates.retention import RETENTION

if TYPE_CHECKING:
    from beds.namaste import Record
    from beds.templates.model import LongOperation, Template

__all__ = ("TicketWorkers",)

_RENEWALS_PER_LEASE = 3
_PURGE_SECONDS = 300.0
_PURGE_BATCH = 1000


class _LeaseLost(Exception):
    """Another node holds the ticket now (this one was too slow to renew)."""


class _CancelAsked(Exception):
    """The ticket's submitter asked to cancel it: stop after the step that ran."""


@attrs.define(eq=False)
class TicketWorkers:
    """A node's ticket-running loops of one lane."""

    store: TicketStore
    factory: Factory
    settings: CalgonSettings
    node: str
    env: str
    events: EventSink | None = None
    lane: str = DEFAULT_LANE
    """The lane whose tickets these loops claim (and no other)."""
    workers: int | None = None
    """How many loops; ``None``: ``calgon.workers`` (the default lane's count)."""
    retired: dict[str, int] = attrs.field(factory=dict)
    """Template → records its retention sweeps retired here. The node passes its own dict, so
    the count outlives a restart of the loops (a counter metric never goes down)."""
    _wake: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    _tasks: list[asyncio.Task[None]] = attrs.field(factory=list, init=False)
    _held: dict[str, Ticket] = attrs.field(factory=dict, init=False)
    finished: int = attrs.field(default=0, init=False)
    """Tickets this node finished (any final state)."""

    @property
    def owner(self) -> str:
        """The lease owner's name: this node."""
        return self.node

    @property
    def count(self) -> int:
        """How many loops run (:attr:`workers`, else ``calgon.workers``)."""
        return self.settings.workers if self.workers is None else self.workers

    def start(self) -> None:
        """Start the loops (and the purge of expired tickets)."""
        for number in range(self.count):
            name = f"beds-calgon-{self.lane}-{number}"
            self._tasks.append(asyncio.create_task(self._loop(), name=name))
        if self.count:
            name = f"beds-calgon-{self.lane}-purge"
            self._tasks.append(asyncio.create_task(self._purge(), name=name))

    def wake(self) -> None:
        """A ticket was recorded here: look now instead of at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop the loops and give back the tickets they held."""
        tasks, self._tasks = self._tasks, []
        held, self._held = self._held, {}  # first: a loop forgets its ticket as it ends
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for ticket in held.values():
            with contextlib.suppress(Exception):  # else its lease lapses, which is as good
                await self.store.renew_lease(ticket.ticket_id, self.owner, 0.0, time.time())

    async def _loop(self) -> None:
        while True:
            try:
                ticket = await self._claim()
            except RequestError as exc:
                logger.warning("claiming a ticket failed ({}); trying again", exc)
                ticket = None
            if ticket is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.poll_seconds):
                        await self._wake.wait()
                continue
            self._held[ticket.ticket_id] = ticket
            try:
                await self._run(ticket)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must outlive any ticket
                report_bug(exc, "running ticket {} failed unexpectedly", ticket.ticket_id)
            finally:
                self._held.pop(ticket.ticket_id, None)

    async def _claim(self) -> Ticket | None:
        return await self.store.claim_ticket(
            self.owner, self.settings.lease_seconds, time.time(), self.lane
        )

    async def run_one(self) -> bool:
        """Claim and run one ticket now (for tests and embedding); ``False``: none waited."""
        ticket = await self._claim()
        if ticket is None:
            return False
        await self._run(ticket)
        return True

    async def _run(self, ticket: Ticket) -> None:
        if ticket.cancel_requested:
            await self._finish(ticket, TicketState.CANCELLED)
            return
        if ticket.attempts > self.settings.max_attempts:
            error = TicketAbandoned(
                f"the ticket's node stopped {ticket.attempts - 1} times while running it",
                details=(f"calgon.max_attempts: {self.settings.max_attempts}",),
            )
            await self._finish(ticket, TicketState.FAILED, error)
            return
        try:
            template, adapter = self.factory.resolve(ticket.template)
            operation = template.long_operations.get(ticket.operation)
            if operation is None or not isinstance(adapter, LongOperationRunner):
                raise UnsupportedOperation(
                    f"template {ticket.template!r} no longer runs {ticket.operation!r} here"
                )
            params = long_params(operation, ticket.params, "params")
        except RequestError as exc:
            await self._finish(ticket, TicketState.FAILED, exc)
            return
        cancelled = asyncio.Event()
        renewing = asyncio.create_task(self._renew(ticket, cancelled))
        work = asyncio.create_task(self._steps(ticket, template, operation, adapter, params))
        try:
            done, _ = await asyncio.wait({work, renewing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, renewing):  # the work too: a stop cancels this run mid-step
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if work not in done:  # the lease was lost or a cancel was asked for
            if cancelled.is_set():
                await self._finish(ticket, TicketState.CANCELLED)
            return
        try:
            outcome = work.result()
        except _LeaseLost:
            logger.warning("ticket {} is another node's now", ticket.ticket_id)
            return
        except _CancelAsked:
            await self._finish(ticket, TicketState.CANCELLED)
            return
        if outcome is None:
            await self._finish(ticket, TicketState.SUCCEEDED)
        elif outcome.TRANSIENT:
            logger.warning(
                "ticket {} step failed ({}); it is given back for another attempt",
                ticket.ticket_id,
                outcome.CODE,
            )
            await self.store.renew_lease(ticket.ticket_id, self.owner, 0.0, time.time())
        else:
            await self._finish(ticket, TicketState.FAILED, outcome)

    async def _steps(
        self,
        ticket: Ticket,
        template: Template,
        operation: LongOperation,
        adapter: LongOperationRunner,
        params: dict[str, Any],
    ) -> RequestError | None:
        """Run the steps not done yet; the error that stopped them, or ``None``.

        Raises:
            _LeaseLost: a step could not be saved: another node holds the ticket now.
            _CancelAsked: a cancel was asked for; the steps done are kept.
        """
        open_ended = operation.steps == 0  # until a step returns no record
        step = ticket.steps_done
        while open_ended or step < operation.steps:
            started = time.perf_counter()
            event_id = new_event_id(self.node, self.env)
            ctx = CallContext(event_id=event_id, principal=ticket.principal)
            code = ""
            try:
                async with asyncio.timeout(operation.step_timeout):
                    records = await adapter.run_step(template, operation, params, step, ctx)
                if not await self.store.save_step(
                    ticket.ticket_id, self.owner, step, records, time.time()
                ):
                    raise _LeaseLost
                if ticket.operation == RETENTION:
                    self._count_retired(ticket.template, records)
                # Between steps: renew, and stop here when a cancel was asked for.
                renewed = await self.store.renew_lease(
                    ticket.ticket_id, self.owner, self.settings.lease_seconds, time.time()
                )
                if renewed is None:
                    raise _LeaseLost
                if open_ended and not records:
                    return None
                if renewed.cancel_requested and (open_ended or step + 1 < operation.steps):
                    raise _CancelAsked
            except TimeoutError:
                code = DeadlineExceeded.CODE
                return DeadlineExceeded(
                    f"step {step + 1} ran past step_timeout",
                    details=(f"step_timeout: {operation.step_timeout:g} s",),
                )
            except RequestError as exc:
                code = exc.CODE
                return exc
            except (_LeaseLost, _CancelAsked):
                raise
            except Exception as exc:
                code = InternalError.CODE
                report_bug(exc, "step {} of ticket {} failed", step, ticket.ticket_id)
                return InternalError("the long operation failed unexpectedly; see the node log")
            finally:
                self._trace(ticket, step, operation.steps, started, event_id, code)
            step += 1
        return None

    def _count_retired(self, template: str, records: list[Record]) -> None:
        """Add a saved sweep batch's ``{"retired": n}`` to the template's count."""
        retired = sum(
            value
            for record in records
            if isinstance(value := record.get("retired"), int) and not isinstance(value, bool)
        )
        if retired:
            self.retired[template] = self.retired.get(template, 0) + retired

    async def _renew(self, ticket: Ticket, cancelled: asyncio.Event) -> None:
        """Renew the lease until cancelled; return when it is lost or a cancel is asked for."""
        every = self.settings.lease_seconds / _RENEWALS_PER_LEASE
        while True:
            await asyncio.sleep(every)
            try:
                renewed = await self.store.renew_lease(
                    ticket.ticket_id, self.owner, self.settings.lease_seconds, time.time()
                )
            except RequestError as exc:  # the store is away: the lease may still hold
                logger.warning("renewing ticket {} failed ({})", ticket.ticket_id, exc)
                continue
            if renewed is None:
                return
            if renewed.cancel_requested:
                cancelled.set()
                return

    async def _finish(
        self, ticket: Ticket, state: TicketState, error: RequestError | None = None
    ) -> None:
        now = time.time()
        body = None
        if error is not None:
            wire = error.to_error()
            body = {"code": wire.code, "message": wire.message, "details": list(wire.details)}
        done = await self.store.finish_ticket(
            ticket.ticket_id, self.owner, state, body, now, now + self.settings.ticket_ttl
        )
        if done:
            self.finished += 1
            logger.info("ticket {} {}", ticket.ticket_id, state.value)

    def _trace(
        self, ticket: Ticket, step: int, steps: int, started: float, event_id: str, code: str
    ) -> None:
        """A lineage event for a step, a child of the submit's event."""
        if self.events is None or not ticket.event_id:
            return
        ms = round((time.perf_counter() - started) * 1000, 3)
        self.events.emit(
            Event(
                event_id=event_id,
                parent_id=ticket.event_id,
                depth=ticket.depth + 1,
                kind="db",
                node=self.node,
                env=self.env,
                at=time.time() - ms / 1000,
                ms=ms,
                template=ticket.template,
                operation="submit",
                code=code,
                message=f"{ticket.operation} step {step + 1}/{steps or '…'}",
            )
        )

    async def _purge(self) -> None:
        while True:
            await asyncio.sleep(_PURGE_SECONDS)
            try:
                purged = await self.store.purge_tickets(time.time(), _PURGE_BATCH)
            except RequestError as exc:
                logger.warning("purging expired tickets failed ({})", exc)
                continue
            if purged:
                logger.info("purged {} expired tickets", purged)
