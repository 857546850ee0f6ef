"""The node's HTTP endpoints, served by aiohttp on the node's event loop.

``GET /health``
    200 while the process runs (liveness).
``GET /ready``
    200 once IPL passed and every broker consumes; 503 before, while RabbitMQ reconnects, and
    from the moment the node starts stopping (readiness).
``GET /metrics``
    Prometheus text format, or OpenMetrics when the scraper asks for it (``Accept``).
``GET /status``
    The JSON summary that ``beds status`` prints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from prometheus_client.exposition import choose_encoder

from beds.telemetry.status import build_status

if TYPE_CHECKING:
    from beds.telemetry.metrics import TelemetryView

__all__ = ("TelemetryServer", "make_app")

_JSON = "application/json"
_SHUTDOWN_SECONDS = 1.0
"""How long a request being answered may take when the node stops (all of them are quick)."""


def make_app(telemetry: TelemetryView) -> web.Application:
    """The aiohttp application with the four endpoints (tests serve it with aiohttp's client)."""

    async def health(request: web.Request) -> web.Response:
        return _json({"status": "alive", "node": telemetry.node.config.node.name})

    async def ready(request: web.Request) -> web.Response:
        ok, reason = telemetry.ready()
        return _json({"ready": ok, "state": reason}, status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(
            body=encoder(telemetry.metrics.registry), headers={"Content-Type": content_type}
        )

    async def status(request: web.Request) -> web.Response:
        return _json(build_status(telemetry))

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    return app


def _json(document: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(document), status=status, content_type=_JSON)


class TelemetryServer:
    """Serves :func:`make_app` on ``host:port`` (port 0: a free port, see :attr:`url`)."""

    def __init__(self, telemetry: TelemetryView, host: str, port: int) -> None:
        self.telemetry = telemetry
        self.host = host
        self.port = port
        self.url = ""
        """``http://host:port`` once started, with the port actually bound."""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen.

        Raises:
            OSError: the address cannot be bound (for example the port is in use).
        """
        runner = web.AppRunner(
            make_app(self.telemetry),
            access_log=None,
            handle_signals=False,  # the node (beds run) owns the signals
            shutdown_timeout=_SHUTDOWN_SECONDS,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses[0]
        host = self.host if ":" not in self.host else f"[{self.host}]"
        self.port = int(bound[1])
        self.url = f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
