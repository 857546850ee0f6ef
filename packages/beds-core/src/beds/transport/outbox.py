"""Outgoing frames of one channel, written together once per turn of the event loop.

aiormq writes every publish and every ack with its own ``send()``. On a busy node those writes
were the largest single cost (about 40 % of the node's CPU when answering pings), and on a busy
client the second largest. An :class:`Outbox` collects what the tasks using its channel produce
during one turn of the event loop (publishes and acknowledgements) and hands it to the
connection's writer as one chunk, so one ``send()`` carries the replies and acks of every request
a broker finished in that turn, or the requests of every caller that sent one:

- Frames keep their order on the wire, so a reply always precedes its request's ack, and
  RabbitMQ has routed the reply before it sees the ack.
- The acks of one turn become one ``basic.ack`` with ``multiple`` set, up to the highest tag
  below which every delivery is settled (acknowledged now, or before). Tags above a delivery
  still being handled are acknowledged one by one, so no message is acknowledged early.
- :meth:`Outbox.publish` asks for no confirm. On a channel in confirm mode,
  :meth:`Outbox.publish_confirmed` registers the publish with aiormq's confirm bookkeeping (the
  channel's delivery tags, confirmations and returned-message lookup), so aiormq resolves the
  returned future with RabbitMQ's confirm, or fails it with ``PublishError`` (returned) or
  ``DeliveryError`` (nacked), exactly as ``basic_publish`` would. Every publish on such a channel
  must then go through the outbox, or the delivery tags would disagree.

If the channel closes before a turn's frames are written, they are dropped: the deliveries stay
unacknowledged and RabbitMQ delivers them again, and confirm futures fail with the channel.
"""

from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING, Any

from aiormq.abc import ChannelFrame
from loguru import logger

from beds.transport.publish import publish_frames

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel
    from pamqp.commands import Basic

__all__ = ("Outbox",)

# basic.ack (class 60, method 80): frame type 1, channel, size 13, delivery tag, flags, frame end.
_ACK = struct.Struct(">BHIHHQBB")


