"""What a broker reads off a delivered message besides its body: route, origin, event id."""

from __future__ import annotations

from typing import TYPE_CHECKING

from beds.codec import decode_request
from beds.errors import RequestError
from beds.transport.frames import UNDECODABLE_HEADER
from beds.wire_limits import safe_shortstr

if TYPE_CHECKING:
    from aiormq.abc import DeliveredMessage

    from beds.envelopes import Request

__all__ = ("ORIGIN_HEADER", "event_id_of", "origin_of", "request_of", "route", "undecodable")

ORIGIN_HEADER = "x-beds-origin"
"""The origin of a request this node's role republished (a counted copy, a dead letter)."""


def route(message: DeliveredMessage) -> str:
    """The routing key a request travelled with.

    Published on the events exchange: its routing key. Through the default exchange (a counted
    copy the pool requeued, or a sender writing straight to the queue): the key in
    ``x-beds-routing-key``, which the dispatcher checks against the body and the bindings.
    """
    if message.exchange:
        return message.routing_key or ""
    key = (message.header.properties.headers or {}).get("x-beds-routing-key")
    return key if isinstance(key, str) else ""


def origin_of(message: DeliveredMessage, role_user: str) -> str:
    """The origin RabbitMQ vouches for: the AMQP user that published ``message`` (``user_id``).

    RabbitMQ refuses a publish whose ``user_id`` is not the connection's user, so it cannot be
    forged; a message without one is vouched for by nobody (``""``). A copy this node's role
    put back on the queue (:meth:`~beds.broker.settle.Settler.count_redelivery`) is published
    as the role's own user and keeps the first origin in ``x-beds-origin``: believed only from
    that user, which clients do not share when each role has its own account (``beds
    provision``).
    """
    properties = message.header.properties
    user = safe_shortstr(properties.user_id) or ""
    if user and user == role_user:
        kept = safe_shortstr((properties.headers or {}).get(ORIGIN_HEADER))
        if kept is not None:
            return kept
    return user


def undecodable(message: DeliveredMessage) -> bool:
    """Whether the message's properties did not decode (:mod:`beds.transport.frames`)."""
    return UNDECODABLE_HEADER in (message.header.properties.headers or {})


def request_of(message: DeliveredMessage) -> Request | None:
    """The request in ``message``, for a log line (``None`` if it does not decode).

    Only a message that failed or is late gets here: decoding it again costs nothing that
    matters.
    """
    try:
        return decode_request(
            message.body, message.header.properties.content_type, max_bytes=len(message.body)
        )
    except RequestError:
        return None


def event_id_of(message: DeliveredMessage) -> str:
    """The event id of the request in ``message`` (empty if it does not decode)."""
    request = request_of(message)
    return request.meta.event_id if request is not None else ""
