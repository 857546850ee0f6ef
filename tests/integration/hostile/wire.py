"""Raw AMQP for the hostile suite: a caller written from docs/wire-contract.md, not BedsClient.

Also what the suite reads around a node: its environment's queues (``rabbitmqctl``), its
dead-letter queue, the rows a run stored in MariaDB, and the node's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiormq
import attrs
import orjson
import pytest
from pamqp.commands import Basic

from beds.auth import bearer
from beds.transport.frames import UNDECODABLE_HEADER, tolerate_undecodable_frames
from tests.integration.nodes import dba_connect

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, DeliveredMessage

    from tests.integration.nodes import Served, Stores

__all__ = (
    "CODE",
    "DIRECT_REPLY_TO",
    "Caller",
    "DeadLetter",
    "LogWindow",
    "RawStr",
    "dead_letters",
    "drain",
    "env_queues",
    "forget_env",
    "marked_rows",
    "raw_ping",
    "ready",
    "settled_queues",
    "vhost_of",
)

CODE = re.compile(r"^BEDS-\d{3}[A-Z]?$")
"""A catalogue code (docs/errors.md)."""
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"

# The suite reads dead letters and returned messages whose properties are not UTF-8 (it sent
# them): decode them as the node does, instead of letting pamqp close the test's connection.
tolerate_undecodable_frames()


class RawStr(str):
    """Text whose encoding is the given bytes: invalid UTF-8 in an AMQP string on the wire.

    pamqp encodes every short string, long string and table key with ``value.encode("utf-8")``;
    RabbitMQ passes the bytes through unchecked, so a sender in any language can do this.
    """

    raw: bytes

    def __new__(cls, raw: bytes) -> RawStr:
        text = super().__new__(cls, raw.decode("utf-8", "surrogateescape"))
        text.raw = raw
        return text

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw

    def __repr__(self) -> str:
        return f"RawStr({self.raw!r})"


def vhost_of(amqp_url: str) -> str:
    """The vhost of an ``amqp://`` URL (the test session's own)."""
    return amqp_url.rsplit("/", 1)[-1] or "/"


def _rabbitmqctl(*args: str) -> str:
    ctl = shutil.which("rabbitmqctl") or "rabbitmqctl"
    return subprocess.run(
        [ctl, "-q", *args], capture_output=True, text=True, timeout=60, check=True
    ).stdout


def env_queues(vhost: str, env: str) -> dict[str, tuple[int, int]]:
    """Queue name → (ready, unacknowledged) for every queue of ``env`` in ``vhost``."""
    listed = _rabbitmqctl(
        "list_queues",
        "-p",
        vhost,
        "--no-table-headers",
        "name",
        "messages_ready",
        "messages_unacknowledged",
    )
    counts: dict[str, tuple[int, int]] = {}
    for line in listed.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and env in parts[0] and parts[1].isdigit() and parts[2].isdigit():
            counts[parts[0]] = (int(parts[1]), int(parts[2]))
    return counts


async def settled_queues(
    amqp_url: str, env: str, *, empty: tuple[str, ...] = (), seconds: float = 15.0
) -> dict[str, str]:
    """Wait until the ``empty`` queues hold no ready message (asked over AMQP, which is quick)
    and no queue of ``env`` holds an unacknowledged one (``rabbitmqctl``).

    Returns:
        what is wrong when ``seconds`` ran out, by queue: unacknowledged messages, or a queue
        RabbitMQ cannot declare any more (crashed, deleted); empty when all settled.
    """
    deadline = time.monotonic() + seconds
    problems: dict[str, str] = {}
    pending = list(empty)
    connection: aiormq.abc.AbstractConnection | None = None
    try:
        while pending and time.monotonic() < deadline:
            for queue in list(pending):
                try:
                    if connection is None or connection.is_closed:
                        connection = await aiormq.connect(amqp_url)
                    channel = await connection.channel()
                    declared = await channel.queue_declare(queue, passive=True)
                    await channel.close()
                except (aiormq.exceptions.AMQPError, RuntimeError) as exc:
                    # A crashed queue closes the whole connection (INTERNAL_ERROR).
                    problems[queue] = f"gone: {exc!r}"[:300]
                    pending.remove(queue)
                    continue
                if not declared.message_count:
                    pending.remove(queue)
            if pending:
                await asyncio.sleep(0.05)
    finally:
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()
    vhost = vhost_of(amqp_url)
    while True:
        counts = await asyncio.to_thread(env_queues, vhost, env)
        left = {
            name: f"{unacked} unacknowledged" for name, (_, unacked) in counts.items() if unacked
        }
        waiting = any(waits for name, (waits, _) in counts.items() if name in pending)
        if (not left and not waiting) or time.monotonic() > deadline:
            return {**left, **problems}
        await asyncio.sleep(0.3)


