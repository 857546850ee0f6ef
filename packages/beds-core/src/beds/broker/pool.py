"""A supervised pool of broker tasks consuming one queue.

One consume channel per broker type; RabbitMQ pushes up to ``prefetch`` messages into an
in-process inbox; ``instances`` worker tasks take one message at a time, dispatch it, publish the
reply and only then acknowledge it. A worker task that dies is logged and replaced (the pool never
shrinks) and the message it held goes back to the queue.

Replies to reads and every ack go through the pool's :class:`~beds.transport.outbox.Outbox`, which
writes what one turn of the event loop produced in one chunk (a reply before its ack, acks
coalesced). Replies to writes, dead letters and requeued copies are published on a second
channel with publisher confirms, and the request is acknowledged once RabbitMQ confirmed them.

A pool reports each outcome to an optional :class:`BrokerObserver` (``beds.telemetry`` is one),
and :meth:`BrokerPool.holding` tells which messages are in flight since when.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING, Any, Protocol

import aiormq
from loguru import logger
from pamqp.commands import Basic

from beds.codec import CONTENT_TYPE, decode_request, encode_response
from beds.envelopes import READ_OPERATIONS, Response, ResponseMeta
from beds.errors import InternalError, MalformedRequest, RequestError
from beds.transport.outbox import Outbox

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage

    from beds.broker.dispatch import Dispatcher
    from beds.config.model import BrokerSettings
    from beds.envelopes import Request

__all__ = ("BrokerObserver", "BrokerPool")


class BrokerObserver(Protocol):
    """What a pool reports per message (telemetry). Called on the hot path: keep it cheap."""

    def dispatched(self, request: Request | None, response: Response) -> None:
        """The dispatcher answered a message (``request`` is ``None`` if it did not decode)."""

    def dead_lettered(self, code: str) -> None:
        """The pool published a message to the dead-letter exchange, for this error code."""


class BrokerPool:
    """One broker type on this node: a queue, a channel and ``instances`` supervised tasks."""

    def __init__(
        self,
        name: str,
        settings: BrokerSettings,
        *,
        queue: str,
        dispatcher: Dispatcher,
        dead_letter_exchange: str,
        count_redeliveries: bool = True,
        observer: BrokerObserver | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.queue = queue
        self.dispatcher = dispatcher
        self.dead_letter_exchange = dead_letter_exchange
        self.max_deliveries = dispatcher.reliability.max_deliveries
        # Classic queues keep no delivery count: the pool counts redeliveries in a header.
        # Quorum queues count them and dead-letter at x-delivery-limit themselves.
        self.count_redeliveries = count_redeliveries
        self.handled = 0
        self.replaced = 0
        self.dead_lettered = 0
        self.over_budget = 0
        """Messages handled for longer than ``reliability.handler_budget`` (each counted once)."""
        self.handler_budget = dispatcher.reliability.handler_budget
        self.observer = observer
        self._inbox: asyncio.Queue[DeliveredMessage] = asyncio.Queue()
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._holding: dict[int, DeliveredMessage] = {}
        self._taken_at: dict[int, float] = {}
        """``time.monotonic()`` when each slot took its message (valid while it is held)."""
        self._channel: AbstractChannel | None = None
        """The consume channel (no publisher confirms): reads' replies and every ack."""
        self._confirms: Outbox | None = None
        """On the channel with publisher confirms: replies to writes, dead letters, copies."""
        self._outbox: Outbox | None = None
        self._consumer_tag: str | None = None
        self._budget_watch: asyncio.Task[None] | None = None
        self._late: set[int] = set()
        """``id()`` of the held messages already reported past the budget."""
        self._stopping = False
        self._idle = asyncio.Event()
        """Set when no message is held or waiting (drain waits for it)."""

    @property
    def size(self) -> int:
        """Live worker tasks (equals ``instances`` while running)."""
        return sum(1 for task in self._workers.values() if not task.done())

    @property
    def in_flight(self) -> int:
        """Messages being handled right now."""
        return len(self._holding)

    @property
    def consuming(self) -> bool:
        """Whether RabbitMQ is delivering to this pool (started, not stopping, channel open)."""
        channel = self._channel
        return (
            self._consumer_tag is not None
            and not self._stopping
            and channel is not None
            and not channel.is_closed
        )

    def holding(self) -> list[tuple[float, DeliveredMessage]]:
        """The messages being handled now, each with the ``time.monotonic()`` it was taken."""
        return [(self._taken_at[slot], message) for slot, message in self._holding.items()]

    async def start(self, connection: AbstractConnection) -> None:
        """Open the channels, start the workers, then start consuming."""
        channel = await connection.channel(publisher_confirms=False)
        prefetch = self.settings.prefetch or 2 * self.settings.instances
        await channel.basic_qos(prefetch_count=prefetch)
        self._channel = channel
        self._confirms = Outbox(await connection.channel(publisher_confirms=True))
        self._outbox = Outbox(channel)
        for slot in range(self.settings.instances):
            self._spawn(slot)
        self._budget_watch = asyncio.create_task(
            self._watch_budget(), name=f"beds-{self.name}-budget"
        )
        ok = await channel.basic_consume(self.queue, self._on_message)
        self._consumer_tag = ok.consumer_tag
        logger.info(
            "broker {} consuming {} with {} tasks (prefetch {})",
            self.name,
            self.queue,
            self.settings.instances,
            prefetch,
        )

    async def stop(self, drain_seconds: float) -> None:
        """Stop consuming, let held and queued messages finish (up to ``drain_seconds``), close."""
        self._stopping = True
        channel = self._channel
        if channel is not None and self._consumer_tag is not None and not channel.is_closed:
            with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
                await channel.basic_cancel(self._consumer_tag)
        if self._holding or not self._inbox.empty():
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), drain_seconds)
        tasks = list(self._workers.values())
        if self._budget_watch is not None:
            tasks.append(self._budget_watch)
            self._budget_watch = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for outbox in (self._confirms, self._outbox):
            if outbox is not None:
                await outbox.aclose()  # the last replies and acks, before channel.close
        # Anything not acknowledged returns to the queue when the channel closes.
        confirms = self._confirms.channel if self._confirms is not None else None
        for open_channel in (confirms, channel):
            if open_channel is not None and not open_channel.is_closed:
                with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
                    await open_channel.close()

    async def _watch_budget(self) -> None:
        """Report each message still handled past the handler budget: a log line and a count.

        One sweep every quarter budget over what the workers hold, rather than a timer per
        message: a timer on every request fills the event loop's heap (five seconds' worth of
        requests) and costs each of them a push and a cancel. A message that finishes late
        between two sweeps is reported when it finishes (:meth:`_work`).
        """
        budget = self.handler_budget
        while True:
            await asyncio.sleep(budget / 4)
            now = time.monotonic()
            for taken, message in self.holding():
                if now - taken > budget and id(message) not in self._late:
                    self._report_late(message, now - taken, "and still running")

    def _report_late(self, message: DeliveredMessage, age: float, state: str) -> None:
        """Count a message handled past the budget (once) and log it with its event id."""
        self._late.add(id(message))
        self.over_budget += 1
        request = _request_of(message)
        event_id = request.meta.event_id if request is not None else ""
        what = f"{request.operation.value} {request.template}" if request else "undecodable"
        logger.bind(event_id=event_id).warning(
            "request {} ({}) is past its handler budget of {:g} s {} ({:.1f} s, broker {})",
            event_id or "?",
            what,
            self.handler_budget,
            state,
            age,
            self.name,
        )

    async def _on_message(self, message: DeliveredMessage) -> None:
        if self._outbox is not None:
            self._outbox.delivered(_tag(message))
        self._inbox.put_nowait(message)

    def _spawn(self, slot: int) -> None:
        task = asyncio.create_task(self._work(slot), name=f"beds-{self.name}-{slot}")
        self._workers[slot] = task
        task.add_done_callback(lambda done: self._on_worker_done(slot, done))

    def _on_worker_done(self, slot: int, task: asyncio.Task[None]) -> None:
        held = self._holding.pop(slot, None)
        if self._stopping:
            return
        reason = "cancelled" if task.cancelled() else repr(task.exception())
        logger.error("broker {} task {} died ({}); replacing it", self.name, slot, reason)
        self.replaced += 1
        if held is not None:
            asyncio.create_task(self._requeue(held))  # noqa: RUF006 - finishes on its own
        self._spawn(slot)

    async def _requeue(self, message: DeliveredMessage) -> None:
        # A closed channel (or connection) requeues what it held by itself.
        with contextlib.suppress(
            aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError, ConnectionError
        ):
            await message.channel.basic_nack(_tag(message), requeue=True)
            if self._outbox is not None:
                self._outbox.settled(_tag(message))  # written: later multiple acks may pass it

    async def _ack(self, message: DeliveredMessage) -> None:
        """Acknowledge a message whose outcome is final (its reply queued or confirmed)."""
        outbox = self._outbox
        if outbox is not None and message.channel is outbox.channel:
            outbox.ack(_tag(message))
        else:  # pragma: no cover - a message always comes from the pool's own channel
            await message.channel.basic_ack(_tag(message))

    async def _publish_confirmed(
        self, body: bytes, *, exchange: str, routing_key: str, properties: Basic.Properties
    ) -> None:
        """Publish on the confirm channel; return once RabbitMQ confirmed it.

        Raises:
            aiormq.exceptions.AMQPError: the channel is closed, or RabbitMQ refused the message.
        """
        outbox = self._confirms
        if outbox is None:
            raise aiormq.exceptions.ChannelInvalidStateError("the pool is not started")
        if not properties.message_id:  # aiormq finds a confirm's message by it
            properties.message_id = os.urandom(16).hex()
        await outbox.publish_confirmed(
            body, exchange=exchange, routing_key=routing_key, properties=properties
        )

    async def _work(self, slot: int) -> None:
        while True:
            message = await self._inbox.get()
            self._holding[slot] = message
            self._taken_at[slot] = time.monotonic()
            try:
                await self._process(message)
            except Exception:
                # The reply or ack failed (channel gone): the message is redelivered.
                logger.opt(exception=True).error("broker {} could not finish a message", self.name)
            # Not in a finally: a task that dies keeps its message for _on_worker_done to requeue.
            self._holding.pop(slot, None)
            age = time.monotonic() - self._taken_at[slot]
            if age > self.handler_budget and id(message) not in self._late:
                self._report_late(message, age, "and finished")
            self._late.discard(id(message))
            self.handled += 1
            if not self._holding and self._inbox.empty():
                self._idle.set()

    async def _process(self, message: DeliveredMessage) -> None:
        properties = message.header.properties
        if not properties.reply_to:
            await self._dead_letter(
                message,
                MalformedRequest("the message has no reply_to property, so no reply is possible"),
            )
            await self._ack(message)
            return
        if message.redelivered and self.count_redeliveries:
            await self._recount(message)
            return
        request, response = await self.dispatcher.handle(message.body, properties.content_type)
        try:
            body = encode_response(response)
        except Exception:
            # An adapter returned a value the wire rule does not cover: still answer the caller.
            logger.opt(exception=True).error(
                "response to {} is not encodable", response.meta.event_id
            )
            response = Response(
                ok=False,
                status=InternalError.STATUS,
                error=InternalError(
                    "the response could not be encoded; the node log has the details"
                ).to_error(),
                meta=response.meta,
            )
            body = encode_response(response)
        if self.observer is not None:
            self.observer.dispatched(request, response)
        if response.error is not None and RequestError.from_error(response.error).TRANSIENT:
            # Retried already (Dispatcher): the caller is told, and operators get a copy.
            await self._dead_letter(message, RequestError.from_error(response.error))
        reply_properties = Basic.Properties(
            content_type=CONTENT_TYPE,
            correlation_id=properties.correlation_id,
            message_id=response.meta.event_id or None,
        )
        outbox = self._outbox
        if (
            outbox is not None
            and message.channel is outbox.channel
            and (request is None or request.operation in READ_OPERATIONS)
        ):
            # A lost reply to a read loses no data (the caller asks again): no confirm. The
            # reply and the ack leave in one write, the reply first.
            outbox.publish(body, routing_key=properties.reply_to, properties=reply_properties)
            outbox.ack(_tag(message))
            return
        await self._publish_confirmed(
            body, exchange="", routing_key=properties.reply_to, properties=reply_properties
        )
        await self._ack(message)

    async def _recount(self, message: DeliveredMessage) -> None:
        """Count a redelivery: requeue a counted copy, or dead-letter the message as poison.

        A redelivered message was handed out before without an outcome (its task or node died).
        Its count travels in the ``x-beds-deliveries`` header of a copy put back on the queue
        (confirmed before the original is acknowledged), so it survives node restarts.
        """
        properties = message.header.properties
        headers = dict(properties.headers or {})
        seen = headers.get("x-beds-deliveries", 1)
        deliveries = (seen if isinstance(seen, int) else 1) + 1
        if deliveries > self.max_deliveries:
            poison = InternalError(
                f"poison message: delivered {deliveries} times without an outcome (each task "
                "holding it died); dead-lettered, not run again. A write may have run: ask again "
                "with its idempotency key"
            )
            await self._dead_letter(message, poison)
            await self._answer_poison(message, poison)
        else:
            headers["x-beds-deliveries"] = deliveries
            # The copy goes through the default exchange: keep the key the request came with,
            # for its dead letter and a replay (beds dlq replay).
            headers.setdefault("x-beds-routing-key", message.routing_key or "")
            await self._publish_confirmed(
                message.body,
                exchange="",
                routing_key=self.queue,
                properties=_copy_properties(properties, headers),
            )
        await self._ack(message)

    async def _answer_poison(self, message: DeliveredMessage, error: RequestError) -> None:
        """Tell a caller still waiting that its request was dead-lettered, not time it out."""
        properties = message.header.properties
        response = Response(
            ok=False,
            status=error.STATUS,
            error=error.to_error(),
            meta=ResponseMeta(node=self.dispatcher.node),
        )
        await self._publish_confirmed(
            encode_response(response),
            exchange="",
            routing_key=properties.reply_to or "",
            properties=Basic.Properties(
                content_type=CONTENT_TYPE, correlation_id=properties.correlation_id
            ),
        )

    async def _dead_letter(self, message: DeliveredMessage, error: RequestError) -> None:
        """Publish the message, with why it could not be answered, to the dead-letter exchange."""
        properties = message.header.properties
        headers = dict(properties.headers or {})
        headers.update(
            {
                "x-beds-error-code": error.CODE,
                "x-beds-reason": error.message,
                "x-beds-queue": self.queue,
                "x-beds-node": self.dispatcher.node,
                "x-beds-routing-key": headers.get("x-beds-routing-key")
                or message.routing_key
                or "",
                "x-beds-dead-lettered-at": int(time.time()),
            }
        )
        await self._publish_confirmed(
            message.body,
            exchange=self.dead_letter_exchange,
            routing_key=message.routing_key or self.queue,
            # Without the request's expiration: a dead letter waits for an operator.
            properties=_copy_properties(properties, headers, keep_expiration=False),
        )
        self.dead_lettered += 1
        if self.observer is not None:
            self.observer.dead_lettered(error.CODE)
        logger.bind(event_id=_event_id_of(message)).warning(
            "broker {} dead-lettered a message: {} ({})", self.name, error.message, error.CODE
        )


def _tag(message: DeliveredMessage) -> int:
    """The delivery tag of a consumed message (always set for basic.deliver)."""
    tag = message.delivery_tag
    assert tag is not None, "consumed messages carry a delivery tag"
    return tag


def _copy_properties(
    properties: Basic.Properties, headers: dict[str, Any], *, keep_expiration: bool = True
) -> Basic.Properties:
    """The properties a request keeps when the broker republishes it (persistent)."""
    return Basic.Properties(
        content_type=properties.content_type,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        message_id=properties.message_id,
        expiration=properties.expiration if keep_expiration else None,
        headers=headers,
        delivery_mode=2,
    )


def _request_of(message: DeliveredMessage) -> Request | None:
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


def _event_id_of(message: DeliveredMessage) -> str:
    """The event id of the request in ``message`` (empty if it does not decode)."""
    request = _request_of(message)
    return request.meta.event_id if request is not None else ""
