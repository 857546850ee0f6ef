"""Limits of the AMQP properties a node reads or echoes (docs/wire-contract.md, "Limits").

The request envelope's own limits (``meta`` text, template names, deadlines) are enforced by its
validators (:mod:`beds.envelopes`); this module checks the message around it, before anything
executes, so that nothing a sender put in a property can make the reply, a dead letter or a
requeued copy fail to encode. Values come from :mod:`beds.transport.frames`, which keeps bytes
that are not UTF-8 as lone surrogates: they fail every check here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from beds.errors import MalformedRequest
from beds.transport.frames import UNDECODABLE_HEADER

if TYPE_CHECKING:
    from pamqp.commands import Basic

__all__ = ("SHORTSTR_MAX_BYTES", "check_request_properties", "safe_shortstr")

SHORTSTR_MAX_BYTES: Final = 255
"""An AMQP short string's limit, in bytes."""

_ECHOED: Final = ("reply_to", "correlation_id", "content_type", "message_id", "expiration")
"""Properties the node reads or sends back: replies, dead letters, requeued copies."""


def safe_shortstr(value: Any) -> str | None:
    """``value`` if AMQP can carry it as a short string (text of at most 255 UTF-8 bytes)."""
    if type(value) is not str:
        return None
    if value.isascii():
        return value if len(value) <= SHORTSTR_MAX_BYTES else None
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8
        return None
    return value if size <= SHORTSTR_MAX_BYTES else None


def _problem(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if safe_shortstr(value) is None:
        return f"{name}: must be UTF-8 text of at most {SHORTSTR_MAX_BYTES} bytes"
    if not value.isprintable():
        return f"{name}: must not contain control characters"
    return None


def check_request_properties(properties: Basic.Properties) -> None:
    """Refuse a request whose AMQP properties the node cannot use or send back.

    Checked in this order: the properties decode at all; ``reply_to`` is present; then every
    property the node reads or echoes (``reply_to``, ``correlation_id``, ``content_type``,
    ``message_id``, ``expiration``) is printable UTF-8 text of at most 255 bytes; the headers the
    node reads have their types (``x-beds-deliveries`` a positive integer,
    ``x-beds-routing-key`` a short string).

    Raises:
        MalformedRequest: naming the property and its limit (deterministic).
    """
    headers = properties.headers or {}
    undecodable = headers.get(UNDECODABLE_HEADER)
    if undecodable is not None:
        raise MalformedRequest(
            "the message's AMQP properties do not decode", details=(str(undecodable),)
        )
    if not properties.reply_to:
        raise MalformedRequest("the message has no reply_to property, so no reply is possible")
    problems = [
        problem
        for name in _ECHOED
        if (problem := _problem(name, getattr(properties, name))) is not None
    ]
    deliveries = headers.get("x-beds-deliveries")
    if deliveries is not None and not (type(deliveries) is int and deliveries > 0):
        problems.append("headers.x-beds-deliveries: must be a positive integer")
    key = headers.get("x-beds-routing-key")
    if key is not None and safe_shortstr(key) is None:
        problems.append(
            f"headers.x-beds-routing-key: must be UTF-8 text of at most {SHORTSTR_MAX_BYTES} bytes"
        )
    if problems:
        raise MalformedRequest(
            "the message's AMQP properties are over their limits", details=problems
        )
