"""Queue depths and the dead-letter queue's oldest message, read every ``queue_poll_seconds``.

One channel of its own on the node's connection. Depths come from a passive ``queue.declare``
(it changes nothing; ``message_count`` is the messages ready, not those held by consumers).

The age of the dead-letter queue's oldest message is read from its head: taken with
``basic.get`` and given straight back with ``basic.nack(requeue=True)``, which puts it back at
the head of a classic queue, marked redelivered; nothing is lost. The head is read again only
when the depth changed or the last read is ``10 * queue_poll_seconds`` old. A quorum queue
puts a requeued message at the *back* and counts a delivery (RabbitMQ 4 drops a message after
20 by default), so on quorum queues the head is never read and the age is not reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import attrs
from loguru import logger

from beds.dlq import describe
from beds.transport.amqp import dead_letter_queue

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, AbstractConnection

    from beds.telemetry.view import NodeView

__all__ = ("DeadLetterDepth", "QueueDepth", "QueuePoller")

_REREAD_POLLS = 10
"""An unchanged head is read again after this many polls."""


@attrs.frozen(kw_only=True)
class QueueDepth:
    """One broker queue at the last poll."""

    queue: str
    messages: int
    """Messages ready (not counting those delivered and not yet acknowledged)."""
    consumers: int
    """Consumers of the queue: the pools of every node of the role."""


@attrs.frozen(kw_only=True)
class DeadLetterDepth:
    """The environment's dead-letter queue at the last poll."""

    queue: str
    messages: int
    oldest_at: float | None = None
    """Unix time the head message was dead-lettered; ``None`` when empty or not read."""
    head_read: bool = False
    """Whether the head could be read (classic queues); otherwise the age is unknown."""

    def oldest_age(self, now: float) -> float | None:
        """Seconds since the oldest message was dead-lettered: 0 when empty, ``None`` unknown."""
        if self.messages == 0:
            return 0.0
        if self.oldest_at is None:
            return None
        return max(0.0, now - self.oldest_at)


class QueuePoller:
    """Reads the node's queue depths periodically; the last reading is kept in attributes.

    Args:
        node: the node whose connection and configuration are used.
        interval: seconds between polls (``telemetry.queue_poll_seconds``).
    """

    def __init__(self, node: NodeView, interval: float) -> None:
        self.node = node
        self.interval = interval
        self.brokers: dict[str, QueueDepth] = {}
        """Broker → its queue at the last successful poll (empty when it failed)."""
        self.dead: DeadLetterDepth | None = None
        self.polled_at: float | None = None
        """Unix time of the last successful poll."""
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._channel: AbstractChannel | None = None
        self._channel_on: AbstractConnection | None = None
        self._head_read_at = 0.0
        self._failing = False

    def start(self) -> None:
        """Poll now and then every ``interval`` seconds, until :meth:`stop`."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="beds-telemetry-queues")

    async def stop(self) -> None:
        """Stop polling and close the channel."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            # aiormq may turn the cancellation of a call in flight into a channel error, which
            # poll() handles; the loop then ends because _stopping is set.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            await self.poll()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)

    async def poll(self) -> bool:
        """Read every depth once; whether it worked (a failure forgets the last reading).

        Never raises (but for cancellation): telemetry must not take the node down. aiormq
        raises more than its own exceptions when a connection is lost mid-call.
        """
        try:
            await self._poll()
        except Exception as exc:
            self.brokers, self.dead = {}, None
            if not self._failing and not self._stopping.is_set():
                logger.warning("telemetry could not read the queue depths: {!r}", exc)
            self._failing = True
            return False
        if self._failing:
            logger.info("telemetry reads the queue depths again")
        self._failing = False
        return True

    async def _open(self) -> AbstractChannel:
        connection = self.node.connection
        if connection is None or connection.is_closed:
            raise ConnectionError("the node has no RabbitMQ connection (reconnecting)")
        channel = self._channel
        if channel is None or channel.is_closed or self._channel_on is not connection:
            timeout = self.node.config.amqp.connect_timeout
            channel = self._channel = await connection.channel(timeout=timeout)
            self._channel_on = connection
        return channel

    async def _poll(self) -> None:
        config = self.node.config
        timeout = config.amqp.connect_timeout
        channel = await self._open()
        brokers: dict[str, QueueDepth] = {}
        for broker in config.brokers:
            queue = config.queue_name(broker)
            ok = await channel.queue_declare(queue, passive=True, timeout=timeout)
            brokers[broker] = QueueDepth(
                queue=queue, messages=ok.message_count or 0, consumers=ok.consumer_count or 0
            )
        dead = dead_letter_queue(config)
        ok = await channel.queue_declare(dead, passive=True, timeout=timeout)
        self.dead = await self._dead_letters(channel, dead, ok.message_count or 0)
        self.brokers = brokers
        self.polled_at = time.time()

    async def _dead_letters(
        self, channel: AbstractChannel, queue: str, messages: int
    ) -> DeadLetterDepth:
        if messages == 0:
            return DeadLetterDepth(queue=queue, messages=0, head_read=True)
        if self.node.config.amqp.queue_type != "classic":
            return DeadLetterDepth(queue=queue, messages=messages)
        last = self.dead
        unchanged = last is not None and last.head_read and last.messages == messages
        fresh = time.monotonic() - self._head_read_at < _REREAD_POLLS * self.interval
        if unchanged and fresh and last is not None:
            return last
        oldest = await self._read_head(channel, queue)
        self._head_read_at = time.monotonic()
        return DeadLetterDepth(queue=queue, messages=messages, oldest_at=oldest, head_read=True)

    async def _read_head(self, channel: AbstractChannel, queue: str) -> float | None:
        """When the head message was dead-lettered; it goes straight back to the head."""
        timeout = self.node.config.amqp.connect_timeout
        message = await channel.basic_get(queue, no_ack=False, timeout=timeout)
        tag = message.delivery_tag
        if tag is None:
            return None  # emptied since the depth was read
        try:
            letter = describe(
                message.header.properties, message.body, routing_key=message.routing_key
            )
        finally:
            await channel.basic_nack(tag, requeue=True)
        when = letter.dead_lettered_at
        return when.timestamp() if when is not None else None
