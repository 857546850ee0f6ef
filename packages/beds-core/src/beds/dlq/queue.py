"""Operate an environment's dead-letter queue ``beds.{env}.dead``: list, replay and purge.

These are the operations behind ``beds dlq`` (docs/cli.md), usable from Python too::

    async with DeadLetterQueue(config) as dlq:
        for letter in await dlq.peek(limit=20):
            print(letter.message_id, letter.why)
        result = await dlq.replay(message_id="5d0f1c8e...")

The queue is never declared here, only checked passively: a node declares the topology
(``beds run``). ``peek`` takes messages with ``basic.get`` and gives them all back with
``basic.nack(requeue=True)``, so nothing is lost, but RabbitMQ marks them redelivered.
``replay`` publishes each selected message to the events exchange with its original routing
key on a channel with publisher confirms and ``mandatory``, and acknowledges the dead letter
only after the publish is confirmed; a message no queue takes stays in the dead-letter queue.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Self

import aiormq
import attrs
from pamqp.commands import Basic

from beds.dlq.letters import DeadLetter, describe, replay_properties, with_deadline
from beds.errors import BrokerUnavailable, TransportError
from beds.transport.amqp import (
    CONNECTION_FAILURES,
    amqp_user,
    broker_index,
    connect_to,
    dead_letter_queue,
    redact,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from types import TracebackType

    from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage

    from beds.config.model import Config

__all__ = ("DeadLetterQueue", "ReplayResult", "TopologyMissing")


class TopologyMissing(TransportError):
    """The dead-letter queue or the events exchange does not exist (no node declared it yet)."""


@attrs.frozen(kw_only=True)
class ReplayResult:
    """What ``replay`` did."""

    replayed: tuple[DeadLetter, ...] = ()
    """Published to the events exchange (confirmed) and removed from the dead-letter queue."""
    unroutable: tuple[DeadLetter, ...] = ()
    """No queue took them (or RabbitMQ refused them): they stay in the dead-letter queue."""
    skipped: int = 0
    """Looked at but not selected (another message id): left in the dead-letter queue."""
    executed: tuple[DeadLetter, ...] = ()
    """Requests that ran (only their reply was lost): never replayed, left in the queue."""
    left: int = 0
    """Messages in the dead-letter queue afterwards."""


class DeadLetterQueue:
    """A connection to one environment's dead-letter queue: ``async with DeadLetterQueue(c)``.

    Args:
        config: the configuration whose brokers (``amqp.urls`` or ``amqp.url``: the first that
            answers), ``amqp.events_exchange`` and ``node.env`` select the broker, the replay
            target and the queue ``beds.{env}.dead``.
        timeout: seconds for each AMQP round trip (default ``amqp.connect_timeout``).

    Raises:
        BrokerUnavailable: on entering, RabbitMQ cannot be reached (the message shows the URL
            without its password).
        TopologyMissing: on entering, the dead-letter queue does not exist yet.
    """

    def __init__(self, config: Config, *, timeout: float | None = None) -> None:
        self.config = config
        self.queue = dead_letter_queue(config)
        self.exchange = config.amqp.events_exchange
        self.user = amqp_user(config.amqp.url)
        """Replays are published as this user (``user_id``): their origin."""
        self.timeout = config.amqp.connect_timeout if timeout is None else timeout
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._broker = 0
        """The index in ``amqp.addresses`` of the broker connected to (named in errors)."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def _where(self) -> str:
        return redact(self.config.amqp.addresses[self._broker])

    async def open(self) -> None:
        """Connect and check that the dead-letter queue exists (passively: nothing is declared).

        Raises:
            BrokerUnavailable: RabbitMQ cannot be reached.
            TopologyMissing: the dead-letter queue does not exist.
        """
        self._connection = await connect_to(self.config.amqp, name="beds-dlq")
        self._broker = broker_index(self._connection, self.config.amqp.addresses)
        try:
            with self._amqp_errors("open a channel"):
                self._channel = await self._connection.channel(
                    publisher_confirms=True, on_return_raises=True, timeout=self.timeout
                )
            await self.depth()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection; messages still held go back to the queue."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    @contextlib.contextmanager
    def _amqp_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            raise TopologyMissing(
                f"{exc.args[0] if exc.args else exc} on {self._where}: run a node of this "
                "environment first (beds run), which declares the topology"
            ) from exc
        except (*CONNECTION_FAILURES, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise BrokerUnavailable(
                f"RabbitMQ at {self._where} failed while trying to {action}: {reason}"
            ) from exc

    @property
    def channel(self) -> AbstractChannel:
        """The open channel (publisher confirms on)."""
        if self._channel is None:
            raise BrokerUnavailable(f"not connected to RabbitMQ at {self._where}")
        return self._channel

    async def depth(self) -> int:
        """Messages ready in the dead-letter queue (not counting ones someone holds).

        Raises:
            TopologyMissing: the dead-letter queue does not exist.
        """
        with self._amqp_errors(f"check the queue {self.queue}"):
            try:
                ok = await self.channel.queue_declare(
                    self.queue, passive=True, timeout=self.timeout
                )
            except aiormq.exceptions.ChannelNotFoundEntity as exc:
                raise TopologyMissing(
                    f"the dead-letter queue {self.queue} does not exist on {self._where}: "
                    "run a node of this environment first (beds run), which declares it"
                ) from exc
        return int(ok.message_count or 0)

    async def _get(self) -> DeliveredMessage | None:
        with self._amqp_errors(f"get a message from {self.queue}"):
            message = await self.channel.basic_get(self.queue, no_ack=False, timeout=self.timeout)
        return message if message.delivery_tag is not None else None

    async def _requeue(self, tags: Sequence[int]) -> None:
        with self._amqp_errors(f"requeue messages to {self.queue}"):
            for tag in tags:
                await self.channel.basic_nack(tag, multiple=False, requeue=True)

    async def peek(self, limit: int = 20) -> list[DeadLetter]:
        """Describe up to ``limit`` messages from the head of the queue without removing them.

        The messages are taken with ``basic.get`` (unacknowledged) and all given back with
        ``basic.nack(requeue=True)`` at the end: RabbitMQ puts them back at the head of the
        queue and marks them redelivered.
        """
        letters: list[DeadLetter] = []
        tags: list[int] = []
        try:
            while len(letters) < limit:
                message = await self._get()
                if message is None:
                    break
                assert message.delivery_tag is not None
                tags.append(message.delivery_tag)
                letters.append(_describe_message(message))
        finally:
            if tags and self._channel is not None and not self._channel.is_closed:
                # One nack for all of them; closing the channel would requeue them as well.
                with self._amqp_errors(f"requeue messages to {self.queue}"):
                    await self.channel.basic_nack(tags[-1], multiple=True, requeue=True)
        return letters

    async def replay(
        self,
        *,
        limit: int | None = None,
        message_id: str | None = None,
        deadline: float | None = None,
    ) -> ReplayResult:
        """Publish dead letters back to the events exchange, with their original routing keys.

        Looks at no more messages than the queue held when it started, so a replayed message
        that is dead-lettered again is not replayed twice. Each replayed message is published
        (``mandatory``, publisher-confirmed) and then acknowledged. A message that no queue
        takes, or that RabbitMQ refuses, is left in the dead-letter queue and reported, as are
        the messages not selected by ``message_id`` and the requests that ran already (only
        their reply was lost: ``DeadLetter.executed``); they are requeued at the end.

        Args:
            limit: replay at most this many messages (default: all).
            message_id: replay only messages with this ``message_id``.
            deadline: give each replayed request a new ``meta.deadline`` this many seconds from
                now (:func:`with_deadline`); by default a request keeps its own, and one whose
                deadline passed is answered ``BEDS-504`` without running.

        Raises:
            TopologyMissing: the dead-letter queue or the events exchange does not exist.
        """
        await self._check_exchange()
        budget = await self.depth()
        replayed: list[DeadLetter] = []
        unroutable: list[DeadLetter] = []
        held: list[int] = []
        executed: list[DeadLetter] = []
        skipped = 0
        try:
            for _ in range(budget):
                if limit is not None and len(replayed) >= limit:
                    break
                message = await self._get()
                if message is None:
                    break
                tag = message.delivery_tag
                assert tag is not None
                letter = _describe_message(message)
                if message_id is not None and letter.message_id != message_id:
                    held.append(tag)
                    skipped += 1
                elif letter.executed:
                    held.append(tag)
                    executed.append(letter)
                elif await self._republish(message, letter, deadline):
                    with self._amqp_errors(f"acknowledge a message of {self.queue}"):
                        await self.channel.basic_ack(tag)
                    replayed.append(letter)
                else:
                    held.append(tag)
                    unroutable.append(letter)
            # Counted while this channel still holds them: right after the requeue, RabbitMQ
            # may not count them yet.
            left = await self.depth() + len(held)
        finally:
            if held and self._channel is not None and not self._channel.is_closed:
                await self._requeue(held)
        return ReplayResult(
            replayed=tuple(replayed),
            unroutable=tuple(unroutable),
            skipped=skipped,
            executed=tuple(executed),
            left=left,
        )

    async def _check_exchange(self) -> None:
        assert self._connection is not None
        with self._amqp_errors(f"check the exchange {self.exchange}"):
            probe = await self._connection.channel(timeout=self.timeout)
            try:
                await probe.exchange_declare(self.exchange, passive=True, timeout=self.timeout)
            except aiormq.exceptions.ChannelNotFoundEntity as exc:
                raise TopologyMissing(
                    f"the events exchange {self.exchange} does not exist on {self._where}: "
                    "run a node of this environment first (beds run), which declares it"
                ) from exc
            finally:
                if not probe.is_closed:
                    await probe.close()

    async def _republish(
        self, message: DeliveredMessage, letter: DeadLetter, deadline: float | None
    ) -> bool:
        """Publish one dead letter to the events exchange; whether RabbitMQ routed and took it."""
        if not letter.routing_key:
            return False
        body = message.body if deadline is None else with_deadline(message.body, deadline)
        with self._amqp_errors(f"publish to {self.exchange}"):
            try:
                confirmation = await self.channel.basic_publish(
                    body,
                    exchange=self.exchange,
                    routing_key=letter.routing_key,
                    properties=replay_properties(message.header.properties, self.user),
                    mandatory=True,
                    timeout=self.timeout,
                )
            except aiormq.exceptions.PublishError:
                return False  # returned: no queue is bound for the routing key
        return isinstance(confirmation, Basic.Ack)

    async def purge(self) -> int:
        """Remove every ready message from the queue; return how many were removed.

        Messages another client holds unacknowledged at that moment are not removed.
        """
        with self._amqp_errors(f"purge {self.queue}"):
            ok = await self.channel.queue_purge(self.queue, timeout=self.timeout)
        return int(ok.message_count or 0)


def _describe_message(message: DeliveredMessage) -> DeadLetter:
    return describe(
        message.header.properties,
        message.body,
        routing_key=message.routing_key,
        redelivered=bool(message.redelivered),
    )
