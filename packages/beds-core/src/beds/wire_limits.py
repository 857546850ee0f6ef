"""Limits of the AMQP properties a node reads or echoes (docs/wire-contract.md, "Limits").

Provisional (lead): helper-1 replaces this module with the full version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from beds.errors import MalformedRequest

if TYPE_CHECKING:
    from pamqp.commands import Basic

__all__ = ("SHORTSTR_MAX_BYTES", "check_request_properties", "safe_shortstr")

SHORTSTR_MAX_BYTES: Final = 255


def safe_shortstr(value: Any) -> str | None:
    """``value`` if AMQP can carry it as a short string (text of at most 255 UTF-8 bytes)."""
    if type(value) is not str:
        return None
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return None
    return value if size <= SHORTSTR_MAX_BYTES else None


def check_request_properties(properties: Basic.Properties) -> None:
    """Refuse a request whose AMQP properties the node cannot use or echo.

    Raises:
        MalformedRequest: naming the property.
    """
    if not properties.reply_to:
        raise MalformedRequest("the message has no reply_to property, so no reply is possible")
    headers = properties.headers or {}
    if "x-beds-undecodable-properties" in headers:
        raise MalformedRequest(
            "the message's AMQP properties do not decode",
            details=(str(headers["x-beds-undecodable-properties"]),),
        )
    for name in ("reply_to", "correlation_id", "content_type"):
        value = getattr(properties, name)
        if value is not None and safe_shortstr(value) is None:
            raise MalformedRequest(
                f"the AMQP property {name} is not UTF-8 text of at most 255 bytes"
            )