async def forget_env(amqp_url: str, env: str) -> None:
    """Delete every queue and exchange of ``env`` (the session's vhost outlives one test)."""
    vhost = vhost_of(amqp_url)
    queues = await asyncio.to_thread(env_queues, vhost, env)
    exchanges = await asyncio.to_thread(
        _rabbitmqctl, "list_exchanges", "-p", vhost, "--no-table-headers", "name"
    )
    names = [*queues, *(name for name in exchanges.split() if env in name)]
    connection = await aiormq.connect(amqp_url)
    try:
        for name in names:
            try:
                if connection.is_closed:  # a crashed queue closes the connection
                    connection = await aiormq.connect(amqp_url)
                channel = await connection.channel()
                if name in queues:
                    await channel.queue_delete(name)
                else:
                    await channel.exchange_delete(name)
                await channel.close()
            except (aiormq.exceptions.AMQPError, RuntimeError):
                continue  # the session's vhost goes at the end anyway
    finally:
        with contextlib.suppress(Exception):
            await connection.close()


@attrs.define
class LogWindow:
    """What a node wrote to its log since the window opened (tests sharing one node)."""

    served: Served
    start: int = 0

    def __attrs_post_init__(self) -> None:
        self.start = self.served.log.stat().st_size

    def text(self) -> str:
        with self.served.log.open("rb") as log:
            log.seek(self.start)
            return log.read().decode("utf-8", "replace")

    def tracebacks(self) -> list[str]:
        """Each ``Traceback`` line with the two lines after it (the exception's place)."""
        lines = self.text().splitlines()
        return [
            " | ".join(lines[index : index + 3])[:300]
            for index, line in enumerate(lines)
            if "Traceback" in line
        ]


@attrs.frozen
class DeadLetter:
    """One message of the environment's dead-letter queue."""

    body: bytes
    headers: dict[str, Any]
    correlation_id: str | None

    @property
    def code(self) -> str:
        """``x-beds-error-code``, else the reason RabbitMQ dead-lettered it (``x-death``)."""
        code = self.headers.get("x-beds-error-code")
        if isinstance(code, str):
            return code
        if UNDECODABLE_HEADER in self.headers:
            # Only RabbitMQ dead-letters with the sender's properties (a node's letter carries
            # its own): ones the test sent that do not decode.
            return "x-death:undecodable"
        deaths = self.headers.get("x-death")
        if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
            return f"x-death:{deaths[0].get('reason')}"
        return "none"

    def reply(self) -> dict[str, Any] | None:
        """The undeliverable reply a ``BEDS-500R`` letter keeps (``x-beds-reply``)."""
        kept = self.headers.get("x-beds-reply")
        if not isinstance(kept, str | bytes):
            return None
        try:
            reply = orjson.loads(kept)
        except orjson.JSONDecodeError:
            return None
        return reply if isinstance(reply, dict) else None


async def drain(channel: AbstractChannel, queue: str, *, quiet: float) -> list[DeliveredMessage]:
    """Every message of ``queue`` (taken, no ack) until none arrived for ``quiet`` seconds."""
    taken: list[DeliveredMessage] = []
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < quiet:
        message = await channel.basic_get(queue, no_ack=True)
        if message.delivery_tag is not None:
            taken.append(message)
            idle_since = time.monotonic()
        else:
            await asyncio.sleep(0.05)
    return taken


async def dead_letters(channel: AbstractChannel, env: str, *, quiet: float) -> list[DeadLetter]:
    """Take every message of ``env``'s dead-letter queue."""
    taken = await drain(channel, f"beds.{env}.dead", quiet=quiet)
    return [
        DeadLetter(
            message.body,
            dict(message.header.properties.headers or {}),
            message.header.properties.correlation_id,
        )
        for message in taken
    ]


async def marked_rows(stores: Stores, prefix: str) -> list[tuple[int, str, str]]:
    """(id, author, body) of every post whose body starts with ``prefix``, read as the DBA."""
    conn = await dba_connect(stores)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(
                "SELECT id, author, body FROM spp_posts WHERE body LIKE %s", (prefix + "%",)
            )
            rows = await cursor.fetchall()
    finally:
        conn.close()
    return [(int(row[0]), str(row[1]), str(row[2])) for row in rows]


def envelope(operation: str, template: str, payload: dict[str, Any], **meta: Any) -> dict[str, Any]:
    """A request envelope, as JSON-ready data."""
    return {"operation": operation, "template": template, "payload": payload, "meta": meta}


