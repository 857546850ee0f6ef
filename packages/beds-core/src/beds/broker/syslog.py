"""A syslog broker: forwards the logs exchange's events to a syslog receiver (RFC 5424).

A node runs it for ``type = "syslog"`` brokers (docs/telemetry.md, "Syslog"): its queue is
bound to the logs exchange (``log.#``), so it gets a copy of every batch of lineage events and
audit records. Each batch is decoded as the logs broker decodes it
(:func:`beds.lineage.decode_events`), each event mapped to a severity
(:func:`beds.broker.rfc5424.severity_of`), and those at or above ``syslog.level`` are sent to
``syslog.target``, one RFC 5424 message each: over UDP one datagram each, over TCP with
octet-counting framing (RFC 6587).

The batch is acknowledged once its messages are sent, or at once when none is at the level. A
receiver that cannot take them (TCP refused or dropped, a host that does not resolve) is tried
again with back-off, for up to the handler budget; then the batch goes back to the queue, so
RabbitMQ holds what is not sent (the prefetch bounds what this node holds), and nothing is lost
while the receiver is away. After an outage a batch may be sent twice: plain syslog has no
acknowledgement, so a batch written as the connection broke is sent again. UDP is sent and
forgotten: a receiver that is down loses those datagrams (syslog over UDP promises no more).

Batches are believed from ``lineage.trusted_users`` only (others are dead-lettered with
``BEDS-403O``, as the logs broker does), and one that does not decode is dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, Final, Protocol

from loguru import logger

from beds.broker.batches import BatchPool
from beds.broker.rfc5424 import SEVERITIES, Rfc5424, at_level
from beds.config.model import syslog_endpoint
from beds.errors import MalformedRequest
from beds.lineage import decode_events

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aiormq.abc import DeliveredMessage

    from beds.config.model import SyslogSettings
    from beds.errors import RequestError

__all__ = (
    "SyslogPool",
    "SyslogSender",
    "SyslogUnavailable",
    "TcpSender",
    "UdpSender",
    "sender_for",
)

_FIRST_RETRY: Final = 0.1
_LAST_RETRY: Final = 5.0
"""Seconds between two connection attempts: from the first, doubling up to the last."""
_CONNECT_TIMEOUT: Final = 5.0


class SyslogUnavailable(ConnectionError):
    """The syslog receiver did not take the messages in time."""


class SyslogSender(Protocol):
    """Sends formatted messages to one receiver."""

    target: str

    async def send(self, messages: Sequence[bytes], within: float) -> None:
        """Send ``messages`` in order, within ``within`` seconds.

        Raises:
            SyslogUnavailable: the receiver cannot be reached (yet).
        """

    async def aclose(self) -> None:
        """Close the connection (a later :meth:`send` opens one again)."""


class _Backoff:
    """When to try the receiver again, and one warning per outage."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.next_try = 0.0
        self.delay = _FIRST_RETRY
        self.down = False

    def failed(self, exc: BaseException) -> None:
        self.next_try = time.monotonic() + self.delay
        self.delay = min(self.delay * 2, _LAST_RETRY)
        if not self.down:
            logger.warning(
                "syslog receiver {} cannot be reached ({}); holding events and trying again",
                self.target,
                type(exc).__name__ if not str(exc) else exc,
            )
        self.down = True

    def succeeded(self) -> None:
        if self.down:
            logger.info("syslog receiver {} reached again", self.target)
        self.down, self.delay, self.next_try = False, _FIRST_RETRY, 0.0

    async def wait(self, deadline: float) -> None:
        """Sleep until the next attempt is due.

        Raises:
            SyslogUnavailable: it is not due before ``deadline``.
        """
        now = time.monotonic()
        if self.next_try >= deadline:
            # Hold the batch until its deadline rather than hand it back at once: RabbitMQ would
            # deliver it again at once, round and round, while the receiver is away.
            await asyncio.sleep(max(deadline - now, 0.0))
            raise SyslogUnavailable(f"syslog receiver {self.target} cannot be reached")
        if self.next_try > now:
            await asyncio.sleep(self.next_try - now)


