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
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import aiormq
import attrs
import orjson
from loguru import logger
from pamqp.commands import Basic

from beds.bugs import report_bug
from beds.codec import converter
from beds.errors import UntrustedOrigin
from beds.transport.outbox import Outbox
from beds.values import json_type

if TYPE_CHECKING:
    import asyncio

    from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage

    from beds.config.model import Config

__all__ = (
    "MAX_EVENT_BYTES",
    "ControlChannel",
    "ControlEvent",
    "Handler",
    "control_stream",
    "decode_event",
    "encode_event",
)

MAX_EVENT_BYTES: Final = 64 * 1024
"""Largest control event accepted (they are small by design)."""
_SLACK: Final = 64
"""Bytes :meth:`ControlChannel.room` keeps free for the event's id and time, set when it is
published (a time's digits vary)."""
_CONTENT_TYPE: Final = "application/json"
_KIND_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")


def _kind(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not (0 < len(value) <= 64 and set(value) <= _KIND_CHARS):
        raise ValueError("kind must be 1 to 64 of a-z, 0-9, '_', '.', '-'")


@attrs.frozen(kw_only=True)
class ControlEvent:
    """One control event (wire version 1)."""

    version: int = 1
    kind: str = attrs.field(validator=_kind)
    """What happened, such as ``node.status`` or ``session.revoked``; the routing key."""
    id: str = attrs.field(factory=lambda: os.urandom(16).hex())
    origin: str = ""
    """The publishing node's name (informative; the trusted origin is ``user``)."""
    env: str = ""
    at: float = attrs.field(factory=time.time)
    """Unix time it was published."""
    data: dict[str, Any] = attrs.field(factory=dict)
    user: str = ""
    """The AMQP user RabbitMQ vouched for (``user_id``); set on receipt, never sent."""


def encode_event(event: ControlEvent) -> bytes:
    """The event's wire form (without ``user``, which only RabbitMQ may vouch for)."""
    # JSON-ready data (what BEDS publishes) is written by orjson as it is: cattrs would walk
    # every value of a batch's packed events for nothing.
    document = attrs.asdict(event, recurse=False)
    del document["user"]
    try:
        return orjson.dumps(document)
    except TypeError:
        return orjson.dumps({**document, "data": converter.unstructure(event.data)})


def decode_event(body: bytes, user: str) -> ControlEvent:
    """Decode an event from the stream.

    Raises:
        ValueError: not a valid control event (too large, not JSON, wrong shape).
    """
    if len(body) > MAX_EVENT_BYTES:
        raise ValueError(f"control event of {len(body)} bytes, over {MAX_EVENT_BYTES}")
    raw = orjson.loads(body)
    if not isinstance(raw, dict):
        raise ValueError(f"control event must be a JSON object, got {json_type(raw)}")
    if "user" in raw:
        raise ValueError("a control event may not name its own user")
    return converter.structure({**raw, "user": user}, ControlEvent)


def control_stream(config: Config) -> str:
    """The environment's control stream."""
    return f"beds.{config.node.env}.control"


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
        """Call ``handler`` with every event of ``kind`` (replayed ones included)."""
        self._handlers.setdefault(kind, []).append(handler)

    async def attach(self, connection: AbstractConnection) -> None:
        """Declare the exchange and the stream, and consume from ``replay_seconds`` ago."""
        publisher = await connection.channel(publisher_confirms=True)
        await publisher.exchange_declare(self.exchange, exchange_type="topic", durable=True)
        await publisher.queue_declare(
            self.stream,
            durable=True,
            arguments={
                "x-queue-type": "stream",
                "x-max-age": f"{max(1, round(self.settings.retention_seconds))}s",
            },
        )
        await publisher.queue_bind(self.stream, self.exchange, routing_key="#")
        channel = await connection.channel(publisher_confirms=False)
        await channel.basic_qos(prefetch_count=100)  # a stream needs a prefetch
        self.joined_at = time.time()
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.settings.replay_seconds)
        old_outboxes, self._acks = (self._outbox, self._acks), Outbox(channel)  # before deliveries
        await channel.basic_consume(
            self.stream, self._on_message, arguments={"x-stream-offset": since}
        )
        for old in filter(None, old_outboxes):  # a reconnect: its channel died with it
            await old.aclose()
        self._publisher, self._channel = publisher, channel
        self._outbox = Outbox(publisher)

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
                exchange=self.exchange,
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
        """Close the channels (the stream keeps the events)."""
        for outbox in filter(None, (self._outbox, self._acks)):
            await outbox.aclose()
        self._outbox = self._acks = None
        for channel in (self._channel, self._publisher):
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
                    await channel.close()
        self._channel = self._publisher = None
