"""Publishing a broker's replies, and what happens when one cannot be delivered.

A reply to a read goes through the consume channel's outbox without a confirm, in the same
write as the request's ack (a lost read reply loses no data). A reply to a write is published
with a publisher confirm, ``mandatory`` unless the caller uses direct reply-to, and the request
is acknowledged once RabbitMQ confirmed it. When a reply cannot be delivered (returned, nacked,
the channel closed, properties AMQP cannot carry), the request is still settled: a write that ran
keeps its outcome as a ``BEDS-500R`` dead letter with the reply attached (docs/architecture.md,
"Undeliverable replies"); anything else is counted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from loguru import logger
from pamqp.commands import Basic

from beds.broker.settle import AMQP_FAILURES
from beds.bugs import report_bug
from beds.codec import CONTENT_TYPE, encode_response
from beds.envelopes import READ_OPERATIONS, Response, ResponseMeta
from beds.errors import InternalError, ReplyUndeliverable
from beds.wire_limits import safe_shortstr

if TYPE_CHECKING:
    from aiormq.abc import DeliveredMessage

    from beds.broker.settle import Settler
    from beds.envelopes import Request

__all__ = ("Replies", "encode_reply")

_DIRECT_REPLY_TO: Final = "amq.rabbitmq.reply-to"
_REPLY_HEADER_MAX: Final = 16 * 1024
"""Bytes of an undeliverable reply kept in its dead letter's ``x-beds-reply`` header."""


def encode_reply(response: Response) -> bytes:
    """The reply's bytes; an adapter value the wire rule does not cover still gets one."""
    try:
        return encode_response(response)
    except Exception as exc:
        event_id = response.meta.event_id
        report_bug(exc, "the response to {} is not encodable", event_id, event_id=event_id)
        failure = InternalError("the response could not be encoded; the node log has the details")
        return encode_response(
            Response(
                ok=False,
                status=failure.STATUS,
                error=failure.to_error(),
                meta=ResponseMeta(node=response.meta.node, timings=response.meta.timings),
            )
        )


class Replies:
    """The replies of one broker pool."""

    def __init__(self, settle: Settler, *, broker: str) -> None:
        self.settle = settle
        self.broker = broker
        self.lost = 0
        """Replies that could not be delivered (a read's, or a write's kept as a dead letter)."""

    async def send(
        self,
        message: DeliveredMessage,
        request: Request | None,
        response: Response,
        body: bytes,
    ) -> None:
        """Publish the reply, then settle the request, delivered or not (module docstring)."""
        properties = message.header.properties
        reply_to = properties.reply_to or ""  # checked: a short string that encodes
        reply_properties = Basic.Properties(
            content_type=CONTENT_TYPE,
            correlation_id=safe_shortstr(properties.correlation_id),
            message_id=safe_shortstr(response.meta.event_id),
        )
        consume = self.settle.consume
        if consume is not None and (request is None or request.operation in READ_OPERATIONS):
            # The reply and the ack leave in one write, the reply first.
            try:
                consume.publish(body, routing_key=reply_to, properties=reply_properties)
            except ValueError as exc:
                self._lost(message, response, exc)
            self.settle.ack(message)
            return
        try:
            await self.settle.publish_confirmed(
                body,
                exchange="",
                routing_key=reply_to,
                properties=reply_properties,
                # A caller whose queue is gone is noticed (returned). Not for direct reply-to:
                # RabbitMQ delivers to that pseudo-queue and still returns a mandatory publish.
                mandatory=not reply_to.startswith(_DIRECT_REPLY_TO),
            )
        except AMQP_FAILURES as exc:
            self._lost(message, response, exc)
            if response.ok:
                await self._keep_outcome(message, body)
        self.settle.ack(message)  # settled already if the outcome was kept

    def _lost(self, message: DeliveredMessage, response: Response, exc: Exception) -> None:
        self.lost += 1
        logger.bind(event_id=response.meta.event_id).warning(
            "broker {}: the reply ({}) to {} could not be delivered ({})",
            self.broker,
            response.status,
            safe_shortstr(message.header.properties.reply_to) or "?",
            type(exc).__name__,
        )

    async def _keep_outcome(self, message: DeliveredMessage, body: bytes) -> None:
        """A write ran and nobody got its reply: keep it in the dead-letter queue, reply attached.

        ``x-beds-executed`` tells ``beds dlq replay`` not to run it again.
        """
        kept = ReplyUndeliverable(
            "the write ran and its reply could not be delivered; the reply is in x-beds-reply"
        )
        await self.settle.give_up(
            message,
            kept,
            answer=False,
            extra={
                "x-beds-executed": True,
                "x-beds-reply": body[:_REPLY_HEADER_MAX].decode("utf-8", "replace"),
                "x-beds-reply-truncated": len(body) > _REPLY_HEADER_MAX,
            },
        )
