"""``/v1/tickets/{id}``: a CALGON ticket's state, its cancel, and its progress as events.

``GET`` answers the ticket (``data``) and, once it succeeded, a page of its result
(``data.result``, ``meta.next`` the cursor of the next page); ``DELETE`` cancels it.
``GET /v1/tickets/{id}/events`` reads the ticket every ``http.ticket_poll_seconds`` and sends
``event: ticket`` each time it changed, until it is finished (succeeded, failed, cancelled),
then ends; an error reply ends the stream with ``event: error`` and its problem document.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any, Final

import attrs

from beds.dispatch.calgon import TICKET_TEMPLATE
from beds.envelopes import Operation
from beds.errors import TransportError
from beds_http.forward import Forwarder, NodeError, bearer_token, json_response
from beds_http.problems import EdgeRefusal, problem_of_error
from beds_http.routes import check_cursor
from beds_http.sse import KEEPALIVE, event_stream, sse_event

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request
    from starlette.responses import Response as HttpResponse

__all__ = ("TicketRoutes",)

_TICKET_ID: Final = re.compile(r"^[0-9A-Fa-f-]{32,36}$")
FINISHED: Final = frozenset({"succeeded", "failed", "cancelled"})


def _ticket_id(request: Request) -> str:
    ticket = str(request.path_params["ticket"])
    if not _TICKET_ID.fullmatch(ticket):
        raise EdgeRefusal("BEDS-400", "a ticket id is a UUID", reason="path")
    return ticket


@attrs.define
class TicketRoutes:
    """The ticket endpoints."""

    forward: Forwarder

    async def read(self, request: Request) -> HttpResponse:
        """``GET /v1/tickets/{id}`` (``?cursor=…&limit=N`` pages a result)."""
        request.scope["beds_route"] = "/v1/tickets/{ticket}"
        token = bearer_token(request)
        payload: dict[str, Any] = {"ticket": _ticket_id(request)}
        unknown = sorted(set(request.query_params) - {"cursor", "limit"})
        if unknown:
            raise EdgeRefusal(
                "BEDS-422",
                "the query string does not match the route",
                reason="params",
                details=[f"$.query.{name}: is not a param of this route" for name in unknown],
            )
        cursor = request.query_params.get("cursor")
        if cursor is not None:
            payload["cursor"] = check_cursor(cursor)
        limit = request.query_params.get("limit")
        if limit is not None:
            if not limit.isdigit() or not 1 <= int(limit) <= 100_000:
                raise EdgeRefusal(
                    "BEDS-422",
                    "the query string does not match the route",
                    reason="params",
                    details=["$.query.limit: must be a positive integer"],
                )
            payload["limit"] = int(limit)
        response = await self.forward.call(
            request, TICKET_TEMPLATE, Operation.TICKET, payload, token=token
        )
        return json_response({"data": response.data, "meta": {"next": response.meta.next}})

    async def cancel(self, request: Request) -> HttpResponse:
        """``DELETE /v1/tickets/{id}``: cancel it (``BEDS-409F`` once it finished)."""
        request.scope["beds_route"] = "/v1/tickets/{ticket}"
        token = bearer_token(request)
        payload = {"ticket": _ticket_id(request), "cancel": True}
        response = await self.forward.call(
            request, TICKET_TEMPLATE, Operation.TICKET, payload, token=token
        )
        return json_response({"data": response.data})

    async def events(self, request: Request) -> HttpResponse:
        """``GET /v1/tickets/{id}/events``: the ticket as it changes, until it is finished."""
        request.scope["beds_route"] = "/v1/tickets/{ticket}/events"
        token = bearer_token(request)
        ticket = _ticket_id(request)
        # The first read answers errors (unknown ticket, refused token) as a problem response.
        first = await self.forward.call(
            request, TICKET_TEMPLATE, Operation.TICKET, {"ticket": ticket}, token=token
        )
        return event_stream(self._changes(request, ticket, token, first.data))

    async def _changes(
        self, request: Request, ticket: str, token: str | None, first: Any
    ) -> AsyncIterator[bytes]:
        settings = self.forward.settings
        last = first
        yield sse_event("ticket", first)
        state = first.get("state") if isinstance(first, dict) else None
        waited = 0.0
        while state not in FINISHED:
            await asyncio.sleep(settings.ticket_poll_seconds)
            waited += settings.ticket_poll_seconds
            try:
                response = await self.forward.call(
                    request, TICKET_TEMPLATE, Operation.TICKET, {"ticket": ticket}, token=token
                )
            except (NodeError, TransportError) as exc:
                error = exc.error if isinstance(exc, NodeError) else exc
                yield sse_event(
                    "error",
                    problem_of_error(
                        error,
                        instance=request.url.path,
                        trace_id=request.state.trace.trace_id,
                        status=exc.response.status if isinstance(exc, NodeError) else None,
                    ),
                )
                return
            if response.data != last:
                last, waited = response.data, 0.0
                yield sse_event("ticket", last)
            elif waited >= settings.keepalive_seconds:
                waited = 0.0
                yield KEEPALIVE
            state = last.get("state") if isinstance(last, dict) else None
