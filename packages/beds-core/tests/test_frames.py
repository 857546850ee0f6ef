"""Frames pamqp cannot decode reach BEDS as refusable messages (pins pamqp's behaviour)."""

from __future__ import annotations

import struct

from pamqp import frame
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from beds.transport.frames import UNDECODABLE_HEADER, tolerate_undecodable_frames


def _header_frame(flags: int, properties: bytes, body_size: int = 2) -> bytes:
    payload = struct.pack(">HHQH", 60, 0, body_size, flags) + properties
    return struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce"


def test_invalid_utf8_in_a_short_string_property_becomes_lone_surrogates() -> None:
    tolerate_undecodable_frames()
    raw = _header_frame(0x0400, bytes((2,)) + b"\xff\xfe")  # correlation_id
    _, _, header = frame.unmarshal(raw)
    assert isinstance(header, ContentHeader)
    value = header.properties.correlation_id
    assert value == "\udcff\udcfe"
    assert value.encode("utf-8", "surrogateescape") == b"\xff\xfe"


def test_a_header_table_that_does_not_decode_becomes_a_marked_header() -> None:
    tolerate_undecodable_frames()
    key = b"\xff"
    table = bytes((len(key),)) + key + b"t\x01"  # {b"\xff": true}: the key is not UTF-8
    raw = _header_frame(0x2000, struct.pack(">I", len(table)) + table, body_size=7)
    _, _, header = frame.unmarshal(raw)
    assert isinstance(header, ContentHeader)
    assert header.body_size == 7  # the body is still read
    headers = header.properties.headers or {}
    assert "UnicodeDecodeError" in str(headers[UNDECODABLE_HEADER])


def test_valid_frames_decode_as_before() -> None:
    tolerate_undecodable_frames()
    properties = Basic.Properties(
        correlation_id="é-1", reply_to="amq.rabbitmq.reply-to", headers={"x-a": 1}
    )
    raw = frame.marshal(ContentHeader(0, 5, properties), 1)
    _, _, header = frame.unmarshal(raw)
    assert isinstance(header, ContentHeader)
    assert header.properties.correlation_id == "é-1"
    assert header.properties.headers == {"x-a": 1}
    tolerate_undecodable_frames()  # idempotent
    again = frame.unmarshal(raw)[2]
    assert isinstance(again, ContentHeader)
    assert again.properties.reply_to == "amq.rabbitmq.reply-to"