class TcpSender:
    """RFC 5424 over TCP, octet-counting framing (RFC 6587): ``LENGTH SP MESSAGE`` each."""

    def __init__(self, host: str, port: int, *, target: str = "") -> None:
        self.host, self.port = host, port
        self.target = target or f"tcp://{host}:{port}"
        self._backoff = _Backoff(self.target)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        """One batch at a time on the connection, and one connection attempt at a time."""

    async def send(self, messages: Sequence[bytes], within: float) -> None:
        """Send ``messages`` in order, within ``within`` seconds (see :class:`SyslogSender`).

        Raises:
            SyslogUnavailable: no connection could be made, or it did not take them in time.
        """
        frames = b"".join(b"%d %s" % (len(message), message) for message in messages)
        deadline = time.monotonic() + within
        try:
            async with asyncio.timeout(within), self._lock:
                await self._send(frames, deadline)
        except TimeoutError:
            raise SyslogUnavailable(
                f"syslog receiver {self.target} did not take the events in time"
            ) from None

    async def _send(self, frames: bytes, deadline: float) -> None:
        while True:
            writer = await self._connected(deadline)
            writer.write(frames)  # whole frames: the stream never holds half of one
            try:
                await writer.drain()
            except OSError as exc:
                self._drop(exc)
                continue
            except asyncio.CancelledError:
                # Cut short (the deadline): the frames may be half sent. The next batch goes on
                # a fresh connection, and this one is sent again whole (a duplicate, not a loss).
                self._drop(TimeoutError("the receiver did not take the events in time"))
                raise
            return

    async def _connected(self, deadline: float) -> asyncio.StreamWriter:
        """The open connection, or a new one (after the back-off)."""
        current, open_writer = self._reader, self._writer
        if current is not None and open_writer is not None:
            if not open_writer.is_closing() and not current.at_eof():
                return open_writer
            self._drop(ConnectionResetError("the receiver closed the connection"))
        while True:
            await self._backoff.wait(deadline)
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), _CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError) as exc:
                self._backoff.failed(exc)
                continue
            self._backoff.succeeded()
            self._reader, self._writer = reader, writer
            return writer

    def _drop(self, exc: BaseException) -> None:
        """Forget the connection (its unsent bytes too) and wait before the next one."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.transport.abort()
        self._backoff.failed(exc)

    async def aclose(self) -> None:
        """Close the connection (a later :meth:`send` opens one again)."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, target: str) -> None:
        self.target = target
        self.warned = 0.0

    def error_received(self, exc: Exception) -> None:
        # An ICMP "port unreachable" for an earlier datagram: UDP loses it; say so now and then.
        now = time.monotonic()
        if now - self.warned > 60:
            self.warned = now
            logger.warning("syslog receiver {} refused a datagram ({})", self.target, exc)


class UdpSender:
    """RFC 5424 over UDP (RFC 5426): one datagram per message, sent and forgotten."""

    def __init__(self, host: str, port: int, *, target: str = "") -> None:
        self.host, self.port = host, port
        self.target = target or f"udp://{host}:{port}"
        self._backoff = _Backoff(self.target)
        self._transport: asyncio.DatagramTransport | None = None

    async def send(self, messages: Sequence[bytes], within: float) -> None:
        """Send one datagram per message (see :class:`SyslogSender`).

        Raises:
            SyslogUnavailable: no socket could be made for the target within ``within``.
        """
        transport = await self._open(time.monotonic() + within)
        for message in messages:
            transport.sendto(message)

    async def _open(self, deadline: float) -> asyncio.DatagramTransport:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            return transport
        while True:
            await self._backoff.wait(deadline)
            loop = asyncio.get_running_loop()
            try:
                opened, _ = await asyncio.wait_for(
                    loop.create_datagram_endpoint(
                        lambda: _Datagrams(self.target), remote_addr=(self.host, self.port)
                    ),
                    max(deadline - time.monotonic(), 0.0),
                )
            except (OSError, TimeoutError) as exc:  # the host does not resolve, no route…
                self._backoff.failed(exc)
                continue
            self._backoff.succeeded()
            self._transport = opened
            return opened

    async def aclose(self) -> None:
        """Close the socket (a later :meth:`send` opens one again)."""
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()


def sender_for(target: str) -> SyslogSender:
    """The sender of a ``syslog.target``.

    Raises:
        ValueError: it is not ``udp://host:port`` or ``tcp://host:port``.
    """
    endpoint = syslog_endpoint(target)
    if endpoint is None:
        raise ValueError(f"not a syslog target: {target!r} (key syslog.target)")
    transport, host, port = endpoint
    kind = UdpSender if transport == "udp" else TcpSender
    return kind(host, port, target=target)


class SyslogPool(BatchPool):
    """A broker pool whose messages are event batches to forward to syslog, not requests."""

    def __init__(
        self,
        *args: Any,
        syslog: SyslogSettings,
        trusted_users: tuple[str, ...] = (),
        sender: SyslogSender | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.sender = sender or sender_for(syslog.target)
        self.formatter = Rfc5424.from_settings(syslog)
        self.threshold = SEVERITIES[syslog.level]
        """The greatest severity number forwarded (``syslog.level``)."""
        self.trusted_users = frozenset(trusted_users)
        """AMQP users whose batches are forwarded; empty: any user RabbitMQ vouched for."""
        self.forwarded = 0
        """Events sent to the receiver so far."""
        self.below_level = 0
        """Events not sent, being less severe than ``syslog.level``."""

    async def stop(self, drain_seconds: float) -> None:
        """Stop as every pool does, then close the connection to the receiver."""
        await super().stop(drain_seconds)
        await self.sender.aclose()

    async def _handle(self, message: DeliveredMessage) -> RequestError | None:
        """Send the batch's events at the level; what refused it (``None``: sent or requeued)."""
        try:
            events = decode_events(message.body)
        except ValueError as exc:
            return MalformedRequest(str(exc))
        lines = [self.formatter.format(e, s) for e, s in at_level(events, self.threshold)]
        if lines:
            try:
                await self.sender.send(lines, self.handler_budget)
            except SyslogUnavailable:
                await self.settle.requeue(message)  # RabbitMQ keeps it until the receiver is back
                return None
        self.forwarded += len(lines)
        self.below_level += len(events) - len(lines)
        return None
