"""The ASGI application: routes from the templates, the edge's own routes, the static page.

:func:`create_app` builds it from a BEDS configuration. With no ``registry`` it loads the
installed template packages as a node does (plugins by entry point, ``[plugins] disabled``
honoured); with no ``client`` it opens a :class:`~beds.client.BedsClient` on ``[amqp]`` when
the application starts, and a live-event consumer of the live stream unless
``[control] enabled = false``. Layers, outermost first: :class:`~beds_http.middleware.
EdgeMiddleware` (trace, origin, metrics), Starlette's ``CORSMiddleware`` (``http.cors_origins``),
the routes, and the static folder at ``/``. Each HTTP request forwarded to BEDS leaves an
``http`` lineage event, the root of its tree (:mod:`beds_http.lineage`), published on the logs
exchange while ``[lineage] enabled``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from beds.errors import BedsError, RequestError, TransportError
from beds_http.auth import AuthRoutes, claims_of
from beds_http.forward import Forwarder, NodeError, json_response
from beds_http.lineage import EdgeLineage
from beds_http.live import LiveConsumer, LiveHub, LiveRoutes
from beds_http.metrics import EdgeMetrics
from beds_http.middleware import EdgeMiddleware
from beds_http.openapi import docs_page, openapi_document
from beds_http.problems import EdgeRefusal, problem_of_error, problem_response
from beds_http.routes import RESERVED_NAMES, TemplateEndpoints, route_table
from beds_http.settings import HttpSettings, parse_settings
from beds_http.tickets import TicketRoutes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from starlette.requests import Request

    from beds.config.model import Config
    from beds.registry import TemplateRegistry
    from beds.templates.model import Template
    from beds_http.forward import Caller

__all__ = ("EDGE_ORIGIN", "create_app", "installed_templates")

EDGE_ORIGIN = "http"
"""The edge's name in the lineage parents of the requests it sends."""
_ALLOW_HEADERS = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "traceparent",
    "X-Request-Id",
    "Last-Event-ID",
)
_EXPOSE_HEADERS = ("traceparent", "X-Request-Id", "X-Beds-Event-Id", "WWW-Authenticate")


def installed_templates(config: Config) -> dict[str, Template]:
    """The templates of the installed packages (``[plugins] disabled`` honoured).

    Only the template declarations are loaded: no adapter is built, so the edge needs no
    ``[stores]`` configuration and never a database.

    Raises:
        BedsError: a plugin or a template failed to load (the message says which).
    """
    import pluggy

    from beds.errors import PluginError, TemplateError
    from beds.plugins import Hooks, make_plugin_manager

    try:
        pm = make_plugin_manager(disabled=config.plugins.disabled, strict=config.production)
        pm.check_pending()
        registry = Hooks(pm).register_templates()
    except (PluginError, TemplateError, pluggy.PluginValidationError) as exc:
        raise BedsError(f"the installed templates could not be loaded: {exc}") from exc
    return dict(registry.templates)


def create_app(
    config: Config,
    registry: TemplateRegistry | Mapping[str, Template] | None = None,
    client: Caller | None = None,
    *,
    live: bool = True,
    settings: HttpSettings | None = None,
    lineage: bool | None = None,
) -> Starlette:
    """The edge's ASGI application (see the module docstring).

    Args:
        config: the BEDS configuration (``[amqp]``, ``[control]``, ``[auth]``, ``[http]``).
        registry: the templates to serve; ``None``: the installed ones.
        client: the BEDS client to send requests with; ``None``: one opened at start-up
            (and closed at shutdown) from ``[amqp]``.
        live: read live events from the live stream (tests feed ``app.state.hub``).
        settings: ``[http]`` already parsed; ``None``: parsed from ``config.http``.
        lineage: publish the ``http`` lineage events on the logs exchange (with ``[lineage]
            enabled``); ``None``: when the application opens its own client (tests with a
            client of their own set ``app.state.lineage.sink``).

    Raises:
        ConfigError: ``[http]`` is not valid (names ``http.<key>``).
    """
    settings = settings or parse_settings(config.http, config)
    if registry is None:
        templates: Mapping[str, Template] = installed_templates(config)
    elif hasattr(registry, "templates"):
        templates = registry.templates
    else:
        templates = registry
    metrics = EdgeMetrics()
    holder: dict[str, Any] = {"client": client}
    forward = Forwarder(_LazyClient(holder), settings, EDGE_ORIGIN, config.node.env)
    auth = AuthRoutes(forward, config.auth)
    forward.handle_of = lambda token: auth.caller_of(claims_of(token)).handle
    edge_lineage = EdgeLineage(config, EDGE_ORIGIN)
    metrics.lineage = edge_lineage
    publish_lineage = config.lineage.enabled and (client is None if lineage is None else lineage)
    hub = LiveHub(templates, settings, metrics)
    consumer: list[LiveConsumer] = []
    document = openapi_document(templates, settings)
    tickets = TicketRoutes(forward)
    endpoints = TemplateEndpoints(forward)

    v1: list[Route] = [
        Route("/auth/signup", auth.signup, methods=["POST"]),
        Route("/auth/login", auth.login, methods=["POST"]),
        Route("/auth/logout", auth.logout, methods=["POST"]),
        Route("/auth/me", auth.me, methods=["GET"]),
        Route("/events", LiveRoutes(hub, auth).events, methods=["GET"]),
        Route("/tickets/{ticket}", tickets.read, methods=["GET"]),
        Route("/tickets/{ticket}", tickets.cancel, methods=["DELETE"]),
        Route("/tickets/{ticket}/events", tickets.events, methods=["GET"]),
    ]
    for spec in route_table(templates.values()):
        v1.append(
            Route(
                spec.path.removeprefix("/v1"),
                endpoints.endpoint(spec),
                methods=[spec.method],
                name=spec.operation_id,
            )
        )

    async def healthz(request: Request) -> Response:
        request.scope["beds_route"] = "/healthz"
        checks: dict[str, bool] = {}
        try:
            await forward.client.connect()
            checks["amqp"] = True
        except (TransportError, OSError):
            checks["amqp"] = False
        if consumer:
            checks["live"] = consumer[0].connected
        healthy = all(checks.values())
        return json_response({"ok": healthy, "checks": checks}, 200 if healthy else 503)

    async def metrics_endpoint(request: Request) -> Response:
        request.scope["beds_route"] = "/metrics"
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4")

    async def openapi(request: Request) -> Response:
        request.scope["beds_route"] = "/openapi.json"
        return json_response(document)

    async def docs(request: Request) -> Response:
        request.scope["beds_route"] = "/docs"
        return HTMLResponse(docs_page(document))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        opened = None
        if holder["client"] is None:
            opened = _open_client(config, settings)
            holder["client"] = opened
        if live and config.control.enabled and hub.templates:
            consumer.append(LiveConsumer(config, hub))
            await consumer[0].start()
        if publish_lineage:
            await edge_lineage.start()
        try:
            yield
        finally:
            for running in consumer:
                await running.stop()
            await edge_lineage.stop()
            if opened is not None:
                await opened.close()

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/docs", docs, methods=["GET"]),
            Mount("/v1", routes=v1),
            Mount("/", StaticFiles(directory=settings.static_path, html=True)),
        ],
        middleware=[
            Middleware(EdgeMiddleware, settings=settings, metrics=metrics, lineage=edge_lineage),
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "PATCH", "DELETE"],
                allow_headers=list(_ALLOW_HEADERS),
                expose_headers=list(_EXPOSE_HEADERS),
                max_age=600,
            ),
        ],
        exception_handlers=_exception_handlers(metrics, set(templates)),
        lifespan=lifespan,
    )
    app.state.hub = hub
    app.state.metrics = metrics
    app.state.settings = settings
    app.state.openapi = document
    app.state.lineage = edge_lineage
    return app


