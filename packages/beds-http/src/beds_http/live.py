"""Live updates: ``record.changed`` control events fanned out to Server-Sent Events clients.

- **One consumer per edge process.** :class:`LiveConsumer` reads the environment's live and
  control streams (:class:`~beds.transport.control.ControlChannel`, with its trusted-origin
  rules) on
  its own AMQP connection and hands each ``record.changed`` event to the :class:`LiveHub` (and
  each item of a batch's ``records.changed``, as a ``record.changed`` of its own with the id
  ``{event id}.{i}``); it reconnects with back-off when RabbitMQ goes away.
- **Fan-out with bounded queues.** Each connected client has a queue of ``http.stream_queue``
  events. A client that falls that far behind is dropped (its stream ends with a comment
  saying so) instead of slowing anyone else down: the hub never waits for a client.
- **What a client sees.** Only the templates it named (``?template=…``, live ones), only those
  whose fetch access its principal passes, and for a template with an ``owner`` field only
  the caller's own records, unless anyone may fetch the template (or the caller has its
  ``admin_role``). The principal is the one the node vouched for (:mod:`beds_http.auth`).
- **Resuming.** The hub keeps the last ``http.replay_events`` events (the live stream
  replays ``control.live_replay_seconds`` of them when the edge starts). ``Last-Event-ID`` replays
  what came after that event; an id the hub no longer holds replays all it holds, so a client
  may see an event twice, never miss one the hub still has. After a reconnect the stream
  replays again: events the hub holds already are not sent twice.
- **Tokens end streams too.** A stream opened with a token ends when the token expires, and
  when an ``auth.revoke`` control event revokes its session or subject (a logout): the client
  reconnects with a fresh token or gets ``BEDS-401``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import attrs
from loguru import logger

from beds.auth.principal import Principal
from beds.auth.revocation import REVOKE_KIND, Revocations
from beds.dispatch.live import RECORD_CHANGED, RECORDS_CHANGED
from beds.envelopes import Operation
from beds.templates.model import ANYONE
from beds.transport.amqp import CONNECTION_FAILURES, amqp_user, connect_to
from beds.transport.control import ControlChannel
from beds_http.auth import AuthRoutes, Caller, claims_of
from beds_http.problems import EdgeRefusal
from beds_http.sse import KEEPALIVE, event_stream, sse_event

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Mapping

    from aiormq.abc import AbstractConnection
    from starlette.requests import Request
    from starlette.responses import Response as HttpResponse

    from beds.config.model import Config
    from beds.templates.model import Template
    from beds.transport.control_event import ControlEvent
    from beds_http.metrics import EdgeMetrics
    from beds_http.settings import HttpSettings

__all__ = ("LiveConsumer", "LiveEvent", "LiveHub", "Subscriber")

PUBLIC_KEYS: Final = ("template", "operation", "key", "record", "principal", "at")
"""What a client receives of a ``record.changed`` event (not the node's lineage id)."""
MAX_TEMPLATES: Final = 32


@attrs.frozen
class LiveEvent:
    """One ``record.changed`` event as clients receive it."""

    id: str
    template: str
    data: dict[str, Any]


@attrs.define(eq=False)
class Subscriber:
    """One connected client."""

    templates: frozenset[str]
    caller: Caller | None
    queue: asyncio.Queue[LiveEvent | None]
    claims: dict[str, Any] = attrs.field(factory=dict)
    """The claims of the token the stream was opened with (its expiry, session)."""
    dropped: bool = False
    ended: str = ""
    """Why the hub ended the stream (the last comment it sends)."""


class LiveHub:
    """Receives live events and hands each to the clients that may see it (module docstring)."""

    def __init__(
        self, templates: Mapping[str, Template], settings: HttpSettings, metrics: EdgeMetrics
    ) -> None:
        self.templates = {name: t for name, t in templates.items() if t.capabilities.live}
        self.settings = settings
        self.metrics = metrics
        self.recent: deque[LiveEvent] = deque(maxlen=settings.replay_events)
        self.subscribers: set[Subscriber] = set()
        self._held: set[str] = set()
        self.revocations = Revocations()
        """Revocations seen on the control stream, to end the streams of revoked tokens."""
        """The ids in ``recent``: the live stream replays them after a reconnect."""

    def deliver(self, event: ControlEvent) -> None:
        """A ``record.changed`` event arrived: keep it and queue it for its clients."""
        self._deliver(event.id, event.data)

    def deliver_many(self, event: ControlEvent) -> None:
        """A ``records.changed`` event (a batch's items) arrived: each is one client event.

        Item ``i`` gets the id ``{event id}.{i}``, so a client resuming with ``Last-Event-ID``
        resumes within the batch.
        """
        events = event.data.get("events")
        if not isinstance(events, list):
            self.metrics.live_ignored += 1
            return
        for index, data in enumerate(events):
            if isinstance(data, dict):
                self._deliver(f"{event.id}.{index}", data)
            else:
                self.metrics.live_ignored += 1

    def _deliver(self, event_id: str, data: dict[str, Any]) -> None:
        name = data.get("template")
        if not isinstance(name, str) or name not in self.templates:
            self.metrics.live_ignored += 1
            return
        if event_id in self._held:
            return  # replayed again after a reconnect: its clients had it already
        live = LiveEvent(event_id, name, {k: data[k] for k in PUBLIC_KEYS if k in data})
        if self.recent.maxlen:
            if len(self.recent) == self.recent.maxlen:
                self._held.discard(self.recent[0].id)
            self._held.add(live.id)
        self.recent.append(live)
        for subscriber in list(self.subscribers):
            if live.template in subscriber.templates and self.visible(live, subscriber.caller):
                self._queue(subscriber, live)

    def _queue(self, subscriber: Subscriber, event: LiveEvent) -> None:
        try:
            subscriber.queue.put_nowait(event)
        except asyncio.QueueFull:
            # Too far behind: drop the client rather than hold events (or anyone) for it.
            subscriber.dropped = True
            self.metrics.stream_dropped += 1
            self._end(subscriber, "dropped: this client fell behind; reconnect with Last-Event-ID")

    def _end(self, subscriber: Subscriber, reason: str) -> None:
        """End a client's stream at once: what it had waiting is discarded."""
        subscriber.ended = reason
        self.subscribers.discard(subscriber)
        while not subscriber.queue.empty():
            subscriber.queue.get_nowait()
        subscriber.queue.put_nowait(None)

    def revoked(self, event: ControlEvent) -> None:
        """A session or a subject was revoked (``auth.revoke``): end the streams of its tokens."""
        if not self.revocations.apply(event.data):
            return
        for subscriber in list(self.subscribers):
            if subscriber.claims and self.revocations.is_revoked(subscriber.claims):
                self._end(subscriber, "closed: the session was revoked")

    def visible(self, event: LiveEvent, caller: Caller | None) -> bool:
        """Whether ``caller`` (``None``: anonymous) may see ``event``."""
        template = self.templates[event.template]
        if not self.may_fetch(template, caller):
            return False
        access = template.access
        rule = access.rules.get(Operation.FETCH)
        if access.owner is None or rule is None or ANYONE in rule:
            return True
        if caller is None:
            return False
        if access.admin_role in caller.roles:
            return True
        record = event.data.get("record")
        return isinstance(record, dict) and record.get(access.owner) == caller.handle

    @staticmethod
    def may_fetch(template: Template, caller: Caller | None) -> bool:
        """Whether ``caller`` passes ``template``'s fetch access rule."""
        principal = (
            None
            if caller is None
            else Principal(id=caller.id, handle=caller.handle, roles=caller.roles)
        )
        return template.access.allows(Operation.FETCH, principal)

    def subscribe(
        self,
        templates: Iterable[str],
        caller: Caller | None,
        last_event_id: str | None,
        claims: dict[str, Any] | None = None,
    ) -> Subscriber:
        """Register a client; with ``last_event_id``, queue what it missed first."""
        subscriber = Subscriber(
            frozenset(templates),
            caller,
            asyncio.Queue(maxsize=self.settings.stream_queue),
            claims or {},
        )
        if last_event_id is not None:
            held = [e.id for e in self.recent]
            start = held.index(last_event_id) + 1 if last_event_id in held else 0
            for event in list(self.recent)[start:]:
                if event.template in subscriber.templates and self.visible(event, caller):
                    self._queue(subscriber, event)
        if not subscriber.dropped:
            self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget a client (its stream ended)."""
        self.subscribers.discard(subscriber)


class LiveConsumer:
    """Reads ``record.changed`` from the live stream into a hub, reconnecting as needed."""

    def __init__(self, config: Config, hub: LiveHub) -> None:
        self.config = config
        self.channel = ControlChannel(config, user=amqp_user(config.amqp.url))
        self.channel.subscribe(RECORD_CHANGED, hub.deliver)
        self.channel.subscribe(RECORDS_CHANGED, hub.deliver_many)
        self.channel.subscribe(REVOKE_KIND, hub.revoked)
        self._connection: AbstractConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def connected(self) -> bool:
        """Whether the control and live streams are being read now."""
        return self.channel.live

    async def start(self) -> None:
        """Start reading (in the background; a first failure is retried, not raised)."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                connection = await connect_to(self.config.amqp, name="beds-http-live")
                self._connection = connection
                await self.channel.attach(connection)
                delay = 0.5
                logger.info("beds http: reading live events from {}", self.channel.live_stream)
                await connection.closing
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # aiormq raises many kinds; the edge must keep trying
                logger.warning("beds http: live events unavailable ({}); retrying", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, 10.0)

    async def stop(self) -> None:
        """Stop reading and close the connection."""
        self._stopping.set()
        await self.channel.aclose()
        if self._connection is not None:
            with contextlib.suppress(*CONNECTION_FAILURES):
                await self._connection.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@attrs.define
class LiveRoutes:
    """``GET /v1/events``."""

    hub: LiveHub
    auth: AuthRoutes

    async def events(self, request: Request) -> HttpResponse:
        """The live stream of the templates named in ``?template=``."""
        request.scope["beds_route"] = "/v1/events"
        unknown = sorted(set(request.query_params) - {"template"})
        if unknown:
            raise EdgeRefusal(
                "BEDS-422",
                "the query string does not match the route",
                reason="params",
                details=[f"$.query.{name}: is not a param of this route" for name in unknown],
            )
        names = request.query_params.getlist("template")
        if not names or len(names) > MAX_TEMPLATES:
            raise EdgeRefusal(
                "BEDS-400",
                f"name 1 to {MAX_TEMPLATES} live templates: ?template=NAME&template=…",
                reason="params",
            )
        for name in names:
            if name not in self.hub.templates:
                raise EdgeRefusal(
                    "BEDS-404T",
                    "no live template of that name",
                    reason="template",
                    details=[f"$.query.template: {name[:64]!r} is not a live template"],
                )
        last = request.headers.get("last-event-id")
        if last is not None and not (last.isascii() and last.isalnum() and len(last) <= 64):
            raise EdgeRefusal(
                "BEDS-400", "Last-Event-ID is not an event id of this stream", reason="header"
            )
        token, caller = await self.auth.verified(request)
        for name in names:
            if not self.hub.may_fetch(self.hub.templates[name], caller):
                code = "BEDS-401" if caller is None else "BEDS-403"
                raise EdgeRefusal(
                    code, f"the caller may not fetch {name}", reason="access", status=None
                )
        claims = claims_of(token) if token is not None else {}
        subscriber = self.hub.subscribe(names, caller, last, claims)
        return event_stream(self._stream(subscriber))

    async def _stream(self, subscriber: Subscriber) -> AsyncIterator[bytes]:
        metrics = self.hub.metrics
        metrics.stream_clients += 1
        try:
            yield b"retry: 3000\n\n"
            expires = subscriber.claims.get("exp")
            expires = float(expires) if isinstance(expires, int | float) else math.inf
            while True:
                left = expires - time.time()
                if left <= 0:
                    # The token ran out: the client reconnects with a fresh one (or gets 401).
                    yield b": closed: the token expired\n\n"
                    return
                try:
                    event = await asyncio.wait_for(
                        subscriber.queue.get(), min(self.hub.settings.keepalive_seconds, left)
                    )
                except TimeoutError:
                    if time.time() < expires:
                        yield KEEPALIVE
                    continue
                if event is None:
                    yield f": {subscriber.ended}\n\n".encode()
                    return
                metrics.live_sent += 1
                yield sse_event(RECORD_CHANGED, event.data, event.id)
        finally:
            metrics.stream_clients -= 1
            self.hub.unsubscribe(subscriber)
