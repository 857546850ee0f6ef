"""The edge's lineage: one ``http`` event per HTTP request it forwarded, the root of its tree.

Every BEDS request the edge sends for an HTTP request has ``meta.parent_id`` = that HTTP
request's event id (:meth:`beds_http.trace.TraceContext.parent_event`). When the HTTP request
is answered, the edge records the event with that id (:func:`http_event`): method, route
template (``/v1/spew_post/{query}`` as generated, never the raw URL or its query values),
status, problem code, duration, and in ``data`` the W3C trace id and the principal's handle
once a node accepted the caller's token. Never a token, a body or a query value. So ``beds
lineage`` prints one tree: the HTTP request, the AMQP requests below it, their database calls
(the procedure or view each ran) below those.

Publishing is the nodes' own: a :class:`~beds.transport.events.EventPublisher` buffers the
events and publishes them in confirmed batches (``log.events``) on the logs exchange as the
edge's AMQP user (``user_id``: the logs broker believes batches from ``lineage.trusted_users``
only, so name the edge's user there). Recording appends to a buffer and never waits, so a
response is never delayed; the publisher's own connection is opened and reopened in the
background (:meth:`EdgeLineage.start`), batches RabbitMQ does not take are retried, counted
(``beds_http_lineage_failures_total``) and logged once a minute, and a request is never failed
by its lineage. A request the edge refused itself sent nothing to BEDS and leaves no event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, Protocol

from loguru import logger

from beds.lineage import Event
from beds.transport.amqp import CONNECTION_FAILURES, amqp_user, connect_to

if TYPE_CHECKING:
    from aiormq.abc import AbstractConnection

    from beds.config.model import Config
    from beds.transport.events import EventPublisher
    from beds_http.trace import TraceContext

__all__ = ("EdgeLineage", "EventEmitter", "http_event")

_WARN_EVERY = 60.0
"""Seconds between two warnings that events could not be recorded."""
_ATTACH_CHECK = 1.0
"""Seconds between two checks that the publishing channel is still open."""


class EventEmitter(Protocol):
    """Where events go (an :class:`~beds.transport.events.EventPublisher`, or a test's list)."""

    def emit(self, event: Event) -> None:
        """Queue one event; never blocks."""


def http_event(
    *,
    event_id: str,
    node: str,
    env: str,
    trace: TraceContext,
    method: str,
    route: str,
    status: int,
    code: str,
    at: float,
    ms: float,
    principal: str | None,
) -> Event:
    """The lineage event of one forwarded HTTP request (see the module docstring)."""
    data: dict[str, Any] = {"trace_id": trace.trace_id}
    if principal:
        data["principal"] = principal
    return Event(
        event_id=event_id,
        kind="http",
        node=node,
        env=env,
        at=at,
        ms=round(ms, 3),
        operation=method,
        message=route,
        status=status,
        code=code,
        data=data,
    )


class EdgeLineage:
    """Records the ``http`` events of one edge process and publishes them (module docstring).

    Args:
        config: the BEDS configuration (``[amqp]``, ``[lineage]``, ``node.env``).
        origin: the edge's name: the ``node`` of its events and the first part of their ids.
    """

    def __init__(self, config: Config, origin: str) -> None:
        self.config = config
        self.origin = origin
        self.env = config.node.env
        self.sink: EventEmitter | None = None
        """Where events go; ``None``: lineage off (or not started), nothing is recorded."""
        self.recorded = 0
        self.failed = 0
        """Events that could not be recorded (a bug, logged); the request was answered."""
        self._publisher: EventPublisher | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._connection: AbstractConnection | None = None
        self._warned_at = -_WARN_EVERY

    @property
    def published(self) -> int:
        """Events RabbitMQ confirmed."""
        return self._publisher.published if self._publisher is not None else 0

    @property
    def dropped(self) -> int:
        """Events dropped because the buffer outgrew its bound while RabbitMQ was away."""
        return self._publisher.dropped if self._publisher is not None else 0

    @property
    def failures(self) -> int:
        """Batches RabbitMQ did not take, plus events that could not be recorded."""
        return self.failed + (self._publisher.failures if self._publisher is not None else 0)

    @property
    def waiting(self) -> int:
        """Events buffered, not yet published."""
        return self._publisher.waiting if self._publisher is not None else 0

    def record(
        self,
        trace: TraceContext,
        *,
        method: str,
        route: str,
        status: int,
        code: str,
        at: float,
        ms: float,
        principal: str | None,
    ) -> None:
        """Queue the event of one forwarded HTTP request; never raises, never waits."""
        sink = self.sink
        if sink is None:
            return
        try:
            sink.emit(
                http_event(
                    event_id=trace.parent_event(self.origin, self.env),
                    node=self.origin,
                    env=self.env,
                    trace=trace,
                    method=method,
                    route=route,
                    status=status,
                    code=code,
                    at=at,
                    ms=ms,
                    principal=principal,
                )
            )
            self.recorded += 1
        except Exception as exc:  # lineage must never fail the request it describes
            self.failed += 1
            now = time.monotonic()
            if now - self._warned_at >= _WARN_EVERY:
                self._warned_at = now
                logger.warning("beds http: an HTTP lineage event was not recorded ({})", exc)

    async def start(self) -> None:
        """Start publishing (in the background: RabbitMQ away at start is retried, not raised)."""
        from beds.transport.events import EventPublisher

        lineage = self.config.lineage
        self._publisher = EventPublisher(
            self.config.amqp.logs_exchange,
            node=self.origin,
            env=self.env,
            batch_size=lineage.batch_size,
            flush_interval=lineage.flush_interval,
            log_level=lineage.log_level,
            user=amqp_user(self.config.amqp.url),
        )
        self.sink = self._publisher
        self._task = asyncio.get_running_loop().create_task(self._run(), name="beds-http-lineage")

    async def _run(self) -> None:
        publisher = self._publisher
        assert publisher is not None
        delay = 0.5
        while not self._stopping.is_set():
            try:
                connection = await connect_to(self.config.amqp, name="beds-http-lineage")
                self._connection = connection
                delay = 0.5
                # A channel RabbitMQ closed (an exchange that vanished) is reopened on the
                # connection; a closed connection is reopened by the outer loop.
                while not connection.is_closed and not self._stopping.is_set():
                    if not publisher.attached:
                        await publisher.attach(connection)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), _ATTACH_CHECK)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # aiormq raises many kinds; the edge must keep trying
                logger.warning("beds http: lineage events cannot be published ({}); retrying", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, 10.0)

    async def stop(self) -> None:
        """Publish what is buffered (if RabbitMQ takes it), then close the connection."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._publisher is not None:
            await self._publisher.aclose()
        self.sink = None
        if self._connection is not None:
            with contextlib.suppress(*CONNECTION_FAILURES):
                await self._connection.close()
