"""The ``[http]`` configuration table of the edge, validated with key-path errors.

beds-core keeps ``[http]`` as a raw table (``Config.http``), as it keeps ``[stores.<store>]``
for the adapters: the package that reads it validates it, so a node without beds-http accepts
the table and a typo in it still fails, naming ``http.<key>`` and the file that set it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import attrs

from beds.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from beds.config.model import Config

__all__ = ("KEYS", "HttpSettings", "bundled_static_dir", "parse_settings")


@attrs.frozen(kw_only=True)
class HttpSettings:
    """The edge's settings (docs/configuration.md, ``[http]``)."""

    host: str = "127.0.0.1"
    """Address to listen on; loopback by default (put a TLS proxy in front for other hosts)."""
    port: int = 8080
    workers: int = 1
    """Processes uvicorn runs; each has its own AMQP connections."""
    cors_origins: tuple[str, ...] = ()
    """Origins (``https://app.example``) whose pages may call the API; empty: same origin."""
    max_body_bytes: int = 256 * 1024
    """Largest request body; a larger one is refused (413) before it is read."""
    max_json_depth: int = 32
    """Deepest nesting of arrays and objects a body may have."""
    request_timeout: float = 10.0
    """Seconds the edge waits for a node's reply (also the request's deadline)."""
    static_dir: str = ""
    """A folder served at ``/``; empty: the bundled SPEW page."""
    public_url: str = ""
    """The URL browsers use (``https://spew.example``): its origin counts as same-origin and it
    is the OpenAPI ``servers`` entry; empty: the address requests arrive at."""
    stream_queue: int = 256
    """Events a live-stream client may have waiting; a client further behind is dropped."""
    keepalive_seconds: float = 15.0
    """Seconds between keep-alive comments on an idle event stream."""
    replay_events: int = 1000
    """Recent live events kept for ``Last-Event-ID`` resumption."""
    ticket_poll_seconds: float = 1.0
    """Seconds between two reads of a ticket streamed by ``/v1/tickets/{id}/events``."""

    @property
    def static_path(self) -> Path:
        """The folder served at ``/``."""
        return Path(self.static_dir) if self.static_dir else bundled_static_dir()


KEYS: Final = tuple(field.name for field in attrs.fields(HttpSettings))
"""Every key ``[http]`` accepts (the docs test checks each is documented)."""


def bundled_static_dir() -> Path:
    """The SPEW page shipped in this package (``beds_http/static``)."""
    return Path(str(resources.files("beds_http").joinpath("static")))


def _fail(config: Config | None, key: str, message: str) -> ConfigError:
    origin = None
    if config is not None:
        origin = config.files[-1] if config.files else None
    return ConfigError(message, file=origin, key=f"http.{key}")


def _int(raw: Mapping[str, Any], key: str, default: int, minimum: int, maximum: int) -> Any:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer, got {type(value).__name__}"
    if not minimum <= value <= maximum:
        return f"must be in [{minimum}:{maximum}], got {value}"
    return value


def _float(raw: Mapping[str, Any], key: str, default: float, maximum: float) -> Any:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, got {type(value).__name__}"
    if not 0 < value <= maximum:
        return f"must be greater than 0 and at most {maximum:g}, got {value}"
    return float(value)


def _origin(value: object) -> str | None:
    """``value`` as an origin (scheme://host[:port]), or ``None`` when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - parses the port, which raises ValueError when it is bad
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def parse_settings(raw: Mapping[str, Any] | None, config: Config | None = None) -> HttpSettings:
    """Validate the ``[http]`` table.

    Args:
        raw: the table (``config.http``); ``None`` or empty: every default.
        config: the configuration it came from, to name its file in errors.

    Raises:
        ConfigError: an unknown key or a bad value, naming ``http.<key>``.
    """
    raw = raw or {}
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise _fail(config, unknown[0], f"unknown key (known: {', '.join(KEYS)})")
    values: dict[str, Any] = {}
    checks: dict[str, Any] = {
        "port": _int(raw, "port", 8080, 0, 65535),
        "workers": _int(raw, "workers", 1, 1, 256),
        "max_body_bytes": _int(raw, "max_body_bytes", 256 * 1024, 2, 64 * 1024 * 1024),
        "max_json_depth": _int(raw, "max_json_depth", 32, 1, 512),
        "stream_queue": _int(raw, "stream_queue", 256, 1, 100_000),
        "replay_events": _int(raw, "replay_events", 1000, 0, 1_000_000),
        "request_timeout": _float(raw, "request_timeout", 10.0, 3600.0),
        "keepalive_seconds": _float(raw, "keepalive_seconds", 15.0, 3600.0),
        "ticket_poll_seconds": _float(raw, "ticket_poll_seconds", 1.0, 3600.0),
    }
    for key, value in checks.items():
        if isinstance(value, str):
            raise _fail(config, key, value)
        values[key] = value
    for key in ("host", "static_dir", "public_url"):
        value = raw.get(key, "127.0.0.1" if key == "host" else "")
        if not isinstance(value, str):
            raise _fail(config, key, f"must be a string, got {type(value).__name__}")
        values[key] = value
    if not values["host"]:
        raise _fail(config, "host", "must not be empty")
    if values["public_url"]:
        origin = _origin(values["public_url"].rstrip("/"))
        if origin is None:
            raise _fail(config, "public_url", "must be an http:// or https:// URL without a path")
        values["public_url"] = origin
    if values["static_dir"] and not Path(values["static_dir"]).is_dir():
        raise _fail(config, "static_dir", f"{values['static_dir']!r} is not a folder")
    origins = raw.get("cors_origins", [])
    if not isinstance(origins, list | tuple):
        raise _fail(config, "cors_origins", "must be a list of origins")
    cleaned: list[str] = []
    for index, item in enumerate(origins):
        origin = _origin(item)
        if origin is None or origin != str(item).lower().rstrip("/"):
            raise _fail(
                config,
                f"cors_origins[{index}]",
                f"must be an origin such as 'https://app.example' (no path, no '*'), got {item!r}",
            )
        cleaned.append(origin)
    values["cors_origins"] = tuple(cleaned)
    return HttpSettings(**values)
