"""Publish lineage events to the logs exchange: batched off the hot path, confirmed.

A request's events (the request itself, its database call, its log records) are appended to an
in-memory buffer, which a background task publishes as one message per batch (``log.events``)
every ``flush_interval`` seconds or ``batch_size`` events, on a channel with publisher confirms.
A batch that cannot be published stays buffered and is tried again; if the buffer outgrows
``max_buffer`` (RabbitMQ unreachable for long), the oldest events are dropped and counted, so
a logs outage never takes memory or requests down with it. Audit records do not wait: they are
published at once, ``batch_size`` to a message, and confirmed before the write's reply
(``publish_now``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import aiormq
from loguru import logger
from pamqp.commands import Basic

from beds.lineage import Event, EventsNotPublished, encode_events, new_event_id

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, AbstractConnection

__all__ = ("AUDIT_ROUTING_KEY", "EVENTS_ROUTING_KEY", "EventPublisher")

EVENTS_ROUTING_KEY = "log.events"
AUDIT_ROUTING_KEY = "log.audit"
_CONTENT_TYPE = "application/json"
_tokens = itertools.count(1)
_WARN_EVERY = 60.0
"""Seconds between two warnings that events cannot be published."""


class EventPublisher:
    """Buffers events and publishes them in confirmed batches to ``exchange``.

    Args:
        exchange: the logs exchange.
        node: this node's name (for the events of its log records).
        env: the environment.
        batch_size: most events per message.
        flush_interval: seconds between two batches while events wait.
        max_buffer: most events kept while RabbitMQ does not take them.
        log_level: the least severe log record that becomes an event.
        user: the AMQP user of the connection, sent as ``user_id`` (the events' origin).
    """

    def __init__(
        self,
        exchange: str,
        *,
        node: str,
        env: str,
        batch_size: int = 500,
        flush_interval: float = 0.05,
        max_buffer: int = 100_000,
        log_level: str = "INFO",
        user: str | None = None,
    ) -> None:
        self.exchange = exchange
        self.user = user
        """Sent as ``user_id``, so a logs broker knows who vouches for the events."""
        self.node = node
        self.env = env
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.log_level = log_level
        self.token = next(_tokens)
        """Marks log records of requests this publisher's node handles (several nodes may
        share one process and one loguru logger)."""
        self.published = 0
        self.dropped = 0
        self.failures = 0
        """Batches RabbitMQ did not take (each tried again later; one warning a minute)."""
        self._buffer: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._channel: AbstractChannel | None = None
        self._task: asyncio.Task[None] | None = None
        self._sink_id: int | None = None

    @property
    def attached(self) -> bool:
        """Whether a channel to publish on is open (a closed one needs :meth:`attach` again)."""
        return self._channel is not None and not self._channel.is_closed

    @property
    def waiting(self) -> int:
        """Events buffered, not yet published."""
        return len(self._buffer)

    def emit(self, event: Event) -> None:
        """Queue one event (never blocks, never raises)."""
        buffer = self._buffer
        buffer.append(event)
        if len(buffer) > self.max_buffer:
            buffer.popleft()
            self.dropped += 1
        if len(buffer) >= self.batch_size:
            self._wake.set()

    async def attach(self, connection: AbstractConnection) -> None:
        """Publish on ``connection`` (again after a reconnection); start the flush task once."""
        self._channel = await connection.channel(publisher_confirms=True)
        if self._task is None:
            self._task = asyncio.create_task(self._flush_loop(), name="beds-events")
        if self._sink_id is None:
            self._sink_id = logger.add(
                self._log_sink,
                level=self.log_level,
                filter=lambda record: record["extra"].get("beds_events") == self.token,
                format="{message}",
                catch=True,
            )

    async def aclose(self) -> None:
        """Publish what is buffered (if RabbitMQ takes it), then stop."""
        if self._sink_id is not None:
            with contextlib.suppress(ValueError):
                logger.remove(self._sink_id)
            self._sink_id = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self._flush()
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()

    async def publish_now(self, *events: Event) -> None:
        """Publish events and wait for RabbitMQ's confirms (audit records).

        A batch's audit records travel ``batch_size`` to a message, as lineage batches do: one
        confirmed message per item made a 500-record audited batch cost RabbitMQ 500.

        Raises:
            EventsNotPublished: the events of the messages RabbitMQ did not take.
        """
        size = self.batch_size
        chunks = [list(events[start : start + size]) for start in range(0, len(events), size)]
        done = await asyncio.gather(
            *(self._publish(chunk, AUDIT_ROUTING_KEY) for chunk in chunks), return_exceptions=True
        )
        failed = [(chunk, o) for chunk, o in zip(chunks, done, strict=True) if o is not None]
        if failed:
            lost = [event for chunk, _ in failed for event in chunk]
            raise EventsNotPublished(lost, failed[0][1])

    def _log_sink(self, message: Any) -> None:
        record = message.record
        extra = record["extra"]
        self.emit(
            Event(
                event_id=new_event_id(self.node, self.env),
                parent_id=extra["event_id"],
                depth=extra.get("event_depth", 0) + 1,
                kind="log",
                node=self.node,
                env=self.env,
                at=record["time"].timestamp(),
                code=record["level"].name,
                message=record["message"],
            )
        )

    async def _flush_loop(self) -> None:
        warned_at = -_WARN_EVERY
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            try:
                await self._flush(len(self._buffer))
            except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
                self.failures += 1
                now = time.monotonic()
                if now - warned_at >= _WARN_EVERY:  # once a minute while it lasts, not per try
                    warned_at = now
                    logger.warning(
                        "{} lineage events wait: the logs exchange {} does not take them ({}); "
                        "is a logs broker (an admin node) declared for this environment?",
                        len(self._buffer),
                        self.exchange,
                        exc,
                    )
                await asyncio.sleep(min(1.0, self.flush_interval * 10))

    async def _flush(self, count: int | None = None) -> None:
        """Publish the first ``count`` buffered events (all of them when ``None``).

        The flush loop passes what was buffered when it woke. Draining until the buffer is
        empty published what arrived during each confirm's wait as a message of its own: under
        steady load one small message per confirm round trip (about 6 ms) instead of one per
        ``flush_interval``, seven times the messages for RabbitMQ to store for the same events.
        """
        buffer = self._buffer
        left = len(buffer) if count is None else count
        while buffer and left > 0:
            batch = [buffer.popleft() for _ in range(min(self.batch_size, left, len(buffer)))]
            left -= len(batch)
            try:
                await self._publish(batch, EVENTS_ROUTING_KEY)
            except BaseException:
                self._buffer.extendleft(reversed(batch))  # try again later, oldest first
                raise
            self.published += len(batch)

    async def _publish(self, events: list[Event], routing_key: str) -> None:
        channel = self._channel
        if channel is None or channel.is_closed:
            raise RuntimeError("no open channel to the logs exchange")
        await channel.basic_publish(
            encode_events(events),
            exchange=self.exchange,
            routing_key=routing_key,
            properties=Basic.Properties(
                content_type=_CONTENT_TYPE, delivery_mode=2, user_id=self.user
            ),
            # Returned (PublishError) when no queue takes it, so a batch, or an audit record,
            # that nothing would store stays buffered instead of vanishing as unroutable.
            mandatory=True,
        )