class Outbox:
    """Publishes and acks for one channel, written once per loop turn.

    Args:
        channel: an open aiormq channel. A consume channel opened without publisher confirms
            for replies and acks; or a channel in confirm mode for :meth:`publish_confirmed`.
    """

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel
        self._number: int = channel.number
        self._max_body: int = channel.max_content_size  # type: ignore[attr-defined]
        tune = getattr(getattr(channel, "connection", None), "connection_tune", None)
        self._frame_max: int = getattr(tune, "frame_max", 0) or 131072
        self._frames: list[bytes] = []
        self._acks: list[int] = []
        self._unsettled: set[int] = set()
        """Delivery tags received and not yet acknowledged or rejected."""
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = asyncio.create_task(
            self._run(), name=f"beds-outbox-{self._number}"
        )
        self.writes = 0
        """Chunks handed to the connection's writer (for tests and diagnostics)."""

    # -- publishing ---------------------------------------------------------------------------

    def publish(
        self,
        body: bytes,
        *,
        exchange: str = "",
        routing_key: str,
        properties: Basic.Properties,
        mandatory: bool = False,
    ) -> None:
        """Queue a publish that asks for no confirm.

        Raises:
            ValueError: AMQP cannot carry the properties (nothing was queued).
        """
        self._frames.extend(self._frames_of(body, exchange, routing_key, mandatory, properties))
        self._wake.set()

    def _frames_of(
        self,
        body: bytes,
        exchange: str,
        routing_key: str,
        mandatory: bool,
        properties: Basic.Properties,
    ) -> list[bytes]:
        """The publish's frames, checked against what the connection accepts."""
        try:
            frames = publish_frames(
                self._number, self._max_body, body, exchange, routing_key, mandatory, properties
            )
        except (TypeError, ValueError, struct.error, UnicodeError, OverflowError) as exc:
            raise ValueError(f"AMQP cannot carry this publish: {exc}") from exc
        # A content header larger than frame_max makes RabbitMQ close the whole connection.
        if len(frames[1]) > self._frame_max:
            raise ValueError(
                f"the properties take {len(frames[1])} bytes, more than one frame "
                f"({self._frame_max} bytes)"
            )
        return frames

    def publish_confirmed(
        self,
        body: bytes,
        *,
        exchange: str = "",
        routing_key: str,
        properties: Basic.Properties,
        mandatory: bool = False,
    ) -> asyncio.Future[Any]:
        """Queue a publish on a confirm-mode channel; the future is RabbitMQ's answer.

        With ``mandatory``, a returned message fails the future with ``PublishError``. aiormq
        finds a returned message by its ``message_id``, which must then be set; a publish whose
        ``message_id`` another mandatory publish awaiting its confirm already uses goes without
        ``mandatory`` (a return could not tell the two apart).

        Raises:
            aiormq.exceptions.ChannelInvalidStateError: the channel is closed.
            ValueError: AMQP cannot carry the properties (nothing was queued or registered).
        """
        channel: Any = self.channel
        if channel.is_closed:
            import aiormq

            raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
        message_id = properties.message_id
        lookup: dict[str, int] = channel.message_id_delivery_tag
        if mandatory and (not message_id or message_id in lookup):
            mandatory = False
        # Encoded first: a publish that cannot be encoded must not take a delivery tag.
        frames = self._frames_of(body, exchange, routing_key, mandatory, properties)
        # What aiormq's basic_publish does under its lock, without the await in between.
        channel.delivery_tag += 1
        delivery_tag: int = channel.delivery_tag
        confirmation: asyncio.Future[Any] = channel.create_future()
        channel.confirmations[delivery_tag] = confirmation
        if mandatory:
            assert message_id is not None
            lookup[message_id] = delivery_tag

            def forget(_: asyncio.Future[Any]) -> None:
                if lookup.get(message_id) == delivery_tag:
                    del lookup[message_id]

            confirmation.add_done_callback(forget)
        self._frames.extend(frames)
        self._wake.set()
        return confirmation

    def returnable(self, message_id: str) -> asyncio.Future[Any] | bool:
        """Whether a mandatory publish with this ``message_id`` still awaits its answer.

        ``False`` when none does; else its confirm future while it waits, or ``True`` in the
        moment between RabbitMQ's answer and aiormq's bookkeeping of it (ask again).
        """
        channel: Any = self.channel
        tag = channel.message_id_delivery_tag.get(message_id)
        if tag is None:
            return False
        confirmation = channel.confirmations.get(tag)
        return confirmation if isinstance(confirmation, asyncio.Future) else True

    # -- acknowledging ------------------------------------------------------------------------

    def delivered(self, tag: int) -> None:
        """Note a delivery: it is unsettled until acked here or :meth:`settled`."""
        self._unsettled.add(tag)

    def settled(self, tag: int) -> None:
        """Note a delivery settled elsewhere (rejected or requeued, already written)."""
        self._unsettled.discard(tag)

    def ack(self, tag: int) -> None:
        """Queue the ack of a delivery (after its reply, if any, was queued or confirmed)."""
        self._acks.append(tag)
        self._wake.set()

    # -- writing ------------------------------------------------------------------------------

    def _take(self) -> bytes:
        """This turn's frames, acks last; empty when the channel has closed."""
        frames, self._frames = self._frames, []
        acks, self._acks = self._acks, []
        if self.channel.is_closed:
            return b""
        if acks:
            unsettled = self._unsettled
            unsettled.difference_update(acks)
            lowest = min(unsettled) if unsettled else None
            acks.sort()
            below = acks if lowest is None else [tag for tag in acks if tag < lowest]
            number = self._number
            if below:
                # Every tag up to below[-1] is settled now or was before: one frame acks them.
                frames.append(_ACK.pack(1, number, 13, 60, 80, below[-1], 1, 0xCE))
            for tag in acks[len(below) :]:
                frames.append(_ACK.pack(1, number, 13, 60, 80, tag, 0, 0xCE))
        return b"".join(frames)

    async def _run(self) -> None:
        queue = self.channel.write_queue  # type: ignore[attr-defined]
        wake = self._wake
        while True:
            await wake.wait()
            wake.clear()
            payload = self._take()
            if payload:
                self.writes += 1
                await queue.put(ChannelFrame(payload=payload, should_close=False))
            if self._closing and not (self._frames or self._acks):
                return

    async def aclose(self, timeout: float = 5.0) -> None:
        """Hand what is queued to the connection's writer (if the channel is open), then stop.

        Call it before closing the channel, so the last acks precede ``channel.close``.
        """
        task, self._task = self._task, None
        if task is None:
            return
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(task, timeout)
        except (TimeoutError, asyncio.CancelledError):
            # The writer is gone (connection lost): RabbitMQ redelivers what was not acked.
            logger.debug("outbox of channel {} closed without writing", self._number)
        except Exception:
            logger.opt(exception=True).warning("outbox of channel {} failed", self._number)
