"""The edge's outer layer: trace context, header checks, origin check, metrics, last resort.

A pure ASGI middleware (streams pass through untouched), outside CORS and the routes:

1. the W3C trace of the request (:mod:`beds_http.trace`) goes to ``request.state.trace``, and
   the response carries ``traceparent``, the ``X-Request-Id`` it was sent, and
   ``X-Beds-Event-Id`` (the node's event id of the request, for ``beds lineage``);
2. a cross-origin request (an ``Origin`` that is neither this edge's nor ``http.public_url``
   nor in ``http.cors_origins``) is refused with ``BEDS-403`` before any route runs, preflight
   included;
3. every answer is counted (``beds_http_requests_total{route,status}``);
4. an exception no handler answered becomes a ``BEDS-500`` problem (the log has the trace),
   never a bare 500 page;
5. a request that sent anything to BEDS leaves its ``http`` lineage event once answered
   (:mod:`beds_http.lineage`: route template, status, problem code, duration, principal).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers

from beds.bugs import report_bug
from beds_http.problems import EdgeRefusal, problem_document, problem_of_error, problem_response
from beds_http.trace import check_header_text, request_id, trace_of

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from beds_http.lineage import EdgeLineage
    from beds_http.metrics import EdgeMetrics
    from beds_http.settings import HttpSettings

__all__ = ("EdgeMiddleware", "same_origin")


def same_origin(scope: Scope, headers: Headers) -> str:
    """The origin a browser names for a page of this edge, from the request itself."""
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    return f"{scheme}://{headers.get('host', '')}".lower()


class EdgeMiddleware:
    """See the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: HttpSettings,
        metrics: EdgeMetrics,
        lineage: EdgeLineage | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.lineage = lineage
        self.allowed = frozenset(settings.cors_origins) | (
            {settings.public_url} if settings.public_url else set()
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection (HTTP requests; lifespan passes through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        at, began = time.time(), time.perf_counter()
        headers = Headers(scope=scope)
        state: dict[str, Any] = scope.setdefault("state", {})
        started = False
        status = 500
        extra: list[tuple[bytes, bytes]] = []

        async def send_with_headers(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                trace = state.get("trace")
                added = list(extra)
                if trace is not None:
                    added.append((b"traceparent", trace.traceparent.encode()))
                event_id = state.get("event_id")
                if event_id:
                    added.append((b"x-beds-event-id", str(event_id).encode()))
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        try:
            try:
                state["trace"] = trace_of(headers.get("traceparent"))
                given = request_id(headers.get("x-request-id"))
                if given is not None:
                    extra.append((b"x-request-id", given.encode()))
                self._check_origin(scope, headers)
            except EdgeRefusal as refusal:
                state.setdefault("trace", trace_of(None))
                self.metrics.refused[refusal.reason] += 1
                scope["beds_route"] = "refused"
                await self._problem(scope, send_with_headers, refusal)
                return
            try:
                await self.app(scope, receive, send_with_headers)
            except Exception as exc:
                report_bug(exc, "beds http: {} {} failed", scope["method"], scope["path"])
                if started:
                    return  # a stream broke midway: nothing more can be said to the client
                state["code"] = "BEDS-500"
                await self._problem(scope, send_with_headers, None)
        finally:
            route = scope.get("beds_route") or (
                "unmatched" if scope["path"].startswith("/v1/") else "static"
            )
            self.metrics.requests[(str(route), str(status))] += 1
            if self.lineage is not None and state.get("forwarded"):
                self.lineage.record(
                    state["trace"],
                    method=str(scope["method"]),
                    route=str(route),
                    status=status,
                    code=str(state.get("code", "")),
                    at=at,
                    ms=(time.perf_counter() - began) * 1000,
                    principal=state.get("principal"),
                )

    def _check_origin(self, scope: Scope, headers: Headers) -> None:
        origin = headers.get("origin")
        if origin is None:
            return
        check_header_text("Origin", origin)
        origin = origin.lower()
        if origin == same_origin(scope, headers) or origin in self.allowed:
            return
        raise EdgeRefusal(
            "BEDS-403",
            "cross-origin requests from this origin are not allowed (http.cors_origins)",
            reason="cors",
        )

    async def _problem(self, scope: Scope, send: Send, refusal: EdgeRefusal | None) -> None:
        trace_id = scope["state"]["trace"].trace_id
        instance = scope["path"]
        if refusal is None:
            document = problem_document(
                "BEDS-500",
                "the edge failed unexpectedly; its log has the details",
                status=500,
                instance=instance,
                trace_id=trace_id,
            )
            headers: dict[str, str] = {}
        else:
            document = problem_of_error(refusal, instance=instance, trace_id=trace_id)
            headers = refusal.headers
        response = problem_response(document, headers=headers)
        await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
