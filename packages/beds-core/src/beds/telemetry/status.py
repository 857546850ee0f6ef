"""The node's live summary: the ``/status`` JSON document and its table for ``beds status``.

The document is built from the same numbers as the metrics, plus what only an operator needs
to see by name: the event id of every handler running past ``reliability.handler_budget``.
``beds status`` reads it from a running node with :func:`fetch_status`.
"""

from __future__ import annotations

import datetime as dt
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

import orjson

from beds.codec import decode_request
from beds.errors import BedsError, ConfigError, RequestError
from beds.telemetry.metrics import over_budget

if TYPE_CHECKING:
    from aiormq.abc import DeliveredMessage

    from beds.config.model import TelemetrySettings
    from beds.telemetry.metrics import TelemetryView

__all__ = (
    "StatusUnavailable",
    "build_status",
    "fetch_status",
    "format_duration",
    "format_status",
    "status_url",
)


class StatusUnavailable(BedsError):
    """No node answered with a status document at the URL (the message names it)."""


def build_status(telemetry: TelemetryView) -> dict[str, Any]:
    """The ``/status`` document (docs/telemetry.md shows one)."""
    node = telemetry.node
    config = node.config
    now, clock = telemetry.time(), telemetry.monotonic()
    ready, reason = telemetry.ready()
    budget = config.reliability.handler_budget
    brokers = []
    for name, settings in config.brokers.items():
        instruments = telemetry.metrics.broker(name)
        dispatcher = node.dispatchers.get(name)
        pool = node.pools.get(name)
        queue = telemetry.poller.brokers.get(name)
        late = over_budget(pool, budget, clock) if pool is not None else []
        latency = instruments.latency
        brokers.append(
            {
                "name": name,
                "queue": config.queue_name(name),
                "instances": settings.instances,
                "consuming": pool is not None and pool.consuming,
                "paused": pool is not None and pool.paused,
                "handled": instruments.handled,
                "in_flight": pool.in_flight if pool is not None else 0,
                "errors": dict(sorted(instruments.errors.items())),
                "retried": dispatcher.retried if dispatcher is not None else 0,
                "over_budget_total": pool.over_budget if pool is not None else 0,
                "unsettled": pool.settle.unsettled_count if pool is not None else 0,
                "oldest_unsettled_seconds": round(pool.oldest_unsettled(clock), 3)
                if pool is not None
                else 0.0,
                "handlers_stopped": pool.stopped if pool is not None else 0,
                "replies_lost": pool.replies_lost if pool is not None else 0,
                "dead_lettered": dict(sorted(instruments.dead_letters.items())),
                "mean_handler_ms": round(latency.sum / latency.count * 1000, 3)
                if latency.count
                else None,
                "queue_depth": queue.messages if queue is not None else None,
                "queue_consumers": queue.consumers if queue is not None else None,
                "over_budget": [_late(age, message) for age, message in sorted(late, key=_age)],
            }
        )
    dead = telemetry.poller.dead
    return {
        "node": config.node.name,
        "env": config.node.env,
        "role": config.node.role,
        "version": telemetry.version,
        "state": node.state,
        "ready": ready,
        "ready_reason": reason,
        "started_at": _iso(telemetry.started_at),
        "uptime_seconds": round(now - telemetry.started_at, 3),
        "reconnects": node.reconnects,
        "handler_budget_seconds": budget,
        "settle_limit_seconds": budget + config.reliability.settle_grace,
        "brokers": brokers,
        "dead_letter_queue": {
            "queue": dead.queue if dead is not None else None,
            "depth": dead.messages if dead is not None else None,
            "oldest_age_seconds": _round(dead.oldest_age(now)) if dead is not None else None,
        },
        "queues_polled_at": _iso(telemetry.poller.polled_at),
        "peers": _peers(node.heartbeat.peers if node.heartbeat is not None else {}, now),
    }


