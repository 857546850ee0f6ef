"""The outbox without services: what one turn of the event loop writes, and in which order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import frame as amqp_frame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from beds.transport.outbox import Outbox
from beds.transport.publish import publish_frames


class FakeChannel:
    """What the outbox uses of an aiormq channel."""

    def __init__(self, number: int = 3, max_content_size: int = 131_064) -> None:
        self.number = number
        self.max_content_size = max_content_size
        self.write_queue: asyncio.Queue[Any] = asyncio.Queue()
        self.closed = False
        # aiormq's confirm bookkeeping
        self.delivery_tag = 0
        self.confirmations: dict[int, asyncio.Future[Any]] = {}
        self.message_id_delivery_tag: dict[str, int] = {}

    @property
    def is_closed(self) -> bool:
        return self.closed

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()


def frames(payload: bytes) -> list[Any]:
    """Unmarshal every frame of one written chunk."""
    out = []
    while payload:
        used, _channel, value = amqp_frame.unmarshal(payload)
        out.append(value)
        payload = payload[used:]
    return out


async def written(channel: FakeChannel) -> list[list[Any]]:
    """The chunks written so far, each as its frames."""
    await asyncio.sleep(0)  # one turn: the outbox task writes
    await asyncio.sleep(0)
    chunks = []
    while not channel.write_queue.empty():
        chunks.append(frames(channel.write_queue.get_nowait().payload))
    return chunks


def reply(outbox: Outbox, text: bytes, correlation_id: str) -> None:
    outbox.publish(
        text,
        routing_key="amq.rabbitmq.reply-to.abc",
        properties=Basic.Properties(content_type="application/json", correlation_id=correlation_id),
    )


def acks(chunk: list[Any]) -> list[tuple[int, bool]]:
    return [(f.delivery_tag, f.multiple) for f in chunk if isinstance(f, Basic.Ack)]


async def test_replies_and_acks_of_one_turn_leave_in_one_write_reply_first() -> None:
    channel = FakeChannel()
    outbox = Outbox(channel)  # type: ignore[arg-type]
    for tag in (1, 2):
        outbox.delivered(tag)
    reply(outbox, b'{"a": 1}', "c1")
    outbox.ack(1)
    reply(outbox, b'{"b": 2}', "c2")
    outbox.ack(2)
    (chunk,) = await written(channel)
    kinds = [type(f) for f in chunk]
    assert kinds == [Basic.Publish, ContentHeader, ContentBody] * 2 + [Basic.Ack]
    assert chunk[0].routing_key == "amq.rabbitmq.reply-to.abc"
    assert chunk[1].properties.correlation_id == "c1"
    assert chunk[2].value == b'{"a": 1}'
    assert acks(chunk) == [(2, True)]
    await outbox.aclose()


async def test_a_multiple_ack_never_passes_a_delivery_still_being_handled() -> None:
    channel = FakeChannel()
    outbox = Outbox(channel)  # type: ignore[arg-type]
    for tag in range(1, 7):
        outbox.delivered(tag)
    for tag in (5, 2, 1, 3):  # 4 and 6 are still being handled
        outbox.ack(tag)
    (chunk,) = await written(channel)
    assert acks(chunk) == [(3, True), (5, False)]
    outbox.ack(4)
    (chunk,) = await written(channel)
    assert acks(chunk) == [(4, True)]  # 5 is settled already; 6 is not
    outbox.ack(6)
    (chunk,) = await written(channel)
    assert acks(chunk) == [(6, True)]
    await outbox.aclose()


async def test_a_delivery_settled_elsewhere_no_longer_holds_the_multiple_ack_back() -> None:
    channel = FakeChannel()
    outbox = Outbox(channel)  # type: ignore[arg-type]
    for tag in (1, 2, 3):
        outbox.delivered(tag)
    outbox.settled(1)  # requeued with basic.nack, already written
    outbox.ack(2)
    outbox.ack(3)
    (chunk,) = await written(channel)
    assert acks(chunk) == [(3, True)]
    await outbox.aclose()


async def test_a_large_body_is_split_into_frames_of_the_negotiated_size() -> None:
    channel = FakeChannel(max_content_size=10)
    outbox = Outbox(channel)  # type: ignore[arg-type]
    reply(outbox, b"x" * 25, "c1")
    (chunk,) = await written(channel)
    assert chunk[1].body_size == 25
    assert [f.value for f in chunk[2:]] == [b"x" * 10, b"x" * 10, b"x" * 5]
    await outbox.aclose()


async def test_nothing_is_written_on_a_closed_channel() -> None:
    channel = FakeChannel()
    outbox = Outbox(channel)  # type: ignore[arg-type]
    outbox.delivered(1)
    reply(outbox, b"{}", "c1")
    outbox.ack(1)
    channel.closed = True
    assert await written(channel) == []
    await outbox.aclose()


async def test_close_writes_what_is_queued() -> None:
    channel = FakeChannel()
    outbox = Outbox(channel)  # type: ignore[arg-type]
    outbox.delivered(7)
    outbox.ack(7)
    await outbox.aclose()
    chunks = [frames(channel.write_queue.get_nowait().payload)]
    assert acks(chunks[0]) == [(7, True)]
    assert channel.write_queue.empty()


async def test_a_confirmed_publish_is_registered_as_aiormq_would() -> None:
    channel = FakeChannel()
    outbox = Outbox(channel)  # type: ignore[arg-type]
    properties = Basic.Properties(message_id="m1", correlation_id="m1")
    first = outbox.publish_confirmed(
        b"{}", exchange="beds.events", routing_key="a.read", properties=properties, mandatory=True
    )
    second = outbox.publish_confirmed(
        b"{}",
        exchange="beds.events",
        routing_key="a.read",
        properties=Basic.Properties(message_id="m2"),
    )
    # A second mandatory publish with a message id that awaits its confirm goes without
    # mandatory: a return could not tell the two apart.
    third = outbox.publish_confirmed(
        b"{}", exchange="beds.events", routing_key="a.read", properties=properties, mandatory=True
    )
    assert channel.delivery_tag == 3
    assert channel.confirmations == {1: first, 2: second, 3: third}
    # Only mandatory publishes are looked up by message id (a returned message).
    assert channel.message_id_delivery_tag == {"m1": 1}
    (chunk,) = await written(channel)
    publishes = [f for f in chunk if isinstance(f, Basic.Publish)]
    assert [(p.exchange, p.routing_key, p.mandatory) for p in publishes] == [
        ("beds.events", "a.read", True),
        ("beds.events", "a.read", False),
        ("beds.events", "a.read", False),
    ]
    first.set_result(Basic.Ack(delivery_tag=1))
    await asyncio.sleep(0)
    assert channel.message_id_delivery_tag == {}  # forgotten once confirmed
    second.cancel()
    third.cancel()
    await outbox.aclose()


def pamqp_frames(
    number: int, max_body: int, body: bytes, exchange: str, key: str, mandatory: bool, props: Any
) -> list[bytes]:
    marshal = amqp_frame.marshal
    out = [
        marshal(Basic.Publish(exchange=exchange, routing_key=key, mandatory=mandatory), number),
        marshal(ContentHeader(0, len(body), props), number),
    ]
    out += [
        marshal(ContentBody(body[i : i + max_body]), number) for i in range(0, len(body), max_body)
    ]
    return out


@given(
    number=st.integers(1, 65535),
    body=st.binary(max_size=40),
    exchange=st.sampled_from(["", "beds.events", "beds.dlx"]),
    key=st.text(max_size=40) | st.sampled_from(["é" * 127, "é" * 128]),
    mandatory=st.booleans(),
    content_type=st.none() | st.just("application/json"),
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    strings=st.lists(st.none() | st.text(max_size=20) | st.just("x" * 255), min_size=4, max_size=4),
    headers=st.none()
    | st.just({"x-beds-deliveries": 2})
    | st.dictionaries(
        st.text(max_size=8) | st.just("k" * 129),
        st.text(max_size=20) | st.integers(0, 9),
        max_size=3,
    ),
    user_id=st.none() | st.text(max_size=10),
)
def test_publish_frames_are_the_bytes_pamqp_writes(
    number: int,
    body: bytes,
    exchange: str,
    key: str,
    mandatory: bool,
    content_type: str | None,
    delivery_mode: int | None,
    strings: list[str | None],
    headers: dict[str, Any] | None,
    user_id: str | None,
) -> None:
    correlation_id, reply_to, expiration, message_id = strings
    props = Basic.Properties(
        content_type=content_type,
        delivery_mode=delivery_mode,
        correlation_id=correlation_id,
        reply_to=reply_to,
        expiration=expiration,
        message_id=message_id,
        headers=headers,
        user_id=user_id,
    )
    try:
        expected = pamqp_frames(number, 16, body, exchange, key, mandatory, props)
    except (TypeError, ValueError) as exc:  # too long for a short string: the same error
        with pytest.raises(type(exc)):
            publish_frames(number, 16, body, exchange, key, mandatory, props)
        return
    assert publish_frames(number, 16, body, exchange, key, mandatory, props) == expected


def test_the_usual_publishes_do_not_need_pamqp(monkeypatch: pytest.MonkeyPatch) -> None:
    props = Basic.Properties(
        content_type="application/json",
        correlation_id="c" * 32,
        reply_to="amq.rabbitmq.reply-to.abc",
        message_id="m",
        expiration="10000",
        delivery_mode=2,
        headers={"authorization": "Bearer t0ken", "x-beds-lineage": "é"},
        user_id="guest",
    )
    expected = pamqp_frames(5, 100, b"{}", "beds.events", "a.read", True, props)

    def no_pamqp(*args: Any) -> bytes:
        raise AssertionError("pamqp marshalled a usual publish")

    monkeypatch.setattr(amqp_frame, "marshal", no_pamqp)
    assert publish_frames(5, 100, b"{}", "beds.events", "a.read", True, props) == expected


async def test_a_publish_amqp_cannot_carry_takes_no_delivery_tag() -> None:
    channel = FakeChannel()
    outbox = Outbox(channel)  # type: ignore[arg-type]
    too_long = Basic.Properties(message_id="m" * 300)  # over a short string's 255 bytes
    with pytest.raises(ValueError, match="AMQP cannot carry"):
        outbox.publish_confirmed(b"{}", routing_key="q", properties=too_long)
    huge = Basic.Properties(message_id="m1", headers={"x-big": "x" * 200_000})
    with pytest.raises(ValueError, match="more than one frame"):
        outbox.publish_confirmed(b"{}", routing_key="q", properties=huge)
    with pytest.raises(ValueError, match="AMQP cannot carry"):
        outbox.publish(b"{}", routing_key="q" * 300, properties=Basic.Properties())
    assert channel.delivery_tag == 0
    assert channel.confirmations == {}
    fine = outbox.publish_confirmed(
        b"{}", routing_key="q", properties=Basic.Properties(message_id="m2")
    )
    assert channel.delivery_tag == 1
    fine.cancel()
    await outbox.aclose()
