"""Versioned request and response envelopes (wire contract v1).

Envelopes hold data only; encoding, size limits and error mapping live in :mod:`beds.codec`.
The wire format is documented in ``docs/wire-contract.md``.
"""

from __future__ import annotations

import enum
import re
from typing import Any, Literal

import attrs

__all__ = (
    "READ_OPERATIONS",
    "WRITE_OPERATIONS",
    "ErrorBody",
    "Operation",
    "Request",
    "RequestMeta",
    "Response",
    "ResponseMeta",
)

MAX_DEPTH = 64
"""Deepest event lineage accepted; a deeper tree is a loop."""
MAX_IDEMPOTENCY_KEY = 200
"""Longest idempotency key accepted, in characters (adapters store keys of this size)."""
MAX_META_BYTES = 255
"""Longest ``meta`` text, in UTF-8 bytes: an AMQP short string (the event id becomes the reply's
``message_id``; the others reach lineage events, headers and logs)."""
TEMPLATE_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
"""What a template's name may be (``lower_snake_case``, as template declarations require)."""
DEADLINE_RANGE = (0.0, 1e11)
"""Unix times a ``meta.deadline`` may hold (exclusive): after 1970, before the year 5138."""


class Operation(enum.StrEnum):
    """What a request asks for."""

    CREATE = "create"
    FETCH = "fetch"
    UPDATE = "update"
    DELETE = "delete"
    SUBMIT = "submit"
    """CALGON: start a long operation and get a ticket back."""
    TICKET = "ticket"
    """CALGON: poll a ticket."""
    PING = "ping"
    """Answered by the broker itself, without any store: liveness and transport benchmarks."""


READ_OPERATIONS = frozenset({Operation.FETCH, Operation.TICKET, Operation.PING})
WRITE_OPERATIONS = frozenset({Operation.CREATE, Operation.UPDATE, Operation.DELETE})


def _depth_in_range(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= MAX_DEPTH:
        raise ValueError(f"RequestMeta.depth should be in range [0:{MAX_DEPTH}], but was {value}.")


def _idempotency_key(instance: object, attribute: attrs.Attribute[str], value: str | None) -> None:
    if value is not None and not (
        0 < len(value) <= MAX_IDEMPOTENCY_KEY
        and _fits(value)
        and value.isprintable()
        and value.strip() == value
    ):
        raise ValueError(
            f"RequestMeta.idempotency_key should be 1 to {MAX_IDEMPOTENCY_KEY} printable "
            f"characters ({MAX_META_BYTES} bytes in UTF-8) without leading or trailing spaces."
        )


def _fits(value: str) -> bool:
    """Whether ``value`` is at most ``MAX_META_BYTES`` bytes of UTF-8 (lone surrogates: no)."""
    if value.isascii():
        return len(value) <= MAX_META_BYTES
    try:
        return len(value.encode("utf-8")) <= MAX_META_BYTES
    except UnicodeEncodeError:
        return False


def _meta_text(instance: object, attribute: attrs.Attribute[str], value: str | None) -> None:
    """A ``meta`` text: printable (no control characters, NUL, lone surrogates), 255 bytes."""
    if value is not None and not (_fits(value) and value.isprintable()):
        raise ValueError(
            f"RequestMeta.{attribute.name} should be printable text of at most "
            f"{MAX_META_BYTES} bytes in UTF-8."
        )


def _deadline(instance: object, attribute: attrs.Attribute[float], value: float | None) -> None:
    low, high = DEADLINE_RANGE
    if value is not None and not low < value < high:
        raise ValueError(
            f"RequestMeta.deadline should be a Unix time in seconds between {low:g} and "
            f"{high:g}, but was {value!r}."
        )


def _template(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not TEMPLATE_NAME.fullmatch(value):
        raise ValueError(
            "Request.template should be a template name: lower_snake_case, 1 to 63 of a-z, "
            "0-9 and '_', starting with a letter."
        )


@attrs.frozen(kw_only=True)
class RequestMeta:
    """Who sent a request, why, and how long it may take."""

    event_id: str = attrs.field(default="", validator=_meta_text)
    """``"{node}.{env}.{guid}"``; assigned by the client (or the broker when empty)."""
    parent_id: str = attrs.field(default="", validator=_meta_text)
    """The event that caused this one; empty for a root event."""
    depth: int = attrs.field(default=0, validator=_depth_in_range)
    """Levels below the root event."""
    correlation_id: str = attrs.field(default="", validator=_meta_text)
    """Matches the reply to the request; mirrors the AMQP property."""
    causation_id: str = attrs.field(default="", validator=_meta_text)
    """The message that directly caused this one (for chains of requests)."""
    origin: str = attrs.field(default="", validator=_meta_text)
    """Sending node or service."""
    idempotency_key: str | None = attrs.field(default=None, validator=_idempotency_key)
    """Writes with the same key are executed at most once (1 to 200 printable characters)."""
    deadline: float | None = attrs.field(default=None, validator=_deadline)
    """Unix time (seconds, UTC) after which the request must not be executed."""
    principal: str | None = attrs.field(default=None, validator=_meta_text)
    """Who is asking; checked against the template's access rules."""


@attrs.frozen(kw_only=True)
class Request:
    """A data operation on one template."""

    version: Literal[1] = 1
    operation: Operation
    template: str = attrs.field(validator=_template)
    """Template name, for example ``"spew_post"`` (lower_snake_case, at most 63 characters)."""
    payload: dict[str, Any] = attrs.field(factory=dict)
    """A record (create, update), a key (delete) or a query (fetch): see docs/wire-contract.md."""
    meta: RequestMeta = attrs.field(factory=RequestMeta)


@attrs.frozen(kw_only=True)
class ErrorBody:
    """Why a request failed."""

    code: str
    """Catalogue code, for example ``"BEDS-404T"``."""
    message: str
    details: tuple[str, ...] = ()
    """Field-level messages, in a stable order."""


@attrs.frozen(kw_only=True)
class ResponseMeta:
    """Where and how a request was handled."""

    event_id: str = ""
    node: str = ""
    """The node that handled the request."""
    timings: dict[str, float] = attrs.field(factory=dict)
    """Milliseconds spent per phase, for example ``{"store": 1.8, "total": 2.3}``."""


@attrs.frozen(kw_only=True)
class Response:
    """The answer to a request."""

    version: Literal[1] = 1
    ok: bool
    status: int
    """HTTP-like status: 200, 201, 4xx for the caller's mistakes, 5xx for ours."""
    data: Any = None
    error: ErrorBody | None = None
    meta: ResponseMeta = attrs.field(factory=ResponseMeta)
