"""Describing, previewing and replaying dead letters (``beds.dlq``), without RabbitMQ."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp.commands import Basic

from beds.dlq import (
    PREVIEW_CHARS,
    REPLAYS_HEADER,
    DeadLetter,
    TopologyMissing,
    describe,
    format_table,
    preview,
    replay_properties,
)
from beds.errors import BedsError

WHEN = dt.datetime(2026, 3, 1, 12, 30, 5, tzinfo=dt.UTC)
BODY = b'{"operation": "create", "template": "note", "payload": {"text": "hi"}}'


def beds_headers(**extra: Any) -> dict[str, Any]:
    """Headers as a broker's ``_dead_letter`` writes them."""
    return {
        "x-beds-error-code": "BEDS-500",
        "x-beds-reason": "poison message: delivered 4 times without an outcome",
        "x-beds-queue": "beds.dev.appServer.wBroker",
        "x-beds-node": "node1",
        "x-beds-routing-key": "note.write",
        "x-beds-dead-lettered-at": int(WHEN.timestamp()),
        **extra,
    }


def x_death(reason: str = "expired", **extra: Any) -> dict[str, Any]:
    """One ``x-death`` entry as pamqp decodes it."""
    return {
        "count": 2,
        "reason": reason,
        "queue": "beds.dev.appServer.wBroker",
        "time": WHEN,
        "exchange": "beds.events",
        "routing-keys": ["note.write"],
        **extra,
    }


def props(**fields: Any) -> Basic.Properties:
    return Basic.Properties(
        content_type="application/json",
        correlation_id="corr-1",
        message_id="msg-1",
        reply_to="amq.rabbitmq.reply-to.abc",
        **fields,
    )


# -- describe --------------------------------------------------------------------------------


def test_describe_a_broker_dead_letter_from_its_x_beds_headers() -> None:
    letter = describe(props(headers=beds_headers()), BODY, routing_key="beds.dev.queue")
    assert letter.source == "beds"
    assert letter.reason == "BEDS-500"
    assert letter.detail == "poison message: delivered 4 times without an outcome"
    assert letter.queue == "beds.dev.appServer.wBroker"
    assert letter.node == "node1"
    assert letter.routing_key == "note.write"  # the header wins over the delivery's key
    assert letter.dead_lettered_at == WHEN
    assert letter.message_id == "msg-1"
    assert letter.correlation_id == "corr-1"
    assert letter.reply_to == "amq.rabbitmq.reply-to.abc"
    assert letter.content_type == "application/json"
    assert letter.body_size == len(BODY)
    assert letter.body_preview == preview(BODY)
    assert letter.replays == 0
    assert letter.why == (
        "BEDS-500 poison message: delivered 4 times without an outcome "
        "(in beds.dev.appServer.wBroker)"
    )


def test_describe_a_rabbitmq_dead_letter_from_its_most_recent_x_death_entry() -> None:
    older = {**x_death("rejected", queue="beds.dev.appServer.rBroker"), "routing-keys": ["x.read"]}
    headers = {"x-death": [x_death("expired"), older], REPLAYS_HEADER: 2}
    letter = describe(props(headers=headers), BODY, routing_key="other.key", redelivered=True)
    assert letter.source == "rabbitmq"
    assert letter.reason == "expired"
    assert letter.queue == "beds.dev.appServer.wBroker"
    assert letter.count == 2
    assert letter.routing_key == "note.write"
    assert letter.dead_lettered_at == WHEN
    assert letter.redelivered
    assert letter.replays == 2
    assert letter.why == "expired in beds.dev.appServer.wBroker (2x)"


def test_describe_prefers_the_brokers_routing_key_to_x_death() -> None:
    # A request the broker requeued (x-beds-routing-key) and RabbitMQ then expired.
    headers = {
        "x-beds-routing-key": "note.write",
        "x-death": [{**x_death(), "routing-keys": ["q"]}],
    }
    letter = describe(props(headers=headers), BODY)
    assert letter.source == "rabbitmq"
    assert letter.routing_key == "note.write"


def test_describe_a_message_without_dead_letter_headers() -> None:
    letter = describe(props(timestamp=WHEN), b"", routing_key="ghost.read")
    assert letter.source == "unknown"
    assert letter.reason == "unknown"
    assert letter.routing_key == "ghost.read"  # the key it reached the dead-letter queue with
    assert letter.dead_lettered_at == WHEN  # the message's own timestamp
    assert letter.body_size == 0
    assert letter.body_preview == ""
    assert letter.why == "unknown (no x-beds-* or x-death headers)"


