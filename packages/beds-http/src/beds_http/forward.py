"""Sending a request to BEDS for an HTTP request: credential, trace, deadline, errors.

The edge is an AMQP client of BEDS like any other (:class:`~beds.client.BedsClient`); it never
touches a database and never decides who may do what. The caller's Bearer token travels as
the request's credential, so the node authenticates it and applies the template's access rules;
the edge only refuses a header that cannot be a token (:func:`bearer_token`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs
import orjson
from starlette.responses import Response as HttpResponse

from beds_http.problems import EdgeRefusal
from beds_http.settings import HttpSettings

if TYPE_CHECKING:
    from starlette.requests import Request

    from beds.envelopes import Operation, Response
    from beds_http.trace import TraceContext

__all__ = ("Caller", "Forwarder", "NodeError", "bearer_token", "json_response")

_TOKEN: Final = re.compile(r"^[A-Za-z0-9._~+/=-]{8,8000}$")
"""What a session token or an identity provider's JWT can look like (RFC 6750 ``b64token``)."""


class Caller(Protocol):
    """What the edge needs of a BEDS client (:class:`~beds.client.BedsClient` is one)."""

    async def call(
        self,
        template: str,
        operation: Operation | str,
        payload: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        token: str | None = None,
        idempotency_key: str | None = None,
        parent_id: str | None = None,
        depth: int | None = None,
    ) -> Response:
        """Send one request; return its response (error replies included)."""
        ...

    async def connect(self) -> None:
        """Open the connection if it is not open (``/healthz`` asks)."""
        ...


class NodeError(Exception):
    """A node answered with an error: its code, message and status become the problem."""

    def __init__(self, response: Response) -> None:
        assert response.error is not None
        super().__init__(response.error.message)
        self.response = response
        self.error = response.error


def bearer_token(request: Request) -> str | None:
    """The request's Bearer token, or ``None`` without an ``Authorization`` header.

    Raises:
        EdgeRefusal: ``BEDS-401`` when the header is not ``Bearer <token>`` with a token of
            token characters (the node checks the token itself).
    """
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not _TOKEN.fullmatch(token.strip()):
        raise EdgeRefusal(
            "BEDS-401",
            "the Authorization header must be 'Bearer <token>'",
            reason="token",
            headers={"WWW-Authenticate": 'Bearer realm="beds"'},
        )
    return token.strip()


def json_response(
    document: Any, status: int = 200, headers: dict[str, str] | None = None
) -> HttpResponse:
    """A JSON response (orjson: BEDS values such as datetimes are already wire text)."""
    return HttpResponse(
        orjson.dumps(document), status_code=status, media_type="application/json", headers=headers
    )


@attrs.define
class Forwarder:
    """Sends the BEDS requests of HTTP requests through one client.

    Args:
        client: the BEDS client (one per edge process).
        settings: ``[http]`` (the reply timeout).
        origin: this edge's name in lineage parents (``http``).
        env: the environment (``node.env``).
        handle_of: the principal's handle in a token a node accepted (for the HTTP request's
            lineage event; :mod:`beds_http.lineage`), ``""`` when it names none.
    """

    client: Caller
    settings: HttpSettings
    origin: str = "http"
    env: str = "dev"
    handle_of: Callable[[str], str] | None = None

    async def call(
        self,
        request: Request,
        template: str,
        operation: Operation,
        payload: dict[str, Any],
        *,
        token: str | None,
        idempotency_key: str | None = None,
    ) -> Response:
        """Send one request for ``request``; return the successful response.

        Raises:
            NodeError: the node answered with an error.
            TransportError: no reply (RabbitMQ unreachable, nobody serving, timeout).
        """
        trace: TraceContext = request.state.trace
        request.state.forwarded = True  # the HTTP request gets its lineage event
        response = await self.client.call(
            template,
            operation,
            payload,
            timeout=self.settings.request_timeout,
            token=token or "",
            idempotency_key=idempotency_key,
            parent_id=trace.parent_event(self.origin, self.env),
            depth=1,
        )
        if response.meta.event_id:
            request.state.event_id = response.meta.event_id
        if token and response.ok and self.handle_of is not None:
            # The node accepted the token: its claims name who asked (never the token itself).
            request.state.principal = self.handle_of(token) or None
        if not response.ok:
            raise NodeError(response)
        return response
