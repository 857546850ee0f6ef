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
import datetime as dt
import time
from typing import TYPE_CHECKING, Any, Literal, Self

import aiormq
import attrs
import orjson
from pamqp.commands import Basic

from beds.errors import BrokerUnavailable, TransportError
from beds.transport.amqp import connect, dead_letter_queue, redact

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from types import TracebackType

    from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage

    from beds.config.model import Config

__all__ = (
    "DeadLetter",
    "DeadLetterQueue",
    "ReplayResult",
    "TopologyMissing",
    "describe",
    "format_table",
    "preview",
    "replay_properties",
    "with_deadline",
)

PREVIEW_CHARS = 80
"""How much of a body ``list`` shows."""
REPLAYS_HEADER = "x-beds-replays"
"""How many times a message was replayed from a dead-letter queue (set by ``replay``)."""
_DEATH_HEADERS = ("x-death", "x-first-death-", "x-last-death-")


class TopologyMissing(TransportError):
    """The dead-letter queue or the events exchange does not exist (no node declared it yet)."""


@attrs.frozen(kw_only=True)
class DeadLetter:
    """One message of a dead-letter queue, described for an operator."""

    message_id: str | None
    correlation_id: str | None
    routing_key: str
    """The key it was published with ("" when unknown); replay publishes with it."""
    source: Literal["beds", "rabbitmq", "unknown"]
    """Who dead-lettered it: a broker (``x-beds-*`` headers) or RabbitMQ (``x-death``)."""
    reason: str
    """The error code (``BEDS-400``) or RabbitMQ's reason (``expired``, ``rejected``…)."""
    detail: str = ""
    """The broker's explanation (``x-beds-reason``)."""
    queue: str = ""
    """The queue it died in."""
    count: int = 1
    """How many times it died there for this reason (``x-death`` count)."""
    node: str = ""
    """The node that dead-lettered it (``x-beds-node``)."""
    dead_lettered_at: dt.datetime | None = None
    body_size: int = 0
    body_preview: str = ""
    reply_to: str | None = None
    content_type: str | None = None
    redelivered: bool = False
    """RabbitMQ delivered it before (someone listed or replayed it without taking it)."""
    replays: int = 0
    """How many times it was replayed before and came back."""
    executed: bool = False
    """The request ran and only its reply was lost (``BEDS-500R``, ``x-beds-executed``): the
    outcome is in ``reply``; replaying it would run the write again, so replay leaves it."""
    reply: str = ""
    """The undelivered reply (``x-beds-reply``), for an executed request."""

    @property
    def why(self) -> str:
        """One line: the reason, where it happened and how often."""
        if self.source == "beds":
            text = f"{self.reason} {self.detail}".strip()
            return f"{text} (in {self.queue})" if self.queue else text
        if self.source == "rabbitmq":
            where = f" in {self.queue}" if self.queue else ""
            return f"{self.reason}{where} ({self.count}x)"
        return "unknown (no x-beds-* or x-death headers)"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``beds dlq list --json``)."""
        return {
            "message_id": self.message_id,
            "correlation_id": self.correlation_id,
            "routing_key": self.routing_key,
            "source": self.source,
            "reason": self.reason,
            "detail": self.detail,
            "queue": self.queue,
            "count": self.count,
            "node": self.node,
            "dead_lettered_at": _iso(self.dead_lettered_at),
            "body_size": self.body_size,
            "body_preview": self.body_preview,
            "reply_to": self.reply_to,
            "content_type": self.content_type,
            "redelivered": self.redelivered,
            "replays": self.replays,
            "executed": self.executed,
            "reply": self.reply,
        }


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


def _text(value: Any) -> str:
    """A header value as text (pamqp gives bytes for strings that are not UTF-8)."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        try:
            return dt.datetime.fromtimestamp(value, tz=dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None  # not a Unix time in seconds (milliseconds, garbage): unknown
    return None


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _escape(char: str) -> str:
    return char if char.isprintable() else char.encode("unicode_escape").decode("ascii")


def _one_line(text: str) -> str:
    """``text`` with every character that is not printable escaped (a header, an id)."""
    return "".join(map(_escape, text))


def preview(body: bytes, width: int = PREVIEW_CHARS) -> str:
    r"""The start of ``body`` as one printable line of at most ``width`` characters.

    Bytes that are not UTF-8 show as U+FFFD; control characters are escaped (``\n``,
    ``\x00``); a cut is marked with ``…``.

    Raises:
        ValueError: ``width`` is less than 1.
    """
    if width < 1:
        raise ValueError(f"width must be at least 1, not {width}")
    raw = body[: width * 4]  # enough bytes for ``width`` characters
    shown = ""
    for char in raw.decode("utf-8", errors="replace"):
        piece = _escape(char)
        if len(shown) + len(piece) > width:
            return shown[: width - 1] + "…"
        shown += piece
    return shown[: width - 1] + "…" if len(raw) < len(body) else shown


def _first_death(headers: Mapping[str, Any]) -> Mapping[str, Any] | None:
    deaths = headers.get("x-death")
    if isinstance(deaths, list | tuple) and deaths and isinstance(deaths[0], dict):
        return deaths[0]  # RabbitMQ keeps the most recent death first
    return None


def describe(
    properties: Basic.Properties,
    body: bytes,
    *,
    routing_key: str | None = None,
    redelivered: bool = False,
) -> DeadLetter:
    """Describe a dead-lettered message from its properties and body.

    The reason comes from the broker's ``x-beds-*`` headers if present, else from RabbitMQ's
    ``x-death`` header (its most recent entry). The routing key is ``x-beds-routing-key``, else
    the first of the ``x-death`` entry's ``routing-keys``, else ``routing_key`` (the key the
    message reached the dead-letter queue with). The time is ``x-beds-dead-lettered-at`` or the
    ``x-death`` time, else the message's ``timestamp`` property.
    """
    headers: Mapping[str, Any] = properties.headers or {}
    death = _first_death(headers)
    key = _text(headers.get("x-beds-routing-key"))
    if not key and death is not None:
        keys = death.get("routing-keys")
        if isinstance(keys, list | tuple) and keys:
            key = _text(keys[0])
    key = key or routing_key or ""
    common: dict[str, Any] = {
        "message_id": properties.message_id,
        "correlation_id": properties.correlation_id,
        "routing_key": key,
        "body_size": len(body),
        "body_preview": preview(body),
        "reply_to": properties.reply_to,
        "content_type": properties.content_type,
        "redelivered": redelivered,
        "replays": _int(headers.get(REPLAYS_HEADER)),
        "executed": headers.get("x-beds-executed") is True,
        "reply": _text(headers.get("x-beds-reply")),
    }
    when = _time(properties.timestamp)
    if "x-beds-error-code" in headers:
        return DeadLetter(
            source="beds",
            reason=_text(headers["x-beds-error-code"]),
            detail=_text(headers.get("x-beds-reason")),
            queue=_text(headers.get("x-beds-queue")),
            node=_text(headers.get("x-beds-node")),
            dead_lettered_at=_time(headers.get("x-beds-dead-lettered-at")) or when,
            **common,
        )
    if death is not None:
        return DeadLetter(
            source="rabbitmq",
            reason=_text(death.get("reason")) or "unknown",
            queue=_text(death.get("queue")),
            count=_int(death.get("count"), 1),
            dead_lettered_at=_time(death.get("time")) or when,
            **common,
        )
    return DeadLetter(source="unknown", reason="unknown", dead_lettered_at=when, **common)


def with_deadline(body: bytes, seconds: float) -> bytes:
    """The request ``body`` with ``meta.deadline`` set ``seconds`` from now.

    A body that is not a JSON object with a ``meta`` object is returned unchanged: the broker
    answers (or dead-letters) it as it would have.
    """
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(request, dict) or not isinstance(request.get("meta"), dict):
        return body
    request["meta"]["deadline"] = time.time() + seconds
    return orjson.dumps(request)


def replay_properties(properties: Basic.Properties) -> Basic.Properties:
    """The properties a replayed message is published with.

    The original properties without the dead-letter headers (``x-death``,
    ``x-first-death-*``, ``x-last-death-*``, ``x-beds-*``, so a replayed request starts a fresh
    delivery count) and without ``expiration`` (RabbitMQ removes it when it dead-letters an
    expired message, and a replay must not expire on the way) or ``user_id`` (RabbitMQ checks
    it against the replaying user). ``x-beds-replays`` counts the replays.
    """
    headers = {
        name: value
        for name, value in (properties.headers or {}).items()
        if not name.startswith("x-beds-") and not name.startswith(_DEATH_HEADERS)
    }
    headers[REPLAYS_HEADER] = _int((properties.headers or {}).get(REPLAYS_HEADER)) + 1
    return Basic.Properties(
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        headers=headers,
        delivery_mode=properties.delivery_mode,
        priority=properties.priority,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        message_id=properties.message_id,
        timestamp=properties.timestamp,
        message_type=properties.message_type,
        app_id=properties.app_id,
    )


_COLUMNS: tuple[tuple[str, Callable[[DeadLetter], str]], ...] = (
    ("MESSAGE ID", lambda d: d.message_id or "-"),
    ("CORRELATION ID", lambda d: d.correlation_id or "-"),
    ("ROUTING KEY", lambda d: d.routing_key or "-"),
    ("DEAD SINCE (UTC)", lambda d: _iso(d.dead_lettered_at) or "-"),
    ("SIZE", lambda d: str(d.body_size)),
    ("WHY", lambda d: d.why),
    ("BODY", lambda d: d.body_preview),
)


def format_table(letters: Sequence[DeadLetter]) -> str:
    """A text table of ``letters`` (one row each), for ``beds dlq list``.

    Every cell is one printable line: what a message carries cannot break the table or send
    control sequences to the operator's terminal.
    """
    rows = [[_one_line(cell(letter)) for _, cell in _COLUMNS] for letter in letters]
    widths = [
        max([len(title), *(len(row[index]) for row in rows)])
        for index, (title, _) in enumerate(_COLUMNS)
    ]
    lines = []
    for cells in [[title for title, _ in _COLUMNS], *rows]:
        padded = [text.ljust(width) for text, width in zip(cells[:-1], widths, strict=False)]
        lines.append("  ".join([*padded, cells[-1]]).rstrip())
    return "\n".join(lines)


class DeadLetterQueue:
    """A connection to one environment's dead-letter queue: ``async with DeadLetterQueue(c)``.

    Args:
        config: the configuration whose ``amqp.url``, ``amqp.events_exchange`` and ``node.env``
            select the broker, the replay target and the queue ``beds.{env}.dead``.
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
        self.timeout = config.amqp.connect_timeout if timeout is None else timeout
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None

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
        return redact(self.config.amqp.url)

    async def open(self) -> None:
        """Connect and check that the dead-letter queue exists (passively: nothing is declared).

        Raises:
            BrokerUnavailable: RabbitMQ cannot be reached.
            TopologyMissing: the dead-letter queue does not exist.
        """
        self._connection = await connect(
            self.config.amqp.url, timeout=self.config.amqp.connect_timeout, name="beds-dlq"
        )
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
        except (
            aiormq.exceptions.AMQPError,
            aiormq.exceptions.ChannelInvalidStateError,
            ConnectionError,
            TimeoutError,
        ) as exc:
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
                    properties=replay_properties(message.header.properties),
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
