"""Retention sweeps: the segundo role submits one ticket per template per interval.

A template with ``retention_days`` has a ``retention`` long operation
(:mod:`beds.templates.retention`). On nodes whose role has the broker named
``calgon.retention_broker`` (the seed ``segundo`` role's ``whBroker``), a
:class:`RetentionScheduler` records, every ``calgon.retention_interval`` seconds, a ticket of
that operation for each registered template with retention, straight in the ticket store:
``before`` is now minus ``retention_days``, ``limit`` the template's batch size. The
ticket's idempotency key names the template and the interval (``retention:{template}:{n}``,
``n`` the interval's number since the epoch), so however many segundo nodes run, one ticket per
template per interval is recorded. It is recorded on the ``warehouse`` lane
(:mod:`beds.calgon.lanes`): the workers of ``type = "tickets"`` brokers of that lane (the seed
whBroker's) run it batch by batch, never the appServer's default-lane workers; its result (one
``{"retired": n}`` per batch) is the sweep's progress, and each batch's count is added to the
``beds_retention_retired_total`` metric of the node that ran it.

Nothing here touches the hot path: the scheduler only writes tickets, and a template whose
previous sweep is still running is skipped (its next interval tries again).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import attrs
from loguru import logger

from beds.bugs import report_bug
from beds.calgon.tickets import WAREHOUSE_LANE, Ticket, TicketStore
from beds.config.model import CalgonSettings
from beds.dispatch.trace import EventSink
from beds.errors import RequestError
from beds.lineage import Event, new_event_id
from beds.templates.model import Template
from beds.templates.retention import RETENTION
from beds.values import to_wire_record

if TYPE_CHECKING:
    from beds.config.model import Config

__all__ = ("PRINCIPAL", "RetentionScheduler", "retention_ticket", "swept_templates")

PRINCIPAL = "beds.retention"
"""The principal of the sweeps' tickets: no caller is it, so only admins read them."""
_RETRY_SECONDS = 30.0
"""How soon a template whose ticket could not be recorded (the store away) is tried again."""
_DAY = 86_400.0


def swept_templates(
    config: Config, templates: Mapping[str, Template], role: str | None = None
) -> dict[str, Template]:
    """The templates whose sweeps a node of ``role`` (default: this node's) submits, by name.

    Those with retention, when the role has the ``calgon.retention_broker`` broker; none
    otherwise.
    """
    if config.calgon.retention_broker not in config.roles[role or config.node.role].brokers:
        return {}
    return {name: t for name, t in sorted(templates.items()) if t.retention is not None}


def retention_ticket(
    template: Template, now: float, interval: float, node: str, env: str
) -> Ticket:
    """The ticket of ``template``'s sweep for the interval ``now`` falls in.

    Raises:
        ValueError: the template has no retention.
    """
    retention = template.retention
    if retention is None:
        raise ValueError(f"template {template.name!r} has no retention")
    before = dt.datetime.fromtimestamp(now - retention.days * _DAY, dt.UTC)
    return Ticket(
        ticket_id=str(uuid.uuid4()),
        template=template.name,
        operation=RETENTION,
        params=to_wire_record({"before": before, "limit": retention.batch_size}),
        principal=PRINCIPAL,
        # The template is in the key: the store keeps one key per principal, for any template.
        idempotency_key=f"{RETENTION}:{template.name}:{int(now // interval)}",
        event_id=new_event_id(node, env),
        steps=0,
        lane=WAREHOUSE_LANE,
        created_at=now,
    )


@attrs.define(eq=False)
class RetentionScheduler:
    """Records the retention sweeps' tickets of a node's ``templates`` every interval."""

    store: TicketStore
    templates: Mapping[str, Template]
    """The templates with retention (:func:`swept_templates`)."""
    settings: CalgonSettings
    node: str
    env: str
    events: EventSink | None = None
    """Where the lineage event of each recorded sweep goes (its steps are its children)."""
    wake: Callable[[], None] | None = None
    """Tells this node's warehouse-lane workers a ticket is waiting, when it has them."""
    _task: asyncio.Task[None] | None = attrs.field(default=None, init=False)
    _last: dict[str, str] = attrs.field(factory=dict, init=False)
    """Template → the ticket of its latest sweep this node recorded or found."""

    def start(self) -> None:
        """Start scheduling: a first round now, then one every interval."""
        self._task = asyncio.create_task(self._loop(), name="beds-retention")

    async def stop(self) -> None:
        """Stop scheduling (tickets already recorded run on)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def schedule(self, now: float) -> dict[str, Ticket]:
        """Record the sweep of every template for the interval of ``now``; its ticket, by name.

        That is the interval's ticket (recorded here, or by another node under the same key),
        or the previous sweep's while it has not finished (no second sweep is recorded then).
        A template whose ticket could not be recorded (the store away; logged) is left out.
        """
        tickets: dict[str, Ticket] = {}
        for name, template in self.templates.items():
            ticket = retention_ticket(
                template, now, self.settings.retention_interval, self.node, self.env
            )
            try:
                previous = await self._unfinished(name, ticket.idempotency_key)
                if previous is not None:
                    logger.info(
                        "the retention sweep of {} is still {}: the next one waits",
                        name,
                        previous.state.value,
                    )
                    tickets[name] = previous
                    continue
                kept, new = await self.store.record_ticket(ticket)
            except RequestError as exc:
                logger.warning("recording the retention sweep of {} failed ({})", name, exc)
                continue
            self._last[name] = kept.ticket_id
            tickets[name] = kept
            if new:
                self._recorded(kept)
        return tickets

    async def _unfinished(self, name: str, key: str | None) -> Ticket | None:
        """The template's sweep of an earlier interval, if it has not finished."""
        last = self._last.get(name)
        ticket = None if last is None else await self.store.read_ticket(last)
        if ticket is None or ticket.finished or ticket.idempotency_key == key:
            return None
        return ticket

    def _recorded(self, ticket: Ticket) -> None:
        logger.info(
            "retention sweep of {} recorded: ticket {}, before {}",
            ticket.template,
            ticket.ticket_id,
            ticket.params["before"],
        )
        if self.wake is not None:
            self.wake()
        if self.events is not None:
            self.events.emit(
                Event(
                    event_id=ticket.event_id,
                    kind="log",
                    node=self.node,
                    env=self.env,
                    at=ticket.created_at,
                    template=ticket.template,
                    operation="submit",
                    code="INFO",
                    message=f"retention sweep scheduled: ticket {ticket.ticket_id}, "
                    f"before {ticket.params['before']}",
                )
            )

    async def _loop(self) -> None:
        interval = self.settings.retention_interval
        while True:
            now = time.time()
            try:
                done = await self.schedule(now)
            except Exception as exc:  # the loop must outlive any round
                report_bug(exc, "scheduling the retention sweeps failed")
                done = {}
            # At the start of the next interval, when every node's round has the same key;
            # sooner when a ticket could not be recorded (its key is still this interval's).
            delay = interval - now % interval
            if len(done) < len(self.templates):
                delay = min(delay, _RETRY_SECONDS)
            await asyncio.sleep(delay)
