"""``beds http``: serve the HTTP/SSE edge with uvicorn (a ``beds.commands`` plugin command).

The configuration is the node's (``--config``, ``BEDS_ENV`` layers, ``BEDS__…`` variables):
``[amqp]`` to reach BEDS, ``[http]`` for the edge. ``--host``, ``--port`` and ``--workers``
override ``http.host``, ``http.port`` and ``http.workers``. With several workers, uvicorn
starts each process from :func:`app_from_environment`, which reads the same configuration.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import click

from beds.cli.common import EXIT_CONFIG, EXIT_FAILED, config_option, fail, load
from beds.errors import BedsError, ConfigError

if TYPE_CHECKING:
    from types import FrameType

    from starlette.applications import Starlette

__all__ = ("app_from_environment", "http")

CONFIG_VARIABLE: Final = "BEDS_HTTP_CONFIG"
"""Where ``beds http`` tells its worker processes the configuration file is."""


@click.command()
@config_option
@click.option("--host", help="Address to listen on (default: http.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: http.port, 8080).")
@click.option(
    "--workers", type=click.IntRange(1, 256), help="Processes (default: http.workers, 1)."
)
def http(config_path: Path | None, host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the HTTP/SSE edge: REST routes, OpenAPI and the web page of the templates."""
    import uvicorn

    from beds.log import configure_logging
    from beds_http.app import create_app, installed_templates
    from beds_http.settings import parse_settings

    config = load(config_path)
    try:
        settings = parse_settings(config.http, config)
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    settings = attrs.evolve(
        settings,
        host=host or settings.host,
        port=settings.port if port is None else port,
        workers=workers or settings.workers,
    )
    configure_logging(config.log, node=f"{config.node.name}-http")
    shown = settings.public_url or f"http://{_url_host(settings.host)}:{settings.port}"
    click.echo(f"beds http: serving {shown}/ (SPEW page at /, API docs at /docs)")
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "warning",
        "proxy_headers": False,
        "server_header": False,
    }
    if settings.workers > 1:
        try:
            installed_templates(config)  # fail here, once, rather than in every worker
        except BedsError as exc:
            fail(str(exc))
        if config.files:
            os.environ[CONFIG_VARIABLE] = config.files[0]
        uvicorn.run(
            "beds_http.cli:app_from_environment", factory=True, workers=settings.workers, **common
        )
        return
    try:
        app = create_app(config, settings=settings)
    except BedsError as exc:
        fail(str(exc), EXIT_CONFIG if isinstance(exc, ConfigError) else EXIT_FAILED)
    server = _server_class()(uvicorn.Config(app, **common))
    server.run()
    if not server.started:
        fail(f"beds http: could not serve on {settings.host}:{settings.port} (see the log)")


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, ending with exit code 0 on SIGTERM or SIGINT, as ``beds run``.

        uvicorn raises the signal again once it stopped gracefully (the process then dies of
        it); for ``beds http`` that stop is the normal end.
        """

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    return Server


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def app_from_environment() -> Starlette:
    """The application of one worker process of ``beds http --workers N``."""
    from beds.config.loader import default_config_path, load_config
    from beds_http.app import create_app

    path = os.environ.get(CONFIG_VARIABLE)
    config = load_config(Path(path) if path else default_config_path())
    return create_app(config)
