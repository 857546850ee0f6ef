"""CALGON requests: ``submit`` a long operation for a ticket; read, page or cancel a ticket.

``submit`` (payload ``{"operation", "params"}``) is answered ``202`` with the ticket as soon as
it is recorded in the ticket store; a worker runs it (:mod:`beds.calgon.worker`). ``ticket``
(payload ``{"ticket", "cancel", "cursor", "limit"}``) answers the ticket's state and, once it
succeeded, a page of its result (``meta.next`` pages on). A ticket is its submitter's: another
principal gets ``BEDS-404`` for it, as for an unknown ticket, unless it has the template's
admin role. ``beds_ticket`` is a built-in template that reads any template's ticket by id.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson

from beds.calgon.tickets import Ticket, TicketState, TicketStore, lane_of
from beds.config.model import CalgonSettings
from beds.errors import (
    IdempotencyKeyReused,
    NotFound,
    TicketExpired,
    TicketFinished,
    Unauthenticated,
    Unauthorized,
    UnsupportedOperation,
    ValidationFailed,
)
from beds.idempotency import fingerprint
from beds.namaste import Record
from beds.pagination import Cursors
from beds.templates.retention import RETENTION
from beds.templates.validate import check_value
from beds.values import to_wire_record

if TYPE_CHECKING:
    from collections.abc import Mapping

    from beds.auth.principal import Principal
    from beds.envelopes import Request
    from beds.namaste import CallContext
    from beds.templates.model import LongOperation, Template

__all__ = ("TICKET_TEMPLATE", "Calgon", "TicketPage", "long_params", "ticket_view")

TICKET_TEMPLATE: Final = "beds_ticket"
"""The built-in template that reads a ticket by id alone (``beds ticket ID``)."""

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_SUBMIT_KEYS = frozenset({"operation", "params"})
_TICKET_KEYS = frozenset({"ticket", "cancel", "cursor", "limit"})


@attrs.frozen
class TicketPage:
    """A ``ticket`` reply: the ticket (``data``) and the cursor of the result's next page."""

    ticket: Record
    next: str | None = None


@attrs.define
class Calgon:
    """Answers ``submit`` and ``ticket`` for a node, from its ticket store."""

    store: TicketStore
    settings: CalgonSettings
    cursors: Cursors
    max_message_bytes: int
    wake: Callable[[], None] | None = None
    """Tells this node's workers a ticket is waiting (they also poll)."""

    async def submit(self, request: Request, template: Template, ctx: CallContext) -> Record:
        """Record a ticket for the requested long operation and return it (state ``queued``).

        Raises:
            UnsupportedOperation: the template declares no long operation (BEDS-405).
            ValidationFailed: an undeclared operation, unknown or bad params (BEDS-422).
            IdempotencyKeyReused: the key named another submit (BEDS-409K).
        """
        if not template.long_operations:
            raise UnsupportedOperation(f"template {template.name!r} declares no long operation")
        operation, params = _submitted(template, request.payload)
        if operation.name == RETENTION and template.retention is not None:
            _check_admin(template, ctx)
        key = request.meta.idempotency_key
        ticket = Ticket(
            ticket_id=str(uuid.uuid4()),
            template=template.name,
            operation=operation.name,
            params=to_wire_record(params),
            principal=ctx.principal,
            idempotency_key=key,
            fingerprint=fingerprint(request) if key is not None else "",
            event_id=ctx.event_id,
            depth=request.meta.depth,
            steps=operation.steps,
            lane=lane_of(operation.name),
            created_at=time.time(),
        )
        kept, new = await self.store.record_ticket(ticket)
        if not new and kept.fingerprint != ticket.fingerprint:
            raise IdempotencyKeyReused(
                "this idempotency key was used for another submit; its ticket stands",
                details=(f"ticket: {kept.ticket_id}",),
            )
        if new and self.wake is not None:
            self.wake()
        return ticket_view(kept)

    async def ticket(
        self, request: Request, principal: Principal | None, admin_role: str | None
    ) -> TicketPage:
        """The ticket a request names, after cancelling it when asked; with its result page.

        ``admin_role``: the role that reads every principal's tickets of the request's template
        (``None`` for ``beds_ticket``: then only the ``admin`` role does).

        Raises:
            ValidationFailed: a malformed payload or ticket id (BEDS-422).
            NotFound: no such ticket, or another principal's (BEDS-404).
            TicketExpired: it finished longer ago than ``calgon.ticket_ttl`` (BEDS-410).
            TicketFinished: cancel of a finished ticket (BEDS-409F).
        """
        ticket_id, cancel, cursor, limit = _ticket_payload(request.payload, self.settings)
        ticket = await self.store.read_ticket(ticket_id)
        if ticket is None or not _may_read(ticket, request, principal, admin_role):
            raise NotFound("no ticket has that id", details=(f"ticket: {ticket_id}",))
        now = time.time()
        if ticket.expires_at is not None and ticket.expires_at < now:
            raise TicketExpired(
                "the ticket expired; its result is gone", details=(f"ticket: {ticket_id}",)
            )
        if cancel:
            if ticket.finished:
                raise TicketFinished(
                    f"the ticket is {ticket.state.value}; only an unfinished one is cancelled",
                    details=(f"ticket: {ticket_id}",),
                )
            cancelled = await self.store.cancel_ticket(
                ticket_id, now, now + self.settings.ticket_ttl
            )
            ticket = cancelled or ticket
        view = ticket_view(ticket)
        if ticket.state is not TicketState.SUCCEEDED:
            return TicketPage(view)
        scope = ["ticket", ticket_id]
        after = None
        if cursor is not None:
            step, index = self.cursors.unseal(cursor, scope, 2)
            after = (int(step), int(index))
        rows = await self.store.read_results(ticket_id, after, limit + 1)
        budget = self.max_message_bytes // 2  # the rest of the reply stays well inside the limit
        result: list[Record] = []
        last: tuple[int, int] | None = None
        for step, index, record in rows[:limit]:
            budget -= len(orjson.dumps(record))
            if budget < 0 and result:
                break
            result.append(record)
            last = (step, index)
        view["result"] = result
        more = len(result) < len(rows)
        return TicketPage(
            view, next=self.cursors.seal(scope, list(last)) if more and last else None
        )


