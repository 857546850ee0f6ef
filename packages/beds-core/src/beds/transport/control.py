"""The control-event channel: what nodes tell each other (one design for every such need).

Session revocation, cache invalidation, operator commands, live updates and node heartbeats are
all *control events*: small, infrequent, for every node of an environment, and still relevant to
a node that starts a little later. They travel on one channel:

- **Topology.** A topic exchange (``amqp.control_exchange``, routing key = the event's ``kind``)
  bound with ``#`` to one RabbitMQ *stream* per environment, ``beds.{env}.control``, which keeps
  events for ``control.retention_seconds``. A stream is an append-only log that every consumer
  reads independently, so there is no queue per node to declare, leak or clean up.
- **Replay.** A node consumes the stream from ``control.replay_seconds`` ago (``x-stream-offset``
  as a timestamp), so a node that starts late still learns the events that matter now (a
  revocation within a token's lifetime, the last heartbeat of every node).
- **Side reads for the frequent kinds** (``SIDE_READS``): events published per write go to a
  second topic exchange, ``{control_exchange}.live``, bound by kind to what reads them, declared
  only by a channel with a handler for those kinds: the live stream ``beds.{env}.live``
  (``record.changed``, ``records.changed``; an HTTP edge), read from
  ``control.live_replay_seconds`` ago, and for ``cache.invalidate`` (nodes with cached
  templates) an exclusive queue of the reading connection's own, named by RabbitMQ
  (``amq.gen-…``): from the moment of attaching, since a starting node's cache is empty and a
  reconnected one empties it; RabbitMQ deletes it with the connection. On the control stream
  these kinds reached every node, and a node starting after heavy writing read twenty minutes
  of them again; a stream for each, declared by every node, cost every environment two more
  streams' files.
- **Origin.** Every event is published with the AMQP ``user_id`` property, which RabbitMQ checks
  against the publishing connection's user: the vouched origin. An event without one, or from a
  user outside ``control.trusted_users`` (or ``control.trusted_by_kind`` for its kind), is
  refused and counted, never delivered; one published since this node joined is also copied to
  the dead-letter exchange with ``BEDS-403O`` (replayed ones were, when they were new). An
  event whose kind is not its routing key is malformed: a user trusted for one kind cannot
  slip in another.
- **Handlers.** ``subscribe(kind, handler)``; each event goes to the handlers of its kind, in
  order. A handler that raises is logged and counted; the others still run.
- **Metrics.** ``received``/``refused``/``published``/``failed`` counters per kind
  (``beds_control_events_total``).

The first user is the node heartbeat (``node.status``), which ``beds status --all`` and the
``/status`` document's ``peers`` read (:mod:`beds.telemetry.status`).

Why this module is long: the topology (one exchange and stream, the side reads), the reading
(replay windows, acknowledgements, origin checks, dead-lettering) and the publishing of one
channel belong together; the event's wire form is :mod:`beds.transport.control_event`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import aiormq
from loguru import logger
from pamqp.commands import Basic

from beds.bugs import report_bug
from beds.dispatch.cache import INVALIDATE
from beds.dispatch.live import RECORD_CHANGED, RECORDS_CHANGED
from beds.errors import UntrustedOrigin
from beds.transport.control_event import MAX_EVENT_BYTES, ControlEvent, decode_event, encode_event
from beds.transport.outbox import Outbox

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
    from pamqp.common import FieldValue

    from beds.config.model import Config

__all__ = (
    "SERVER_NAMED",
    "SIDE_KINDS",
    "SIDE_READS",
    "ControlChannel",
    "Handler",
    "control_stream",
    "live_stream",
)

_SLACK: Final = 64
"""Bytes :meth:`ControlChannel.room` keeps free for the event's id and time, set when it is
published (a time's digits vary)."""
_CONTENT_TYPE: Final = "application/json"
SIDE_READS: Final[dict[str, frozenset[str]]] = {
    "live": frozenset({RECORD_CHANGED, RECORDS_CHANGED}),
    "cache": frozenset({INVALIDATE}),
}
"""Each side read (the live stream, the cache queues) and the kinds bound to it (module
docstring)."""
SIDE_KINDS: Final = frozenset().union(*SIDE_READS.values())
"""Kinds published on the live exchange, not the control one."""
_LIVE_SEGMENT_BYTES: Final = 16 * 1024 * 1024
"""The live stream's segment size: RabbitMQ drops whole segments by age, so a small segment lets
``x-max-age`` apply to a busy stream of small events (the default segment is 500 MB)."""


def control_stream(config: Config) -> str:
    """The environment's control stream."""
    return f"beds.{config.node.env}.control"


def live_stream(config: Config) -> str:
    """The environment's live stream (read by HTTP edges)."""
    return f"beds.{config.node.env}.live"


SERVER_NAMED: Final = "amq.gen-"
"""How the names RabbitMQ gives queues declared without one start (the cache reads')."""


Handler = Callable[[ControlEvent], Awaitable[None] | None]


class ControlChannel:
    """Publish and receive control events for one node (see the module docstring).

    Args:
        config: the node's configuration (``[control]``, ``amqp.control_exchange``).
        user: the AMQP user of the node's connection, sent as ``user_id``.
    """

    def __init__(self, config: Config, *, user: str) -> None:
        self.config = config
        self.settings = config.control
        self.exchange = config.amqp.control_exchange
        self.stream = control_stream(config)
        self.live_exchange = config.amqp.live_exchange
        self.live_stream = live_stream(config)
        self.user = user
        self.received: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        """Events not delivered, by reason (``untrusted``, ``malformed``, ``other-env``)."""
        self.published: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        """Events :meth:`publish` could not hand to RabbitMQ, by kind."""
        self.handler_failures = 0
        self.joined_at = time.time()
        """When this node started reading: older events are replays."""
        self._handlers: dict[str, list[Handler]] = {}
        self._channel: AbstractChannel | None = None
        self._publisher: AbstractChannel | None = None
        self._outbox: Outbox | None = None
        """Every publish of ``_publisher`` goes through it (its confirm bookkeeping)."""
        self._acks: Outbox | None = None  # one multiple ack a loop turn, not a write an event
        self._reading: set[str] = set()
        """The side reads ``_channel`` consumes (those with a handler for one of their kinds)."""
        self._side_starts: set[asyncio.Task[None]] = set()  # held: a bare task may be collected
        self.side_queues: dict[str, str] = {}
        """The queue each side read consumes now, by name (a cache queue changes each attach)."""

    @property
    def live(self) -> bool:
        """Whether the node reads the stream now (events are not being missed)."""
        return self._channel is not None and not self._channel.is_closed

    def room(self, kind: str) -> int:
        """The most bytes an event's ``data`` of ``kind`` may take as JSON to be published."""
        envelope = encode_event(
            ControlEvent(kind=kind, origin=self.config.node.name, env=self.config.node.env)
        )
        return MAX_EVENT_BYTES - len(envelope) - _SLACK

    def subscribe(self, kind: str, handler: Handler) -> None:
        """Call ``handler`` with every event of ``kind`` (replayed ones included).

        The first handler of a side read's kind on an attached channel starts that read (the
        live stream from ``control.live_replay_seconds`` ago, so a write just before is not
        missed).
        """
        self._handlers.setdefault(kind, []).append(handler)
        channel = self._channel
        if channel is not None:
            for name in self._unread():
                task = asyncio.get_running_loop().create_task(self._start_side(channel, name))
                self._side_starts.add(task)
                task.add_done_callback(self._side_starts.discard)

    async def side_reads_started(self) -> None:
        """Wait for the side reads :meth:`subscribe` started.

        Until then an event of theirs is dropped by the exchange if nothing else reads its kind.
        """
        await asyncio.gather(*self._side_starts, return_exceptions=True)

    def _unread(self) -> list[str]:
        """The side reads a handler wants and the channel does not read yet, now marked read."""
        wanted = [
            name
            for name, kinds in SIDE_READS.items()
            if name not in self._reading and not kinds.isdisjoint(self._handlers)
        ]
        self._reading.update(wanted)
        return wanted

    async def attach(self, connection: AbstractConnection) -> None:
        """Declare the exchanges and the stream, and consume from ``replay_seconds`` ago."""
        publisher = await connection.channel(publisher_confirms=True)
        for exchange in (self.exchange, self.live_exchange):
            await publisher.exchange_declare(exchange, exchange_type="topic", durable=True)
        await publisher.queue_declare(self.stream, durable=True, arguments=self._stream_arguments())
        await publisher.queue_bind(self.stream, self.exchange, routing_key="#")
        channel = await connection.channel(publisher_confirms=False)
        await channel.basic_qos(prefetch_count=100)  # a stream needs a prefetch
        self.joined_at = time.time()
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.settings.replay_seconds)
        old_outboxes, self._acks = (self._outbox, self._acks), Outbox(channel)  # before deliveries
        await channel.basic_consume(
            self.stream, self._on_message, arguments={"x-stream-offset": since}
        )
        self._reading = set()
        for name in self._unread():  # before `live`: the cache trusts what it says
            await self._read_side(channel, name)
        self._publisher, self._channel = publisher, channel
        self._outbox = Outbox(publisher)
        for name in self._unread():  # a handler added while this attached
            await self._read_side(channel, name)
        for old in filter(None, old_outboxes):  # a reconnect: its channel died with it
            await old.aclose()

    def _stream_arguments(self, **extra: FieldValue) -> dict[str, FieldValue]:
        age = f"{max(1, round(self.settings.retention_seconds))}s"
        return {"x-queue-type": "stream", "x-max-age": age, **extra}

    async def _read_side(self, channel: AbstractChannel, name: str) -> None:
        """Declare, bind and consume the side read ``name`` (module docstring).

        Raises:
            aiormq.exceptions.AMQPError: RabbitMQ refused one of them (a permission, say).
        """
        offset: dict[str, FieldValue] = {}
        if name == "live":
            queue = self.live_stream
            segments: FieldValue = _LIVE_SEGMENT_BYTES
            arguments = self._stream_arguments(**{"x-stream-max-segment-size-bytes": segments})
            await channel.queue_declare(queue, durable=True, arguments=arguments)
            seconds = self.settings.live_replay_seconds
            offset["x-stream-offset"] = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
        else:
            queue = (await channel.queue_declare("", exclusive=True, auto_delete=True)).queue or ""
        for kind in sorted(SIDE_READS[name]):
            await channel.queue_bind(queue, self.live_exchange, routing_key=kind)
        await channel.basic_consume(queue, self._on_message, arguments=offset)
        self.side_queues[name] = queue

    async def _start_side(self, channel: AbstractChannel, name: str) -> None:
        """:meth:`_read_side` for a handler added while attached.

        A failure is logged; the next attach (a reconnect) tries again.
        """
        try:
            await self._read_side(channel, name)
        except (aiormq.exceptions.AMQPError, ConnectionError) as exc:
            logger.warning("control events of {} not read ({})", sorted(SIDE_READS[name]), exc)

    async def publish(self, kind: str, data: dict[str, Any]) -> ControlEvent:
        """Publish an event (confirmed) and return it.

        Raises:
            aiormq.exceptions.AMQPError: RabbitMQ did not take it.
            ValueError: ``kind`` is not a valid kind, or the event is too large.
        """
        event, confirmation = self._queue(kind, data)
        await confirmation
        return event

    def send(self, kind: str, data: dict[str, Any]) -> asyncio.Future[Any]:
        """Queue an event without waiting: it leaves with this loop turn's other publishes.

        The future is RabbitMQ's confirm (it fails as :meth:`publish` raises); the events of one
        turn cost one write, where a task per event cost a task and a write each.

        Raises:
            aiormq.exceptions.ChannelInvalidStateError: the control channel is not open.
            ValueError: ``kind`` is not a valid kind, or the event is too large.
        """
        return self._queue(kind, data)[1]

    def _queue(self, kind: str, data: dict[str, Any]) -> tuple[ControlEvent, asyncio.Future[Any]]:
        try:
            event = ControlEvent(
                kind=kind, origin=self.config.node.name, env=self.config.node.env, data=data
            )
            body = encode_event(event)
            if len(body) > MAX_EVENT_BYTES:
                raise ValueError(f"control event of {len(body)} bytes, over {MAX_EVENT_BYTES}")
            outbox = self._outbox
            if outbox is None or outbox.channel.is_closed:
                raise aiormq.exceptions.ChannelInvalidStateError("the control channel is not open")
            confirmation = outbox.publish_confirmed(
                body,
                exchange=self.live_exchange if kind in SIDE_KINDS else self.exchange,
                routing_key=kind,
                properties=Basic.Properties(
                    content_type=_CONTENT_TYPE, user_id=self.user, message_id=event.id
                ),
            )
        except BaseException:
            self.failed[kind] += 1
            raise
        confirmation.add_done_callback(lambda done: self._count(kind, done))
        return event, confirmation

    def _count(self, kind: str, confirmation: asyncio.Future[Any]) -> None:
        if confirmation.cancelled() or confirmation.exception() is not None:
            self.failed[kind] += 1
        else:
            self.published[kind] += 1

    async def _on_message(self, message: DeliveredMessage) -> None:
        tag, acks = message.delivery_tag, self._acks
        if tag is not None and acks is not None:
            acks.delivered(tag)
        try:
            await self._deliver(message)
        finally:
            if tag is not None and acks is not None and not message.channel.is_closed:
                acks.ack(tag)

    async def _deliver(self, message: DeliveredMessage) -> None:
        user = message.header.properties.user_id
        user = user if isinstance(user, str) else ""
        kind = message.routing_key or ""
        if kind not in self._handlers and self.settings.trusts(kind, user):
            # Nothing here reads this kind (a batch's records.changed reaches every node): it is
            # not decoded. Untrusted events still go the whole way, to be dead-lettered.
            self.received[kind] += 1
            return
        try:
            event = decode_event(message.body, user)
            if event.kind != message.routing_key:
                raise ValueError(f"kind {event.kind!r} travelled as {message.routing_key!r}")
        except Exception as exc:  # orjson, cattrs and validators raise their own kinds
            self.refused["malformed"] += 1
            logger.warning("control event {} refused: {}", message.routing_key, exc)
            return
        if not self.settings.trusts(event.kind, user):
            self.refused["untrusted"] += 1
            logger.warning(
                "control event {} refused: origin {!r} is not trusted for it (AMQP user_id)",
                event.kind,
                user,
            )
            if event.at >= self.joined_at:
                await self._dead_letter(message, event)
            return
        if event.env != self.config.node.env:
            self.refused["other-env"] += 1  # an exchange shared by environments of one vhost
            return
        self.received[event.kind] += 1
        for handler in self._handlers.get(event.kind, ()):
            try:
                outcome = handler(event)
                if outcome is not None:
                    await outcome
            except Exception as exc:
                self.handler_failures += 1
                report_bug(exc, "control handler for {} failed", event.kind)

    async def _dead_letter(self, message: DeliveredMessage, event: ControlEvent) -> None:
        """Copy a refused event to the dead-letter exchange, for operators (best effort)."""
        outbox = self._outbox
        if outbox is None or outbox.channel.is_closed:
            return
        headers: dict[str, Any] = {
            "x-beds-error-code": UntrustedOrigin.CODE,
            "x-beds-reason": f"control event {event.kind} from an untrusted origin",
            "x-beds-node": self.config.node.name,
            "x-beds-origin": event.user,
            "x-beds-routing-key": event.kind,
            "x-beds-dead-lettered-at": int(time.time()),
        }
        try:
            await outbox.publish_confirmed(
                message.body,
                exchange=self.config.amqp.dead_letter_exchange,
                routing_key=event.kind,
                properties=Basic.Properties(
                    content_type=_CONTENT_TYPE,
                    message_id=event.id,
                    headers=headers,
                    delivery_mode=2,
                ),
            )
        except (aiormq.exceptions.AMQPError, ConnectionError) as exc:
            logger.warning("refused control event {} not dead-lettered ({})", event.kind, exc)

    async def aclose(self) -> None:
        """Close the channels (the streams keep the events; a cache queue goes with them)."""
        for task in list(self._side_starts):
            task.cancel()
        for outbox in filter(None, (self._outbox, self._acks)):
            await outbox.aclose()
        self._outbox = self._acks = None
        for channel in (self._channel, self._publisher):
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
                    await channel.close()
        self._channel = self._publisher = None