class _LazyClient:
    """The client the lifespan opens, or the one given (routes are built before start-up)."""

    def __init__(self, holder: dict[str, Any]) -> None:
        self._holder = holder

    def _client(self) -> Caller:
        client = self._holder["client"]
        if client is None:
            raise RuntimeError("the edge's BEDS client is opened when the application starts")
        return client  # type: ignore[no-any-return]

    async def call(self, *args: Any, **kwargs: Any) -> Any:
        return await self._client().call(*args, **kwargs)

    async def connect(self) -> None:
        await self._client().connect()


def _open_client(config: Config, settings: HttpSettings) -> Any:
    from beds.client import BedsClient
    from beds.transport.tls import amqp_context

    return BedsClient(
        config.amqp.addresses,  # every broker of a cluster, tried in turn
        exchange=config.amqp.events_exchange,
        timeout=settings.request_timeout,
        origin=EDGE_ORIGIN,
        env=config.node.env,
        ssl_context=amqp_context(config.amqp),
        max_message_bytes=config.amqp.max_message_bytes,
    )


def _exception_handlers(metrics: EdgeMetrics, templates: set[str]) -> dict[Any, Any]:
    def trace_id(request: Request) -> str:
        return str(request.state.trace.trace_id)

    def answered(request: Request, document: dict[str, Any], headers: Any = None) -> Response:
        request.state.code = document["code"]  # for the request's lineage event
        return problem_response(document, headers=headers)

    async def refusal(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, EdgeRefusal)
        metrics.refused[exc.reason] += 1
        document = problem_of_error(exc, instance=request.url.path, trace_id=trace_id(request))
        return answered(request, document, exc.headers)

    async def node_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, NodeError)
        document = problem_of_error(
            exc.error,
            instance=request.url.path,
            trace_id=trace_id(request),
            status=exc.response.status,
        )
        headers = {}
        if exc.error.code == "BEDS-401":
            headers["WWW-Authenticate"] = 'Bearer realm="beds"'
        return answered(request, document, headers)

    async def raised(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestError | TransportError)
        document = problem_of_error(exc, instance=request.url.path, trace_id=trace_id(request))
        return answered(request, document)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.url.path
        if exc.status_code == 405:
            refused = EdgeRefusal(
                "BEDS-405",
                f"{request.method} is not an operation of {path}",
                reason="method",
                headers=dict(exc.headers or {}),
            )
        elif exc.status_code == 404:
            first = path.removeprefix("/v1/").split("/", 1)[0]
            unknown = (
                path.startswith("/v1/") and first not in templates and first not in RESERVED_NAMES
            )
            refused = EdgeRefusal(
                "BEDS-404T" if unknown else "BEDS-404",
                "no template of that name is served here" if unknown else "no such route",
                reason="route",
            )
        else:
            refused = EdgeRefusal(
                "BEDS-400", "the request was refused", reason="route", status=exc.status_code
            )
        return await refusal(request, refused)

    return {
        EdgeRefusal: refusal,
        NodeError: node_error,
        RequestError: raised,
        TransportError: raised,
        HTTPException: http_error,
    }
