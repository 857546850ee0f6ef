"""Dead letters described for an operator: why each died, a preview, and how to replay it.

Pure functions over a message's properties and body (no connection): ``beds dlq list`` and the
telemetry's dead-letter age read them; :mod:`beds.dlq.queue` uses them to list and replay.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any, Literal

import attrs
import orjson
from pamqp.commands import Basic

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = (
    "PREVIEW_CHARS",
    "REPLAYS_HEADER",
    "DeadLetter",
    "describe",
    "format_table",
    "preview",
    "replay_properties",
    "with_deadline",
)

PREVIEW_CHARS = 80
"""How much of a body ``list`` shows."""
REPLAYS_HEADER = "x-beds-replays"
"""How many times a message was replayed from a dead-letter queue (set by ``replay``)."""
_DEATH_HEADERS = ("x-death", "x-first-death-", "x-last-death-")


@attrs.frozen(kw_only=True)
class DeadLetter:
    """One message of a dead-letter queue, described for an operator."""

    message_id: str | None
    correlation_id: str | None
    routing_key: str
    """The key it was published with ("" when unknown); replay publishes with it."""
    source: Literal["beds", "rabbitmq", "unknown"]
    """Who dead-lettered it: a broker (``x-beds-*`` headers) or RabbitMQ (``x-death``)."""
    reason: str
    """The error code (``BEDS-400``) or RabbitMQ's reason (``expired``, ``rejected``…)."""
    detail: str = ""
    """The broker's explanation (``x-beds-reason``)."""
    queue: str = ""
    """The queue it died in."""
    count: int = 1
    """How many times it died there for this reason (``x-death`` count)."""
    node: str = ""
    """The node that dead-lettered it (``x-beds-node``)."""
    dead_lettered_at: dt.datetime | None = None
    body_size: int = 0
    body_preview: str = ""
    reply_to: str | None = None
    content_type: str | None = None
    redelivered: bool = False
    """RabbitMQ delivered it before (someone listed or replayed it without taking it)."""
    replays: int = 0
    """How many times it was replayed before and came back."""
    executed: bool = False
    """The request ran and only its reply was lost (``BEDS-500R``, ``x-beds-executed``): the
    outcome is in ``reply``; replaying it would run the write again, so replay leaves it."""
    reply: str = ""
    """The undelivered reply (``x-beds-reply``), for an executed request."""

    @property
    def why(self) -> str:
        """One line: the reason, where it happened and how often."""
        if self.source == "beds":
            text = f"{self.reason} {self.detail}".strip()
            return f"{text} (in {self.queue})" if self.queue else text
        if self.source == "rabbitmq":
            where = f" in {self.queue}" if self.queue else ""
            return f"{self.reason}{where} ({self.count}x)"
        return "unknown (no x-beds-* or x-death headers)"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``beds dlq list --json``)."""
        return {
            "message_id": self.message_id,
            "correlation_id": self.correlation_id,
            "routing_key": self.routing_key,
            "source": self.source,
            "reason": self.reason,
            "detail": self.detail,
            "queue": self.queue,
            "count": self.count,
            "node": self.node,
            "dead_lettered_at": _iso(self.dead_lettered_at),
            "body_size": self.body_size,
            "body_preview": self.body_preview,
            "reply_to": self.reply_to,
            "content_type": self.content_type,
            "redelivered": self.redelivered,
            "replays": self.replays,
            "executed": self.executed,
            "reply": self.reply,
        }


def _text(value: Any) -> str:
    """A header value as text (pamqp gives bytes for strings that are not UTF-8)."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        try:
            return dt.datetime.fromtimestamp(value, tz=dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None  # not a Unix time in seconds (milliseconds, garbage): unknown
    return None


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _escape(char: str) -> str:
    return char if char.isprintable() else char.encode("unicode_escape").decode("ascii")


def _one_line(text: str) -> str:
    """``text`` with every character that is not printable escaped (a header, an id)."""
    return "".join(map(_escape, text))


def preview(body: bytes, width: int = PREVIEW_CHARS) -> str:
    r"""The start of ``body`` as one printable line of at most ``width`` characters.

    Bytes that are not UTF-8 show as U+FFFD; control characters are escaped (``\n``,
    ``\x00``); a cut is marked with ``…``.

    Raises:
        ValueError: ``width`` is less than 1.
    """
    if width < 1:
        raise ValueError(f"width must be at least 1, not {width}")
    raw = body[: width * 4]  # enough bytes for ``width`` characters
    shown = ""
    for char in raw.decode("utf-8", errors="replace"):
        piece = _escape(char)
        if len(shown) + len(piece) > width:
            return shown[: width - 1] + "…"
        shown += piece
    return shown[: width - 1] + "…" if len(raw) < len(body) else shown


def _first_death(headers: Mapping[str, Any]) -> Mapping[str, Any] | None:
    deaths = headers.get("x-death")
    if isinstance(deaths, list | tuple) and deaths and isinstance(deaths[0], dict):
        return deaths[0]  # RabbitMQ keeps the most recent death first
    return None


def describe(
    properties: Basic.Properties,
    body: bytes,
    *,
    routing_key: str | None = None,
    redelivered: bool = False,
) -> DeadLetter:
    """Describe a dead-lettered message from its properties and body.

    The reason comes from the broker's ``x-beds-*`` headers if present, else from RabbitMQ's
    ``x-death`` header (its most recent entry). The routing key is ``x-beds-routing-key``, else
    the first of the ``x-death`` entry's ``routing-keys``, else ``routing_key`` (the key the
    message reached the dead-letter queue with). The time is ``x-beds-dead-lettered-at`` or the
    ``x-death`` time, else the message's ``timestamp`` property.
    """
    headers: Mapping[str, Any] = properties.headers or {}
    death = _first_death(headers)
    key = _text(headers.get("x-beds-routing-key"))
    if not key and death is not None:
        keys = death.get("routing-keys")
        if isinstance(keys, list | tuple) and keys:
            key = _text(keys[0])
    key = key or routing_key or ""
    common: dict[str, Any] = {
        "message_id": properties.message_id,
        "correlation_id": properties.correlation_id,
        "routing_key": key,
        "body_size": len(body),
        "body_preview": preview(body),
        "reply_to": properties.reply_to,
        "content_type": properties.content_type,
        "redelivered": redelivered,
        "replays": _int(headers.get(REPLAYS_HEADER)),
        "executed": headers.get("x-beds-executed") is True,
        "reply": _text(headers.get("x-beds-reply")),
    }
    when = _time(properties.timestamp)
    if "x-beds-error-code" in headers:
        return DeadLetter(
            source="beds",
            reason=_text(headers["x-beds-error-code"]),
            detail=_text(headers.get("x-beds-reason")),
            queue=_text(headers.get("x-beds-queue")),
            node=_text(headers.get("x-beds-node")),
            dead_lettered_at=_time(headers.get("x-beds-dead-lettered-at")) or when,
            **common,
        )
    if death is not None:
        return DeadLetter(
            source="rabbitmq",
            reason=_text(death.get("reason")) or "unknown",
            queue=_text(death.get("queue")),
            count=_int(death.get("count"), 1),
            dead_lettered_at=_time(death.get("time")) or when,
            **common,
        )
    return DeadLetter(source="unknown", reason="unknown", dead_lettered_at=when, **common)


def with_deadline(body: bytes, seconds: float) -> bytes:
    """The request ``body`` with ``meta.deadline`` set ``seconds`` from now.

    A body that is not a JSON object with a ``meta`` object is returned unchanged: the broker
    answers (or dead-letters) it as it would have.
    """
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(request, dict) or not isinstance(request.get("meta"), dict):
        return body
    request["meta"]["deadline"] = time.time() + seconds
    return orjson.dumps(request)


def replay_properties(properties: Basic.Properties, user: str | None = None) -> Basic.Properties:
    """The properties a replayed message is published with.

    The original properties without the dead-letter headers (``x-death``,
    ``x-first-death-*``, ``x-last-death-*``, ``x-beds-*``, so a replayed request starts a fresh
    delivery count) and without ``expiration`` (RabbitMQ removes it when it dead-letters an
    expired message, and a replay must not expire on the way) or ``user_id`` (RabbitMQ checks
    it against the replaying user: ``user``, the replaying connection's, is sent instead, so a
    replayed request's origin is whoever replays it). ``x-beds-replays`` counts the replays.
    """
    headers = {
        name: value
        for name, value in (properties.headers or {}).items()
        if not name.startswith("x-beds-") and not name.startswith(_DEATH_HEADERS)
    }
    headers[REPLAYS_HEADER] = _int((properties.headers or {}).get(REPLAYS_HEADER)) + 1
    return Basic.Properties(
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        headers=headers,
        delivery_mode=properties.delivery_mode,
        priority=properties.priority,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        message_id=properties.message_id,
        user_id=user,
        timestamp=properties.timestamp,
        message_type=properties.message_type,
        app_id=properties.app_id,
    )


_COLUMNS: tuple[tuple[str, Callable[[DeadLetter], str]], ...] = (
    ("MESSAGE ID", lambda d: d.message_id or "-"),
    ("CORRELATION ID", lambda d: d.correlation_id or "-"),
    ("ROUTING KEY", lambda d: d.routing_key or "-"),
    ("DEAD SINCE (UTC)", lambda d: _iso(d.dead_lettered_at) or "-"),
    ("SIZE", lambda d: str(d.body_size)),
    ("WHY", lambda d: d.why),
    ("BODY", lambda d: d.body_preview),
)


def format_table(letters: Sequence[DeadLetter]) -> str:
    """A text table of ``letters`` (one row each), for ``beds dlq list``.

    Every cell is one printable line: what a message carries cannot break the table or send
    control sequences to the operator's terminal.
    """
    rows = [[_one_line(cell(letter)) for _, cell in _COLUMNS] for letter in letters]
    widths = [
        max([len(title), *(len(row[index]) for row in rows)])
        for index, (title, _) in enumerate(_COLUMNS)
    ]
    lines = []
    for cells in [[title for title, _ in _COLUMNS], *rows]:
        padded = [text.ljust(width) for text, width in zip(cells[:-1], widths, strict=False)]
        lines.append("  ".join([*padded, cells[-1]]).rstrip())
    return "\n".join(lines)
