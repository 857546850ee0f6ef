"""One socket write per loop turn for a hand-written aiormq channel (the batched ceilings).

aiormq writes every publish and every ack with its own ``send()``, and on a channel with
publisher confirms (its default) ``basic_publish`` waits for RabbitMQ's confirm. The batched
AMQP ceiling, the batched ideal pipeline and the load generator's batched client use a
:class:`TurnWriter` instead, on a channel opened with ``publisher_confirms=False`` (or, for the
confirmed echo's client, in confirm mode, see :meth:`TurnWriter.publish_confirmed`):

- publishes and acks queued during one turn of the event loop wake the writer task once, and
  it puts them on the connection's write queue as one chunk (publishes first, then acks, so a
  reply precedes its request's ack);
- the acks of a turn become one ``basic.ack`` with ``multiple`` set, up to the highest tag below
  which every delivery is settled; tags above a delivery still being handled (a store call that
  has not returned) are acked one by one, so nothing is acknowledged early;
- frames are packed by hand (``pamqp.frame.marshal`` costs several microseconds a publish);
  :func:`publish_frames` gives the same bytes as pamqp for the properties used here.

This is the technique BEDS's node uses, written out with nothing but aiormq: no BEDS import.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from aiormq.abc import ChannelFrame

_FRAME = struct.Struct(">BHI")  # frame type, channel, payload size
_PUBLISH = struct.Struct(">HHH")  # class 60, method 40 (basic.publish), reserved short
_HEADER = struct.Struct(">HHQH")  # class 60, weight 0, body size, property flags
_ACK = struct.Struct(">BHIHHQBB")  # a whole basic.ack frame (class 60, method 80)
_END = b"\xce"
_JSON = b"\x10application/json"  # content_type, as a short string


def _short(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError(f"{text[:40]!r}... is too long for an AMQP short string")
    return bytes((len(raw),)) + raw


def publish_frames(
    number: int,
    max_body: int,
    body: bytes,
    *,
    exchange: str,
    routing_key: str,
    correlation_id: str,
    reply_to: str = "",
    mandatory: bool = False,
    persistent: bool = False,
    message_id: str = "",
) -> list[bytes]:
    """The frames of a ``basic.publish`` with content_type JSON, a correlation id and reply_to
    (and ``mandatory``, ``delivery_mode`` 2 and a message id when asked)."""
    method = b"".join(
        (
            _PUBLISH.pack(60, 40, 0),
            _short(exchange),
            _short(routing_key),
            b"\1" if mandatory else b"\0",
        )
    )
    # The properties in wire order: content_type, delivery_mode, correlation_id, reply_to,
    # message_id.
    flags, fields = 0x8000, [_JSON]
    if persistent:
        flags |= 0x1000
        fields.append(b"\2")
    flags |= 0x0400
    fields.append(_short(correlation_id))
    if reply_to:
        flags |= 0x0200
        fields.append(_short(reply_to))
    if message_id:
        flags |= 0x0080
        fields.append(_short(message_id))
    header = b"".join((_HEADER.pack(60, 0, len(body), flags), *fields))
    frames = [
        b"".join((_FRAME.pack(1, number, len(method)), method, _END)),
        b"".join((_FRAME.pack(2, number, len(header)), header, _END)),
    ]
    for start in range(0, len(body), max_body):
        chunk = body[start : start + max_body]
        frames.append(b"".join((_FRAME.pack(3, number, len(chunk)), chunk, _END)))
    return frames


class TurnWriter:
    """The publishes and acks of one channel, written as one chunk per loop turn."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.writes = 0
        """Chunks handed to the connection's writer."""
        self._number: int = channel.number
        self._max_body: int = channel.max_content_size
        self._frames: list[bytes] = []
        self._acks: list[int] = []
        self._unsettled: set[int] = set()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    def publish(
        self,
        body: bytes,
        *,
        routing_key: str,
        correlation_id: str,
        exchange: str = "",
        reply_to: str = "",
    ) -> None:
        """Queue a publish that asks for no confirm."""
        self._frames += publish_frames(
            self._number,
            self._max_body,
            body,
            exchange=exchange,
            routing_key=routing_key,
            correlation_id=correlation_id,
            reply_to=reply_to,
        )
        self._wake.set()

    def publish_confirmed(
        self,
        body: bytes,
        *,
        routing_key: str,
        correlation_id: str,
        exchange: str = "",
        reply_to: str = "",
        mandatory: bool = True,
        persistent: bool = True,
    ) -> asyncio.Future[Any]:
        """Queue a publish on a channel in confirm mode; the future is RabbitMQ's answer.

        It takes the next delivery tag in aiormq's confirm bookkeeping, as ``basic_publish``
        does, so aiormq resolves the future with the broker's ``basic.ack``, or fails it with
        ``DeliveryError`` (nack) or, with ``mandatory``, ``PublishError`` (returned: aiormq finds
        a returned message by its ``message_id``, here the correlation id). Every publish on the
        channel must go through here, or the tags would disagree.
        """
        channel = self.channel
        if channel.is_closed:
            raise RuntimeError(f"{channel!r} is closed")
        channel.delivery_tag += 1
        tag: int = channel.delivery_tag
        confirmation: asyncio.Future[Any] = channel.create_future()
        channel.confirmations[tag] = confirmation
        if mandatory:
            lookup: dict[str, int] = channel.message_id_delivery_tag
            lookup[correlation_id] = tag
            confirmation.add_done_callback(lambda _: lookup.pop(correlation_id, None))
        self._frames += publish_frames(
            self._number,
            self._max_body,
            body,
            exchange=exchange,
            routing_key=routing_key,
            correlation_id=correlation_id,
            reply_to=reply_to,
            mandatory=mandatory,
            persistent=persistent,
            message_id=correlation_id if mandatory else "",
        )
        self._wake.set()
        return confirmation

    def delivered(self, tag: int) -> None:
        """Note a delivery when it arrives: it holds back multiple acks until it is acked."""
        self._unsettled.add(tag)

    def ack(self, tag: int) -> None:
        """Queue the ack of a delivery (after its reply was queued)."""
        self._acks.append(tag)
        self._wake.set()

    def _take(self) -> bytes:
        frames, self._frames = self._frames, []
        acks, self._acks = sorted(self._acks), []
        if acks:
            self._unsettled.difference_update(acks)
            lowest = min(self._unsettled, default=acks[-1] + 1)
            below = [tag for tag in acks if tag < lowest]
            if below:  # every tag up to below[-1] is settled now or was before
                frames.append(_ACK.pack(1, self._number, 13, 60, 80, below[-1], 1, 0xCE))
            for tag in acks[len(below) :]:
                frames.append(_ACK.pack(1, self._number, 13, 60, 80, tag, 0, 0xCE))
        return b"".join(frames)

    async def _run(self) -> None:
        queue = self.channel.write_queue
        while True:
            await self._wake.wait()
            self._wake.clear()
            payload = self._take()
            if payload and not self.channel.is_closed:
                self.writes += 1
                await queue.put(ChannelFrame(payload=payload, should_close=False))

    async def close(self) -> None:
        """Stop the writer; what is not written yet is dropped (RabbitMQ redelivers it)."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
