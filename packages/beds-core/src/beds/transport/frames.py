"""Incoming frames that pamqp cannot decode reach BEDS as messages, not as a dead connection.

RabbitMQ passes AMQP short strings (``correlation_id``, ``reply_to``, routing keys…) and header
tables through without checking that they are UTF-8, and pamqp 4 decodes them strictly: one
message with a byte such as ``0xff`` in a property makes pamqp raise inside aiormq's frame
reader, which closes the whole connection. The node reconnects, RabbitMQ delivers the same
message again, and the node never serves again. One sender could stop every consumer.

:func:`tolerate_undecodable_frames` changes two things in pamqp, once per process:

- short strings are decoded with ``surrogateescape``: invalid bytes become lone surrogates, so
  the value reaches BEDS, fails every "is this text" check (it cannot be encoded as UTF-8) and
  is refused with a code;
- a content header that still does not decode (a header table with a non-UTF-8 key, a
  timestamp out of range…) becomes one with no properties but the header
  ``x-beds-undecodable-properties`` holding pamqp's reason and the body size it announced, so the
  body is read and the broker refuses the message (it has no ``reply_to``, so it is
  dead-lettered with the reason).

Both touch pamqp's module state (``decode.METHODS`` and ``frame._unmarshal_header_frame``);
``tests/test_frames.py`` pins that behaviour for the pamqp version in use.
"""

from __future__ import annotations

import struct
from typing import Final

from pamqp import decode, frame, header
from pamqp.commands import Basic

__all__ = ("UNDECODABLE_HEADER", "tolerate_undecodable_frames")

UNDECODABLE_HEADER: Final = "x-beds-undecodable-properties"
"""Set on a message whose properties pamqp could not decode; its value says why."""

_strict_header_frame = frame._unmarshal_header_frame
_HEADER_START = struct.Struct(">HHQ")  # class id, weight, body size


def _short_str(value: bytes) -> tuple[int, str]:
    """Like pamqp's ``short_str``, keeping invalid UTF-8 as lone surrogates, not raising."""
    if not value:
        raise ValueError("Could not unpack short string value")
    length = value[0]
    return length + 1, value[1 : length + 1].decode("utf-8", "surrogateescape")


def _header_frame(frame_data: bytes) -> header.ContentHeader:
    """Decode a content header as pamqp does; on failure, a header with the reason instead."""
    try:
        return _strict_header_frame(frame_data)
    except Exception as exc:  # anything pamqp raises (ValueError, OverflowError…)
        if len(frame_data) < _HEADER_START.size:
            raise  # not even a body size: the frame itself is broken, as pamqp says
        class_id, weight, body_size = _HEADER_START.unpack_from(frame_data)
        reason = f"{type(exc.__cause__ or exc).__name__}: {exc.__cause__ or exc}"[:200]
        properties = Basic.Properties(headers={UNDECODABLE_HEADER: reason})
        content_header = header.ContentHeader(weight, body_size, properties)
        content_header.class_id = class_id
        return content_header


def tolerate_undecodable_frames() -> None:
    """Install the tolerant decoders in pamqp (idempotent; see the module docstring)."""
    decode.METHODS["shortstr"] = _short_str
    frame._unmarshal_header_frame = _header_frame
