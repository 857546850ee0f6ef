"""Settling a broker's deliveries: acknowledge, dead-letter, reject or requeue, and track the rest.

The settle invariant (docs/architecture.md, "Settling deliveries"): every delivery a broker takes
is settled, acknowledged or dead-lettered with ``x-beds-error-code``, within its handler budget
plus ``reliability.settle_grace``, whatever the handler, the codec, the reply or a plugin does.
:class:`Settler` holds the operations that settle, and the time each unsettled delivery arrived,
so the pool can prove the invariant (``oldest_age``, a metric and ``beds status``).

:meth:`Settler.give_up` is the last resort and never raises: it dead-letters the message with
its reason and acknowledges it; if RabbitMQ will not take the dead letter (the confirm channel is
gone, or the request's own headers cannot be sent back), it rejects the delivery without requeue,
so the queue's ``x-dead-letter-exchange`` dead-letters it natively (``x-death`` says
``rejected``). Only a closed consume channel leaves a delivery unsettled, and RabbitMQ then
requeues it by itself.

Why this module is long: every way a delivery is settled, and the fallbacks between them, stay
side by side, so one reading shows that no path leaves a delivery unsettled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING, Any, Final, Protocol

import aiormq
from loguru import logger
from pamqp.commands import Basic

from beds.auth.credential import CREDENTIAL_HEADER
from beds.broker.messages import ORIGIN_HEADER, origin_of
from beds.codec import CONTENT_TYPE, encode_response
from beds.envelopes import Response, ResponseMeta
from beds.errors import InternalError
from beds.transport.amqp import AMQP_FAILURES
from beds.wire_limits import safe_shortstr

if TYPE_CHECKING:
    from aiormq.abc import DeliveredMessage

    from beds.envelopes import Request
    from beds.errors import RequestError
    from beds.transport.outbox import Outbox

__all__ = ("AMQP_FAILURES", "BrokerObserver", "Settler", "copy_properties", "delivery_tag")


class BrokerObserver(Protocol):
    """What a pool reports per message (telemetry). Called on the hot path: keep it cheap."""

    def dispatched(self, request: Request | None, response: Response) -> None:
        """The dispatcher answered a message (``request`` is ``None`` if it did not decode)."""

    def dead_lettered(self, code: str) -> None:
        """The pool published a message to the dead-letter exchange, for this error code."""


_REASON_MAX: Final = 1024
"""Characters of an error message kept in ``x-beds-reason`` (headers share one frame)."""


def delivery_tag(message: DeliveredMessage) -> int:
    """The delivery tag of a consumed message (always set for basic.deliver)."""
    tag = message.delivery_tag
    assert tag is not None, "consumed messages carry a delivery tag"
    return tag


def copy_properties(
    properties: Basic.Properties,
    headers: dict[str, Any],
    *,
    keep_expiration: bool = True,
    user_id: str | None = None,
) -> Basic.Properties:
    """The properties a request keeps when the broker republishes it (persistent).

    Never the sender's ``user_id``: RabbitMQ checks it against the republishing connection.
    """
    return Basic.Properties(
        user_id=user_id,
        content_type=safe_shortstr(properties.content_type),
        correlation_id=safe_shortstr(properties.correlation_id),
        reply_to=safe_shortstr(properties.reply_to),
        message_id=safe_shortstr(properties.message_id),
        expiration=safe_shortstr(properties.expiration) if keep_expiration else None,
        headers=headers,
        delivery_mode=2,
    )


class Settler:
    """The settle operations of one broker pool, and its unsettled deliveries."""

    def __init__(
        self,
        *,
        broker: str,
        queue: str,
        node: str,
        dead_letter_exchange: str,
        user: str = "",
        observer: BrokerObserver | None = None,
    ) -> None:
        self.broker = broker
        self.queue = queue
        self.node = node
        self.user = user
        """The AMQP user of the node's connection (the role's account)."""
        self.dead_letter_exchange = dead_letter_exchange
        self.observer = observer
        self.consume: Outbox | None = None
        """The consume channel's outbox: replies to reads, error answers and every ack."""
        self.confirms: Outbox | None = None
        """The channel with publisher confirms: replies to writes, dead letters, copies."""
        self.dead_lettered = 0
        self.rejected = 0
        """Deliveries dead-lettered by RabbitMQ because the broker's own dead letter failed."""
        self._received: dict[int, float] = {}
        """Delivery tag → ``time.monotonic()`` it arrived, while unsettled (oldest first)."""

    # -- bookkeeping ------------------------------------------------------------------------

    def attach(self, consume: Outbox, confirms: Outbox) -> None:
        """Use these outboxes (a pool's channels, opened again after a loss)."""
        self.consume, self.confirms = consume, confirms
        self._received.clear()  # a closed channel's deliveries went back to the queue

    def received(self, tag: int) -> None:
        """Note a delivery: it is unsettled until settled here."""
        self._received[tag] = time.monotonic()
        if self.consume is not None:
            self.consume.delivered(tag)

    def unsettled(self, message: DeliveredMessage) -> bool:
        """Whether this pool still owes the delivery a settlement."""
        return delivery_tag(message) in self._received and self._same_channel(message)

    def _same_channel(self, message: DeliveredMessage) -> bool:
        consume = self.consume
        return consume is not None and message.channel is consume.channel

    @property
    def unsettled_count(self) -> int:
        """Deliveries taken and not yet settled (queued in the pool or being handled)."""
        return len(self._received)

    def oldest_age(self, now: float) -> float:
        """Seconds the oldest unsettled delivery has waited (0 when none)."""
        for received in self._received.values():
            return now - received
        return 0.0

    # -- settling ---------------------------------------------------------------------------

    def ack(self, message: DeliveredMessage) -> None:
        """Acknowledge a delivery whose outcome is final (its reply queued or confirmed)."""
        tag = delivery_tag(message)
        if self._received.pop(tag, None) is None or not self._same_channel(message):
            return  # settled already, or its channel is gone (RabbitMQ requeued it)
        assert self.consume is not None
        self.consume.ack(tag)

    async def requeue(self, message: DeliveredMessage) -> None:
        """Give a delivery back to the queue (its task died before an outcome)."""
        await self._nack(message, requeue=True)

    async def reject(self, message: DeliveredMessage) -> None:
        """Reject without requeue: the queue's dead-letter exchange takes it (``x-death``)."""
        if await self._nack(message, requeue=False):
            self.rejected += 1

    async def _nack(self, message: DeliveredMessage, *, requeue: bool) -> bool:
        tag = delivery_tag(message)
        if self._received.pop(tag, None) is None or not self._same_channel(message):
            return False
        # A closed channel (or connection) requeues what it held by itself.
        with contextlib.suppress(*AMQP_FAILURES):
            await message.channel.basic_nack(tag, requeue=requeue)
            if self.consume is not None:
                self.consume.settled(tag)  # written: later multiple acks may pass it
            return True
        return False

    async def publish_confirmed(
        self,
        body: bytes,
        *,
        exchange: str,
        routing_key: str,
        properties: Basic.Properties,
        mandatory: bool = False,
    ) -> None:
        """Publish on the confirm channel; return once RabbitMQ confirmed it.

        Raises:
            aiormq.exceptions.AMQPError: the channel is closed, or RabbitMQ refused or returned
                the message.
            ValueError: AMQP cannot carry the properties.
        """
        outbox = self.confirms
        if outbox is None:
            raise aiormq.exceptions.ChannelInvalidStateError("the pool is not started")
        if not properties.message_id:  # aiormq finds a confirm's message by it
            properties.message_id = os.urandom(16).hex()
        while mandatory:
            # A return is matched by message_id: one that another mandatory publish uses (a
            # caller reusing an event id) waits for that one's answer, so neither goes unseen.
            # No await between the last check and the publish below.
            earlier = outbox.returnable(properties.message_id)
            if earlier is False:
                break
            if isinstance(earlier, asyncio.Future):
                await asyncio.wait([earlier])  # its outcome is its own publisher's business
            else:
                await asyncio.sleep(0)
        await outbox.publish_confirmed(
            body,
            exchange=exchange,
            routing_key=routing_key,
            properties=properties,
            mandatory=mandatory,
        )

    async def dead_letter(
        self,
        message: DeliveredMessage,
        error: RequestError,
        *,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Publish the message, with why it could not be answered, to the dead-letter exchange.

        The request's own headers travel along, but for its credential (``authorization``),
        which is removed; if AMQP cannot carry them back (too large, a
        value that does not encode), the letter goes with the broker's headers only.

        Raises:
            aiormq.exceptions.AMQPError: RabbitMQ did not take the dead letter.
        """
        properties = message.header.properties
        own = dict(properties.headers or {})
        # A dead letter keeps no secret: operators read and replay it (docs/security.md).
        if own.pop(CREDENTIAL_HEADER, None) is not None:
            own["x-beds-credential-removed"] = True
        reason = f"{error.message}: {'; '.join(error.details)}" if error.details else error.message
        ours: dict[str, Any] = {
            "x-beds-error-code": error.CODE,
            "x-beds-reason": reason[:_REASON_MAX],
            "x-beds-queue": self.queue,
            "x-beds-node": self.node,
            ORIGIN_HEADER: origin_of(message, self.user),
            "x-beds-routing-key": safe_shortstr(own.get("x-beds-routing-key"))
            or safe_shortstr(message.routing_key)
            or "",
            "x-beds-dead-lettered-at": int(time.time()),
            **(extra or {}),
        }
        routing_key = safe_shortstr(message.routing_key) or self.queue
        try:
            await self.publish_confirmed(
                message.body,
                exchange=self.dead_letter_exchange,
                routing_key=routing_key,
                # Without the request's expiration: a dead letter waits for an operator.
                properties=copy_properties(properties, {**own, **ours}, keep_expiration=False),
            )
        except ValueError:
            ours["x-beds-headers-dropped"] = True
            await self.publish_confirmed(
                message.body,
                exchange=self.dead_letter_exchange,
                routing_key=routing_key,
                properties=copy_properties(properties, ours, keep_expiration=False),
            )
        self.dead_lettered += 1
        if self.observer is not None:
            self.observer.dead_lettered(error.CODE)

    async def give_up(
        self,
        message: DeliveredMessage,
        error: RequestError,
        *,
        answer: bool,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Settle a delivery that gets no normal outcome; never raises (module docstring).

        Args:
            message: the delivery.
            error: why; its code goes in ``x-beds-error-code``.
            answer: also tell the caller with an error reply (best effort).
            extra: more ``x-beds-*`` headers for the dead letter.
        """
        if not self.unsettled(message):
            return
        try:
            await self.dead_letter(message, error, extra=extra)
        except AMQP_FAILURES as exc:
            logger.warning(
                "broker {}: the dead letter ({}) was not taken ({}); rejecting the delivery "
                "to the queue's dead-letter exchange",
                self.broker,
                error.CODE,
                type(exc).__name__,
            )
            if answer:
                self.answer(message, error)
            await self.reject(message)
            return
        if answer:
            self.answer(message, error)
        self.ack(message)

    async def count_redelivery(
        self, message: DeliveredMessage, max_deliveries: int, route: str
    ) -> None:
        """Count a redelivery: requeue a counted copy, or dead-letter the message as poison.

        A redelivered message was handed out before without an outcome (its task or node died).
        Its count travels in the ``x-beds-deliveries`` header of a copy put back on the queue
        (confirmed before the original is acknowledged), so it survives node restarts. ``route``
        is the key it travelled with, kept in ``x-beds-routing-key`` for the route check, its
        dead letter and a replay.
        """
        properties = message.header.properties
        headers = dict(properties.headers or {})
        seen = headers.get("x-beds-deliveries", 1)
        deliveries = (seen if isinstance(seen, int) and seen > 0 else 1) + 1
        if deliveries > max_deliveries:
            poison = InternalError(
                f"poison message: delivered {deliveries} times without an outcome (each task "
                "holding it died); dead-lettered, not run again. A write may have run: ask again "
                "with its idempotency key"
            )
            await self.give_up(message, poison, answer=True)
            return
        headers["x-beds-deliveries"] = deliveries
        headers.setdefault("x-beds-routing-key", route)
        headers[ORIGIN_HEADER] = origin_of(message, self.user)
        await self.publish_confirmed(
            message.body,
            exchange="",
            routing_key=self.queue,
            properties=copy_properties(properties, headers, user_id=self.user or None),
        )
        self.ack(message)

    def answer(self, message: DeliveredMessage, error: RequestError) -> None:
        """Tell a waiting caller why its request got no normal reply (best effort)."""
        properties = message.header.properties
        reply_to = safe_shortstr(properties.reply_to)
        consume = self.consume
        if not reply_to or consume is None or consume.channel.is_closed:
            return
        response = Response(
            ok=False,
            status=error.STATUS,
            error=error.to_error(),
            meta=ResponseMeta(node=self.node),
        )
        with contextlib.suppress(*AMQP_FAILURES):
            consume.publish(
                encode_response(response),
                routing_key=reply_to,
                properties=Basic.Properties(
                    content_type=CONTENT_TYPE,
                    correlation_id=safe_shortstr(properties.correlation_id),
                ),
            )