def test_describe_tolerates_odd_header_values() -> None:
    headers: dict[str, Any] = {
        "x-beds-error-code": b"BEDS-\xff",  # pamqp hands over bytes that are not UTF-8
        "x-beds-dead-lettered-at": 10**20,  # not a Unix time in seconds
        REPLAYS_HEADER: "three",
        "x-death": "not a list",
    }
    letter = describe(Basic.Properties(headers=headers), b"\x00")
    assert letter.reason == "BEDS-\ufffd"
    assert letter.dead_lettered_at is None
    assert letter.replays == 0
    assert letter.routing_key == ""
    assert letter.message_id is None
    assert letter.why == "BEDS-\ufffd"


def test_describe_an_x_death_entry_without_details() -> None:
    letter = describe(Basic.Properties(headers={"x-death": [{}]}), b"")
    assert letter.source == "rabbitmq"
    assert letter.reason == "unknown"
    assert letter.count == 1
    assert letter.why == "unknown (1x)"


# -- preview ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "width", "expected"),
    [
        (b"", 10, ""),
        (b"hello", 10, "hello"),
        (b"hello", 5, "hello"),
        (b"hello world", 5, "hell\u2026"),
        (b"a\nb\tc\x00", 20, "a\\nb\\tc\\x00"),
        (b"\xff\xfeok", 10, "\ufffd\ufffdok"),
        ("h\u00e9llo".encode(), 10, "h\u00e9llo"),
        (b"\x00\x00", 5, "\\x00\u2026"),  # an escape is never cut in half
        (b"\x00", 1, "\u2026"),
    ],
)
def test_preview(body: bytes, width: int, expected: str) -> None:
    assert preview(body, width) == expected


def test_preview_of_a_long_body_is_cut_at_the_default_width() -> None:
    shown = preview(b"x" * 1000)
    assert len(shown) == PREVIEW_CHARS
    assert shown.endswith("\u2026")


def test_preview_refuses_a_width_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        preview(b"x", 0)


@given(body=st.binary(max_size=600), width=st.integers(min_value=1, max_value=120))
def test_preview_is_one_printable_line_never_longer_than_width(body: bytes, width: int) -> None:
    shown = preview(body, width)
    assert len(shown) <= width
    assert shown.isprintable()  # so no line break and no control character either
    assert bool(shown) == bool(body)


@given(text=st.text(max_size=200), width=st.integers(min_value=1, max_value=120))
def test_preview_of_printable_utf8_shows_it_whole_or_cut(text: str, width: int) -> None:
    shown = preview(text.encode(), width)
    if text.isprintable() and len(text) <= width:
        assert shown == text
    elif text.isprintable():
        assert shown == text[: width - 1] + "\u2026"


# -- replay_properties -----------------------------------------------------------------------


def test_replay_properties_strip_dead_letter_headers_and_count_the_replay() -> None:
    headers = {
        **beds_headers(),
        "x-beds-deliveries": 3,
        "x-death": [x_death()],
        "x-first-death-reason": "expired",
        "x-first-death-queue": "q",
        "x-first-death-exchange": "beds.events",
        "x-last-death-reason": "expired",
        "x-last-death-queue": "q",
        "x-last-death-exchange": "beds.events",
        "app-header": "kept",
        "x-custom": 1,
    }
    original = Basic.Properties(
        content_type="application/json",
        content_encoding="identity",
        headers=headers,
        delivery_mode=2,
        priority=3,
        correlation_id="corr-1",
        reply_to="reply-queue",
        expiration="5000",
        message_id="msg-1",
        timestamp=WHEN,
        message_type="request",
        user_id="guest",
        app_id="cli",
    )
    replayed = replay_properties(original)
    assert replayed.headers == {"app-header": "kept", "x-custom": 1, REPLAYS_HEADER: 1}
    assert replayed.expiration is None
    assert replayed.user_id is None
    kept = (
        "content_type",
        "content_encoding",
        "delivery_mode",
        "priority",
        "correlation_id",
        "reply_to",
        "message_id",
        "timestamp",
        "message_type",
        "app_id",
    )
    for name in kept:
        assert getattr(replayed, name) == getattr(original, name), name
    assert original.headers is headers
    assert "x-death" in headers  # the original is not changed


def test_replay_properties_increment_the_replay_count() -> None:
    once = replay_properties(Basic.Properties())
    assert once.headers == {REPLAYS_HEADER: 1}
    twice = replay_properties(Basic.Properties(headers={**(once.headers or {}), "x-death": []}))
    assert twice.headers == {REPLAYS_HEADER: 2}
    assert describe(twice, b"").replays == 2


# -- DeadLetter, format_table ----------------------------------------------------------------


