"""RabbitMQ connections and the BEDS topology (exchanges, queues, bindings, dead letters)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

import aiormq
from yarl import URL

from beds.errors import BrokerUnavailable
from beds.transport.frames import tolerate_undecodable_frames
from beds.transport.tls import amqp_context, handshake_problem

if TYPE_CHECKING:
    import ssl
    from collections.abc import Sequence

    from aiormq.abc import AbstractChannel, AbstractConnection

    from beds.config.model import AmqpSettings, Config

__all__ = (
    "AMQP_FAILURES",
    "CONNECTION_FAILURES",
    "amqp_user",
    "broker_index",
    "connect",
    "connect_first",
    "connect_to",
    "dead_letter_queue",
    "declare_topology",
    "redact",
)

CONNECTION_FAILURES: Final = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
)
"""What talking to RabbitMQ may raise when the connection, a channel or the broker fails: the
one list the rest of BEDS catches (the AMQP exception boundary)."""

AMQP_FAILURES: Final = (*CONNECTION_FAILURES, ValueError)
"""What publishing or settling on a channel may raise: a failure of RabbitMQ, or properties AMQP
cannot carry (``ValueError`` from the outbox)."""


def redact(url: str) -> str:
    """Return ``url`` without its password, for logs and messages."""
    parsed = URL(url)
    return str(parsed.with_password("***")) if parsed.password else url


def amqp_user(url: str) -> str:
    """The user an AMQP URL logs in as (RabbitMQ checks ``user_id`` properties against it)."""
    return URL(url).user or "guest"


async def connect(
    url: str, *, timeout: float = 5.0, name: str = "beds", context: ssl.SSLContext | None = None
) -> AbstractConnection:
    """Open an AMQP connection (over TLS with an ``amqps://`` URL and ``context``).

    Raises:
        BrokerUnavailable: RabbitMQ cannot be reached, refused the login, or the TLS handshake
            failed (the message says why, and names the URL without its password).
    """
    tolerate_undecodable_frames()  # one hostile message must not close the connection
    try:
        target = URL(url).update_query(name=name)
    except ValueError:  # not echoed: the URL and the parser's words may hold a password
        raise BrokerUnavailable("the AMQP URL is malformed") from None
    try:
        async with asyncio.timeout(timeout):
            return await aiormq.connect(target, context=context)
    except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as exc:
        reason = handshake_problem(exc) or (
            type(exc).__name__ if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
        )
        raise BrokerUnavailable(f"RabbitMQ at {redact(url)} is not reachable: {reason}") from exc


async def connect_first(
    urls: Sequence[str],
    *,
    start: int = 0,
    timeout: float = 5.0,
    name: str = "beds",
    context: ssl.SSLContext | None = None,
) -> tuple[AbstractConnection, int]:
    """Connect to the first of ``urls`` that answers, trying them in turn from ``urls[start]``.

    ``start`` wraps around, so a caller that lost the broker at index ``i`` passes ``i + 1``:
    the nodes of a cluster are tried in rotation, the one just lost last. Each URL gets the
    whole ``timeout``.

    Returns:
        The connection and the index in ``urls`` of the broker it is to.

    Raises:
        BrokerUnavailable: no URL answered (or ``urls`` is empty); the message names every URL,
            without its password, with why it failed.
    """
    if not urls:
        raise BrokerUnavailable("no RabbitMQ URL to connect to")
    problems: list[str] = []
    for step in range(len(urls)):
        index = (start + step) % len(urls)
        try:
            connection = await connect(urls[index], timeout=timeout, name=name, context=context)
        except BrokerUnavailable as exc:
            if len(urls) == 1:
                raise
            problems.append(str(exc))
            continue
        return connection, index
    raise BrokerUnavailable(
        f"none of the {len(urls)} RabbitMQ brokers is reachable: " + "; ".join(problems)
    )


def broker_index(connection: AbstractConnection, urls: Sequence[str]) -> int:
    """Which of ``urls`` ``connection`` is to (same host and port); 0 when none matches."""
    target = URL(str(getattr(connection, "url", "")))
    for index, url in enumerate(urls):
        candidate = URL(url)
        port = candidate.port or (5671 if candidate.scheme == "amqps" else 5672)
        if (candidate.host or "").lower() == (target.host or "").lower() and port == target.port:
            return index
    return 0


async def connect_to(
    settings: AmqpSettings, *, name: str = "beds", start: int = 0
) -> AbstractConnection:
    """Open the connection ``[amqp]`` describes: its brokers, timeout and TLS (``[amqp.tls]``).

    The first of ``settings.addresses`` that answers, tried from index ``start``.

    Raises:
        ConfigError: a TLS file is not usable (found before connecting).
        BrokerUnavailable: as :func:`connect_first`.
    """
    context = amqp_context(settings)
    connection, _ = await connect_first(
        settings.addresses,
        start=start,
        timeout=settings.connect_timeout,
        name=name,
        context=context,
    )
    return connection


def dead_letter_queue(config: Config) -> str:
    """The environment's dead-letter queue."""
    return f"beds.{config.node.env}.dead"


async def declare_topology(channel: AbstractChannel, config: Config) -> dict[str, str]:
    """Declare the exchanges, the dead-letter queue and this role's broker queues with bindings.

    Declarations are idempotent, so every node of every role declares what it uses, and the
    queues of every role's ``logs`` brokers, which keep what the node publishes on the logs
    exchange until a logs broker stores it.

    Returns:
        broker name → queue name.
    """
    amqp = config.amqp
    for exchange in (amqp.events_exchange, amqp.logs_exchange, amqp.dead_letter_exchange):
        await channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    queue_args: dict[str, Any] = {"x-queue-type": amqp.queue_type}
    dead = dead_letter_queue(config)
    await channel.queue_declare(dead, durable=True, arguments=queue_args)
    await channel.queue_bind(dead, amqp.dead_letter_exchange, routing_key="#")
    # Messages that expire or are rejected in a broker queue go to the dead-letter exchange.
    broker_args = {**queue_args, "x-dead-letter-exchange": amqp.dead_letter_exchange}
    if amqp.queue_type == "quorum":
        # Quorum queues count deliveries; past the limit RabbitMQ dead-letters the message.
        broker_args["x-delivery-limit"] = config.reliability.max_deliveries
    queues: dict[str, str] = {}
    role = config.node.role
    for other, role_settings in config.roles.items():
        for broker, settings in role_settings.brokers.items():
            # This role's queues, and every role's logs queues: lineage events and audit
            # records published before any admin node ever started wait there, not vanish.
            if (other != role and settings.type != "logs") or not settings.consumes:
                continue  # a tickets broker has no queue
            queue = config.queue_name(broker, other)
            await channel.queue_declare(queue, durable=True, arguments=broker_args)
            # Request brokers read the events exchange; logs and syslog brokers the logs exchange.
            exchange = amqp.events_exchange if settings.type == "requests" else amqp.logs_exchange
            for binding in settings.bindings:
                await channel.queue_bind(queue, exchange, routing_key=binding)
            if other == role:
                queues[broker] = queue
    return queues