def ticket_view(ticket: Ticket) -> Record:
    """A ticket as a reply shows it (times in ISO 8601, UTC)."""
    return {
        "ticket": ticket.ticket_id,
        "template": ticket.template,
        "operation": ticket.operation,
        "params": dict(ticket.params),
        "lane": ticket.lane,
        "state": ticket.state.value,
        "progress": round(ticket.progress, 4),
        "steps": ticket.steps,
        "steps_done": ticket.steps_done,
        "attempts": ticket.attempts,
        "cancel_requested": ticket.cancel_requested,
        "created_at": _iso(ticket.created_at),
        "started_at": _iso(ticket.started_at),
        "finished_at": _iso(ticket.finished_at),
        "expires_at": _iso(ticket.expires_at),
        "event_id": ticket.event_id,
        "error": dict(ticket.error) if ticket.error is not None else None,
    }


def long_params(operation: LongOperation, raw: Mapping[str, Any], path: str) -> dict[str, Any]:
    """A long operation's params from JSON values: checked, converted, defaults applied.

    Raises:
        ValidationFailed: an unknown param, a missing one without a default, a bad value; each
            problem names its path (``$.payload.params.days``).
    """
    problems = [
        f"{path}.{name}: is not a param of {operation.name}"
        for name in sorted(set(raw) - set(operation.params))
    ]
    values: dict[str, Any] = {}
    for name, param in operation.params.items():
        value = raw.get(name, param.default)
        if name not in raw and param.default is None and param.field.required:
            problems.append(f"{path}.{name}: is required")
            continue
        values[name] = check_value(param.field, value, f"{path}.{name}", problems)
    if problems:
        raise ValidationFailed(
            f"the params do not fit long operation {operation.name!r}", details=problems
        )
    return values


def _check_admin(template: Template, ctx: CallContext) -> None:
    """A retention sweep archives or deletes what is older than its ``before``: admins only.

    Raises:
        Unauthenticated: an anonymous caller (BEDS-401).
        Unauthorized: a principal without the template's admin role (BEDS-403).
    """
    identity = ctx.identity
    if identity is None:
        raise Unauthenticated(f"a {RETENTION} sweep of {template.name} needs a credential")
    if template.access.admin_role not in identity.roles:
        raise Unauthorized(
            f"only the {template.access.admin_role!r} role submits {RETENTION} sweeps",
            details=(f"principal: {identity.handle}",),
        )


def _submitted(
    template: Template, payload: Mapping[str, Any]
) -> tuple[LongOperation, dict[str, Any]]:
    unknown = sorted(set(payload) - _SUBMIT_KEYS)
    if unknown:
        raise ValidationFailed(
            "the submit payload has unknown keys",
            details=tuple(f"$.payload.{key}: is not a submit key" for key in unknown),
        )
    name = payload.get("operation")
    operation = template.long_operations.get(name) if isinstance(name, str) else None
    if operation is None:
        declared = ", ".join(sorted(template.long_operations))
        raise ValidationFailed(
            f"template {template.name!r} declares no such long operation",
            details=(f"$.payload.operation: must be one of {declared}",),
        )
    raw = payload.get("params", {})
    if not isinstance(raw, dict):
        raise ValidationFailed(
            "the params must be an object", details=("$.payload.params: must be an object",)
        )
    return operation, long_params(operation, raw, "$.payload.params")


def _ticket_payload(
    payload: Mapping[str, Any], settings: CalgonSettings
) -> tuple[str, bool, str | None, int]:
    problems = [
        f"$.payload.{key}: is not a ticket key" for key in sorted(set(payload) - _TICKET_KEYS)
    ]
    ticket_id = payload.get("ticket")
    if not isinstance(ticket_id, str) or not _UUID.fullmatch(ticket_id):
        problems.append("$.payload.ticket: must be a ticket id (a UUID from submit)")
    cancel = payload.get("cancel", False)
    if not isinstance(cancel, bool):
        problems.append("$.payload.cancel: must be true or false")
    cursor = payload.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        problems.append("$.payload.cursor: must be a cursor from meta.next")
    limit = payload.get("limit", settings.page_size)
    if (
        isinstance(limit, bool)
        or not isinstance(limit, int)
        or not 1 <= limit <= settings.page_size
    ):
        problems.append(f"$.payload.limit: must be an integer from 1 to {settings.page_size}")
    if problems:
        raise ValidationFailed("the ticket payload is not valid", details=problems)
    return ticket_id, cancel, cursor, limit  # type: ignore[return-value]  # checked above


def _may_read(
    ticket: Ticket, request: Request, principal: Principal | None, admin_role: str | None
) -> bool:
    """Whether the request may read the ticket: its submitter's, or an admin's.

    Through the ticket's template or ``beds_ticket`` only.
    """
    if request.template not in (TICKET_TEMPLATE, ticket.template):
        return False
    if ticket.principal is None or ticket.principal == (principal.id if principal else None):
        return True
    return principal is not None and (admin_role or "admin") in principal.roles


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return dt.datetime.fromtimestamp(moment, dt.UTC).isoformat(timespec="milliseconds")