def letter(**fields: Any) -> DeadLetter:
    values: dict[str, Any] = {
        "message_id": "msg-1",
        "correlation_id": "corr-1",
        "routing_key": "note.write",
        "source": "beds",
        "reason": "BEDS-503",
        "detail": "store unreachable",
        "queue": "beds.dev.appServer.wBroker",
        "dead_lettered_at": WHEN,
        "body_size": 12,
        "body_preview": '{"text":"x"}',
    }
    return DeadLetter(**{**values, **fields})


def test_to_json_is_json_ready() -> None:
    document = letter(reply_to="r", content_type="application/json", replays=1).to_json()
    assert orjson.loads(orjson.dumps(document)) == document
    assert document == {
        "message_id": "msg-1",
        "correlation_id": "corr-1",
        "routing_key": "note.write",
        "source": "beds",
        "reason": "BEDS-503",
        "detail": "store unreachable",
        "queue": "beds.dev.appServer.wBroker",
        "count": 1,
        "node": "",
        "dead_lettered_at": "2026-03-01T12:30:05Z",
        "body_size": 12,
        "body_preview": '{"text":"x"}',
        "reply_to": "r",
        "content_type": "application/json",
        "redelivered": False,
        "replays": 1,
        "executed": False,
        "reply": "",
    }
    assert letter(dead_lettered_at=None, message_id=None).to_json()["dead_lettered_at"] is None


def test_to_json_writes_times_in_utc() -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    moment = dt.datetime(2026, 3, 1, 14, 30, 5, tzinfo=plus_two)
    assert letter(dead_lettered_at=moment).to_json()["dead_lettered_at"] == "2026-03-01T12:30:05Z"


def test_format_table_aligns_columns_under_a_header() -> None:
    rows = [
        letter(),
        letter(
            message_id=None,
            correlation_id=None,
            routing_key="",
            source="rabbitmq",
            reason="expired",
            detail="",
            count=3,
            dead_lettered_at=None,
            body_size=0,
            body_preview="",
        ),
    ]
    lines = format_table(rows).splitlines()
    assert len(lines) == 3
    header, first, second = lines
    assert header.split() == [
        "MESSAGE",
        "ID",
        "CORRELATION",
        "ID",
        "ROUTING",
        "KEY",
        "DEAD",
        "SINCE",
        "(UTC)",
        "SIZE",
        "WHY",
        "BODY",
    ]
    for title in ("CORRELATION ID", "ROUTING KEY", "DEAD SINCE (UTC)", "SIZE", "WHY", "BODY"):
        column = header.index(title)
        assert first[column - 2 : column] == "  ", title
    assert first.split()[:5] == ["msg-1", "corr-1", "note.write", "2026-03-01T12:30:05Z", "12"]
    assert "BEDS-503 store unreachable (in beds.dev.appServer.wBroker)" in first
    assert first.endswith('{"text":"x"}')
    assert second.split()[:5] == ["-", "-", "-", "-", "0"]
    assert second.endswith("expired in beds.dev.appServer.wBroker (3x)")  # no trailing spaces


def test_format_table_of_no_letters_is_the_header() -> None:
    assert format_table([]).startswith("MESSAGE ID")
    assert "\n" not in format_table([])


def test_format_table_escapes_what_a_message_carries() -> None:
    hostile = letter(message_id="a\nb", detail="\x1b[2Jcleared", routing_key="k\r")
    table = format_table([hostile])
    assert len(table.splitlines()) == 2
    assert "\x1b" not in table
    assert "a\\nb" in table
    assert "\\x1b[2Jcleared" in table


def test_topology_missing_is_a_beds_error() -> None:
    assert issubclass(TopologyMissing, BedsError)


def test_with_deadline_sets_a_new_deadline_and_leaves_other_bodies_alone() -> None:
    from beds.dlq import with_deadline

    body = orjson.dumps({"operation": "create", "meta": {"deadline": 1.0, "principal": "p"}})
    before = time.time()
    meta = orjson.loads(with_deadline(body, 30))["meta"]
    assert before + 30 <= meta["deadline"] <= time.time() + 30
    assert meta["principal"] == "p"
    for other in (b"not json", b"[1]", b'{"meta": 5}', b"{}"):
        assert with_deadline(other, 30) == other


def test_a_write_whose_reply_was_lost_is_described_as_executed() -> None:
    headers: dict[str, Any] = {
        "x-beds-error-code": "BEDS-500R",
        "x-beds-reason": "the write ran and its reply could not be delivered",
        "x-beds-executed": True,
        "x-beds-reply": '{"ok":true,"status":201}',
    }
    described = describe(Basic.Properties(headers=headers), b"{}", routing_key="note.write")
    assert described.executed
    assert described.reply == '{"ok":true,"status":201}'
    assert described.to_json()["executed"] is True
    assert not describe(Basic.Properties(headers={"x-beds-executed": "yes"}), b"{}").executed