def _peers(peers: dict[str, dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """The latest heartbeat of every node of the environment (this one included), by name."""
    return [
        {**beat, "at": _iso(beat["at"]), "age_seconds": round(now - beat["at"], 3)}
        for _, beat in sorted(peers.items())
    ]


def _age(item: tuple[float, DeliveredMessage]) -> float:
    return -item[0]  # longest-running first


def _late(age: float, message: DeliveredMessage) -> dict[str, Any]:
    """One handler past its budget, named by the request's event id (decoded only here)."""
    properties = message.header.properties
    event_id: str | None = None
    template = operation = None
    try:
        request = decode_request(message.body, properties.content_type, max_bytes=len(message.body))
    except RequestError:
        pass
    else:
        event_id = request.meta.event_id or None
        template, operation = request.template, request.operation.value
    return {
        "event_id": event_id,
        "seconds": round(age, 3),
        "template": template,
        "operation": operation,
        "correlation_id": properties.correlation_id,
        "message_id": properties.message_id,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_duration(seconds: float | None) -> str:
    """``"-"``, ``"850 ms"``, ``"7.2 s"``, ``"3m05s"``, ``"2h03m"`` or ``"3d04h"``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


_COLUMNS = (
    "BROKER",
    "QUEUE DEPTH",
    "IN FLIGHT",
    "HANDLED",
    "ERRORS",
    "RETRIED",
    "DEAD-LETTERED",
    "OVER BUDGET",
    "UNSETTLED",
    "MEAN",
)


def format_status(status: dict[str, Any]) -> str:
    """The ``/status`` document as text: a header, a table of brokers, then the details."""
    lines = [
        f"node {status['node']} (role {status['role']}, env {status['env']}, "
        f"beds {status['version']}): {status['state']}"
        + ("" if status["ready"] else f", not ready ({status['ready_reason']})"),
        f"up {format_duration(status['uptime_seconds'])} since {status['started_at']}, "
        f"RabbitMQ reconnects {status['reconnects']}",
        "",
    ]
    rows = [
        [
            broker["name"],
            _count(broker["queue_depth"]),
            str(broker["in_flight"]),
            str(broker["handled"]),
            str(sum(broker["errors"].values())),
            str(broker["retried"]),
            str(sum(broker["dead_lettered"].values())),
            f"{len(broker['over_budget'])} now, {broker['over_budget_total']} total",
            f"{broker['unsettled']}, oldest {format_duration(broker['oldest_unsettled_seconds'])}",
            "-" if broker["mean_handler_ms"] is None else f"{broker['mean_handler_ms']:.2f} ms",
        ]
        for broker in status["brokers"]
    ]
    widths = [max([len(title), *(len(row[i]) for row in rows)]) for i, title in enumerate(_COLUMNS)]
    for cells in [list(_COLUMNS), *rows]:
        lines.append(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()
        )
    errors = [
        f"  {broker['name']} {code}: {count}"
        for broker in status["brokers"]
        for code, count in broker["errors"].items()
    ]
    if errors:
        lines += ["", "errors by code:", *errors]
    late = [
        f"  {broker['name']} {entry['event_id'] or '(no event id)'}: "
        f"{format_duration(entry['seconds'])}"
        + (f" ({entry['operation']} {entry['template']})" if entry["template"] else "")
        for broker in status["brokers"]
        for entry in broker["over_budget"]
    ]
    budget = format_duration(status["handler_budget_seconds"])
    lines += ["", f"over budget now (budget {budget}):", *late] if late else []
    dead = status["dead_letter_queue"]
    if dead["queue"] is None:
        lines += ["", "dead-letter queue: not read yet"]
    else:
        oldest = dead["oldest_age_seconds"]
        age = "" if not dead["depth"] else f", oldest {format_duration(oldest)}"
        if dead["depth"] and oldest is None:
            age = ", oldest unknown"
        lines += ["", f"dead-letter queue {dead['queue']}: {_count(dead['depth'])} messages{age}"]
    return "\n".join(lines)


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def status_url(url: str | None, settings: TelemetrySettings | None = None) -> str:
    """The ``/status`` URL: ``url`` (``/status`` added if missing), else from ``[telemetry]``.

    Raises:
        ConfigError: no ``url`` and the configuration gives no fixed address (telemetry
            disabled, or ``port = 0``).
    """
    if url is not None:
        base = url.rstrip("/")
        return base if base.endswith("/status") else f"{base}/status"
    if settings is None:
        raise ValueError("status_url needs a url or the [telemetry] settings")
    if not settings.enabled:
        raise ConfigError(
            "telemetry is disabled, so nodes serve no status; pass --url", key="telemetry.enabled"
        )
    if settings.port == 0:
        raise ConfigError(
            "telemetry.port is 0: each node picks a free port and logs it; pass --url",
            key="telemetry.port",
        )
    # A node listening on every interface answers on the loopback one.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.port}/status"


def fetch_status(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET a node's ``/status`` document.

    Raises:
        StatusUnavailable: nothing answers, the answer is not 200, or it is not a status
            document.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            body = reply.read()
    except urllib.error.HTTPError as exc:
        raise StatusUnavailable(f"{url} answered HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise StatusUnavailable(f"no node answers at {url}: {reason}") from exc
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise StatusUnavailable(f"{url} did not answer with JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("brokers"), list):
        raise StatusUnavailable(f"{url} did not answer with a BEDS status document")
    return document