class Caller:
    """A well-behaved raw caller: one connection, a confirm channel, an exclusive reply queue.

    Hostile parts are passed per call; replies are matched by ``correlation_id``.
    """

    def __init__(self, amqp_url: str, exchange: str, *, token: str | None = None) -> None:
        self.amqp_url = amqp_url
        self.exchange = exchange
        self.credential = {"authorization": bearer(token)} if token else {}
        """Sent with every request that does not set its own headers (writes need a member)."""
        self.connection: aiormq.abc.AbstractConnection | None = None
        self.channel: AbstractChannel | None = None
        self.reply_queue = ""
        self._waiting: dict[str, asyncio.Future[DeliveredMessage]] = {}
        self.stray: list[DeliveredMessage] = []
        """Replies nobody waited for (or a second reply to one call)."""
        self.published = 0

    async def __aenter__(self) -> Caller:
        self.connection = await aiormq.connect(self.amqp_url)
        self.channel = await self.connection.channel(publisher_confirms=True)
        declared = await self.channel.queue_declare("", exclusive=True, auto_delete=True)
        assert declared.queue is not None
        self.reply_queue = declared.queue
        await self.channel.basic_consume(self.reply_queue, self._on_reply, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.connection is not None:
            await self.connection.close()

    async def _on_reply(self, message: DeliveredMessage) -> None:
        waiter = self._waiting.pop(message.header.properties.correlation_id or "", None)
        if waiter is None or waiter.done():
            self.stray.append(message)
        else:
            waiter.set_result(message)

    async def publish(
        self,
        body: bytes | dict[str, Any],
        routing_key: str,
        *,
        exchange: str | None = None,
        reply_to: str | None = "",
        correlation_id: str | None = None,
        **properties: Any,
    ) -> str:
        """Publish a request; ``reply_to=""`` means this caller's queue. Returns the
        correlation id (a fresh one unless given)."""
        assert self.channel is not None
        correlation = correlation_id if correlation_id is not None else uuid.uuid4().hex
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        properties.setdefault("content_type", "application/json")
        properties.setdefault("message_id", uuid.uuid4().hex)
        if self.credential:
            properties["headers"] = {**self.credential, **(properties.get("headers") or {})}
        self.published += 1
        await self.channel.basic_publish(
            raw,
            exchange=self.exchange if exchange is None else exchange,
            routing_key=routing_key,
            properties=Basic.Properties(
                correlation_id=correlation,
                reply_to=self.reply_queue if reply_to == "" else reply_to,
                **properties,
            ),
        )
        return correlation

    def expect(self, correlation_id: str) -> asyncio.Future[DeliveredMessage]:
        """A future for the reply to ``correlation_id`` (call before publishing)."""
        assert self.connection is not None
        waiter: asyncio.Future[DeliveredMessage] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = waiter
        return waiter

    async def call(
        self, body: bytes | dict[str, Any], routing_key: str, *, timeout: float = 10.0, **kw: Any
    ) -> dict[str, Any]:
        """Publish and wait for the reply's JSON body."""
        correlation = kw.pop("correlation_id", None) or uuid.uuid4().hex
        waiter = self.expect(correlation)
        await self.publish(body, routing_key, correlation_id=correlation, **kw)
        message = await asyncio.wait_for(waiter, timeout)
        answer: dict[str, Any] = orjson.loads(message.body)
        return answer


async def raw_ping(amqp_url: str, exchange: str, *, timeout: float = 1.0) -> float:
    """Seconds a ping took, over direct reply-to as the contract describes (raises on timeout)."""
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        got: asyncio.Future[DeliveredMessage] = asyncio.get_running_loop().create_future()

        def on_reply(message: DeliveredMessage) -> None:
            if not got.done():
                got.set_result(message)

        await channel.basic_consume(DIRECT_REPLY_TO, _async(on_reply), no_ack=True)
        started = time.monotonic()
        await channel.basic_publish(
            orjson.dumps(envelope("ping", "beds", {})),
            exchange=exchange,
            routing_key="beds.read",
            properties=Basic.Properties(
                content_type="application/json",
                correlation_id="ping",
                reply_to=DIRECT_REPLY_TO,
            ),
        )
        message = await asyncio.wait_for(got, timeout)
        elapsed = time.monotonic() - started
        answer = orjson.loads(message.body)
        assert answer["ok"], answer
        assert answer["data"] == {"pong": answer["meta"]["node"]}, answer
        return elapsed
    finally:
        with contextlib.suppress(Exception):
            await connection.close()


def _async(function: Callable[[DeliveredMessage], None]) -> Any:
    async def callback(message: DeliveredMessage) -> None:
        function(message)

    return callback


async def ready(served: Served, amqp_url: str, seconds: float = 30) -> None:
    """Wait until the node answers a raw ping (its topology is declared, its brokers consume)."""
    deadline = time.monotonic() + seconds
    while True:
        if served.process.poll() is not None:
            pytest.fail(f"beds run exited early:\n{served.output()}", pytrace=False)
        with contextlib.suppress(Exception):
            await raw_ping(amqp_url, f"beds.events.{served.env}", timeout=1.0)
            return
        if time.monotonic() > deadline:
            pytest.fail(f"beds run was not ready in {seconds} s:\n{served.output()}")
        await asyncio.sleep(0.2)
