"""A control event's wire form: what :mod:`beds.transport.control` publishes and reads.

An event is a small JSON object (at most ``MAX_EVENT_BYTES``) naming its ``kind`` (also its
routing key), the publishing node and environment, a time and its ``data``. The AMQP user that
published it is never in the body: only RabbitMQ may vouch for it (``user_id``), so a body that
names one is refused.
"""

from __future__ import annotations

import os
import time
from typing import Any, Final

import attrs
import orjson

from beds.codec import converter
from beds.values import json_type

__all__ = ("MAX_EVENT_BYTES", "ControlEvent", "decode_event", "encode_event")

MAX_EVENT_BYTES: Final = 64 * 1024
"""Largest control event accepted (they are small by design)."""
_KIND_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")


def _kind(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not (0 < len(value) <= 64 and set(value) <= _KIND_CHARS):
        raise ValueError("kind must be 1 to 64 of a-z, 0-9, '_', '.', '-'")


@attrs.frozen(kw_only=True)
class ControlEvent:
    """One control event (wire version 1)."""

    version: int = 1
    kind: str = attrs.field(validator=_kind)
    """What happened, such as ``node.status`` or ``session.revoked``; the routing key."""
    id: str = attrs.field(factory=lambda: os.urandom(16).hex())
    origin: str = ""
    """The publishing node's name (informative; the trusted origin is ``user``)."""
    env: str = ""
    at: float = attrs.field(factory=time.time)
    """Unix time it was published."""
    data: dict[str, Any] = attrs.field(factory=dict)
    user: str = ""
    """The AMQP user RabbitMQ vouched for (``user_id``); set on receipt, never sent."""


def encode_event(event: ControlEvent) -> bytes:
    """The event's wire form (without ``user``, which only RabbitMQ may vouch for)."""
    # JSON-ready data (what BEDS publishes) is written by orjson as it is: cattrs would walk
    # every value of a batch's packed events for nothing.
    document = attrs.asdict(event, recurse=False)
    del document["user"]
    try:
        return orjson.dumps(document)
    except TypeError:
        return orjson.dumps({**document, "data": converter.unstructure(event.data)})


def decode_event(body: bytes, user: str) -> ControlEvent:
    """Decode an event from the stream.

    Raises:
        ValueError: not a valid control event (too large, not JSON, wrong shape).
    """
    if len(body) > MAX_EVENT_BYTES:
        raise ValueError(f"control event of {len(body)} bytes, over {MAX_EVENT_BYTES}")
    raw = orjson.loads(body)
    if not isinstance(raw, dict):
        raise ValueError(f"control event must be a JSON object, got {json_type(raw)}")
    if "user" in raw:
        raise ValueError("a control event may not name its own user")
    return converter.structure({**raw, "user": user}, ControlEvent)
