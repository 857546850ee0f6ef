"""BedsClient: the async client. It publishes requests and awaits replies; it has no database path.

Many requests share one connection and one channel: replies arrive through RabbitMQ's direct
reply-to and are matched to waiting callers by correlation id. Every call has a timeout that is
also sent as the request's deadline and the message's expiration, so a request nobody waits for
any more is neither executed nor left in a queue.

Why this module is long: it is the whole client (connection, calls, replies, timeouts) behind one
class that applications import; its parts share one channel and one table of waiting callers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Self

import aiormq
import attrs
from loguru import logger
from pamqp.commands import Basic
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from beds.auth.credential import CREDENTIAL_HEADER, bearer
from beds.codec import CONTENT_TYPE, DEFAULT_MAX_MESSAGE_BYTES, decode_response, encode_request
from beds.dispatch.calgon import TICKET_TEMPLATE
from beds.envelopes import (
    BATCH_OPERATIONS,
    WRITE_OPERATIONS,
    ErrorBody,
    Operation,
    Request,
    RequestMeta,
    Response,
)
from beds.errors import (
    BrokerUnavailable,
    InternalError,
    PublishError,
    ReplyTimeout,
    RequestError,
    TicketFinished,
    Unauthenticated,
)
from beds.lineage import current_cause, new_event_id
from beds.routing import PING_TEMPLATE, routing_key
from beds.transport.amqp import CONNECTION_FAILURES, amqp_user, connect_first
from beds.transport.outbox import Outbox

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
    from types import TracebackType

    from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage

__all__ = ("BatchResult", "BedsClient", "TicketHandle")

_KEYED = WRITE_OPERATIONS | {Operation.SUBMIT}
"""Operations sent with an idempotency key by default: a retried submit gets the same ticket."""

_KEYED_BATCHES = frozenset(
    batch for batch, single in BATCH_OPERATIONS.items() if single in WRITE_OPERATIONS
)
"""Batch writes: sent with a key per message by default, like single writes."""

_REPLY_TO = "amq.rabbitmq.reply-to"
_SESSION_TEMPLATE = "beds_session"
"""The template of ``beds-identity`` that logs in, refreshes and logs out (docs/identity.md)."""
REPLY_GRACE = 0.5
"""Seconds a call waits past its deadline, for the node's deadline-exceeded reply."""


class BedsClient:
    """Call BEDS templates over RabbitMQ.

    Use as ``async with BedsClient(url) as client: await client.create("spew_post", {...})``.

    Args:
        url: AMQP URL (vhost in the path), or the URLs of a RabbitMQ cluster's nodes (one user
            and vhost for all; ``[amqp] urls``): the client connects to the first that answers
            and, when it loses that one, tries the others in turn, the lost one last.
        exchange: the events exchange requests are published to.
        timeout: default seconds to wait for a reply.
        origin: this client's name, used in event ids and idempotency keys. Nodes take a
            request's origin (``meta.origin``) from the AMQP user RabbitMQ vouches for, which
            the client sends as ``user_id``: the user of ``url``.
        env: environment name used in event ids.
        principal: sent as ``meta.principal``; nodes replace it with the principal the token
            proves (or none), so it only labels requests to embedded dispatchers in tests.
        token: a session token (``beds login``, :meth:`login`) or an identity provider's access
            token, sent with every request in the ``authorization`` header.
        ssl_context: TLS for an ``amqps://`` URL (``beds.transport.tls.amqp_context`` builds
            it from ``[amqp.tls]``); ``None``: the system's CAs.
        idempotent_writes: give every create, update and delete sent without an idempotency key
            a fresh one, so that a write redelivered after a node died, or retried by the node,
            runs exactly once (REL) or at most once (REC). Turn it off only for stores that do
            not support idempotency keys (they refuse keyed writes with ``BEDS-405``).
    """

    def __init__(
        self,
        url: str | Sequence[str] = "amqp://guest:guest@127.0.0.1:5672/",
        *,
        exchange: str = "beds.events",
        timeout: float = 10.0,
        origin: str = "client",
        env: str = "dev",
        principal: str | None = None,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        idempotent_writes: bool = True,
    ) -> None:
        self.urls: tuple[str, ...] = (url,) if isinstance(url, str) else tuple(url)
        """The brokers to connect to, in order."""
        if not self.urls:
            raise ValueError("BedsClient needs at least one AMQP URL")
        if len({amqp_user(each) for each in self.urls}) > 1:
            # Not quoted: URLs hold passwords.
            raise ValueError("BedsClient: every AMQP URL must log in as the same user")
        self.url = self.urls[0]
        self._user = amqp_user(self.url)
        """Sent as ``user_id``: RabbitMQ vouches for it, and the node takes it as the origin."""
        self._start = 0
        """Which of ``urls`` to try first: the one connected to, or the one after it when its
        connection was lost."""
        self.exchange = exchange
        self.timeout = timeout
        self.origin = origin
        self.env = env
        self.principal = principal
        self.token = token
        """Sent with every call that does not pass its own ``token``."""
        self.ssl_context = ssl_context
        self.max_message_bytes = max_message_bytes
        self.idempotent_writes = idempotent_writes
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._outbox: Outbox | None = None
        """Writes the requests of one loop turn together (every publish goes through it)."""
        self._waiting: dict[str, asyncio.Future[Response]] = {}
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def pending(self) -> int:
        """Calls waiting for a reply."""
        return len(self._waiting)

    async def connect(self) -> None:
        """Open the connection and the reply consumer (done on first call if not called).

        Raises:
            BrokerUnavailable: RabbitMQ cannot be reached.
        """
        async with self._lock:
            if self._channel is not None and not self._channel.is_closed:
                return
            stale = self._connection
            if stale is not None:
                # RabbitMQ closed only the channel (say, a publish to a missing exchange): its
                # reply consumer is gone, so waiting calls cannot be answered; drop it all.
                self._fail_waiting(
                    stale,
                    "the RabbitMQ channel was closed before the reply; "
                    "the request may or may not have been executed",
                )
                await _close_quietly(stale)
            connection, index = await connect_first(
                self.urls,
                start=self._start,
                name=f"beds-client-{self.origin}",
                context=self.ssl_context,
            )
            self._start = index
            try:
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                await channel.basic_consume(_REPLY_TO, self._on_reply, no_ack=True)
            except CONNECTION_FAILURES as exc:
                self._start = index + 1
                await _close_quietly(connection)
                raise BrokerUnavailable(f"RabbitMQ connection failed: {exc}") from exc
            self._connection, self._channel = connection, channel
            self._outbox = Outbox(channel)

            def lost(_: object) -> None:
                if connection is self._connection:
                    self._start = index + 1  # next time, another broker first
                self._fail_waiting(
                    connection,
                    "the RabbitMQ connection was lost before the reply; "
                    "the request may or may not have been executed",
                )

            connection.closing.add_done_callback(lost)

    def _fail_waiting(self, connection: AbstractConnection, reason: str) -> None:
        """Fail the calls waiting on ``connection`` (replies can only come back on it)."""
        if connection is not self._connection:
            return
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(BrokerUnavailable(reason))
        self._waiting.clear()
        self._connection = self._channel = None
        outbox, self._outbox = self._outbox, None
        loop = asyncio.get_running_loop()
        if outbox is not None:
            stopping = loop.create_task(outbox.aclose(timeout=0))
            self._closing.add(stopping)
            stopping.add_done_callback(self._closing.discard)
        if not connection.is_closed:
            return
        # Closed by the server: release our side of the socket too.
        task = loop.create_task(_close_quietly(connection))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _reconnect(self, timeout: float) -> None:
        """Connect, trying again with back-off for up to ``timeout`` seconds."""
        retrying = AsyncRetrying(
            stop=stop_after_delay(timeout),
            wait=wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.1),
            retry=retry_if_exception_type(BrokerUnavailable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self.connect()

    async def close(self) -> None:
        """Fail every waiting call with ``BrokerUnavailable`` and close the connection."""
        connection = self._connection
        outbox, self._outbox = self._outbox, None
        if outbox is not None:
            await outbox.aclose()
        if connection is not None:
            self._fail_waiting(connection, "the client was closed")
            with contextlib.suppress(*CONNECTION_FAILURES):
                await connection.close()

    async def _on_reply(self, message: DeliveredMessage) -> None:
        correlation_id = message.header.properties.correlation_id or ""
        future = self._waiting.pop(correlation_id, None)
        if future is None or future.done():
            logger.debug("late or unknown reply {} dropped", correlation_id)
            return
        try:
            future.set_result(
                decode_response(
                    message.body,
                    message.header.properties.content_type,
                    max_bytes=self.max_message_bytes,
                )
            )
        except RequestError as exc:
            future.set_exception(exc)

    async def call(
        self,
        template: str,
        operation: Operation | str,
        payload: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        principal: str | None = None,
        token: str | None = None,
        idempotency_key: str | None = None,
        parent_id: str | None = None,
        depth: int | None = None,
    ) -> Response:
        """Send one request and return its response envelope, error responses included.

        Lineage: a call made while a node handles a request (from an adapter, a hook or a
        built-in) is that request's child: ``parent_id`` and ``depth`` come from
        :func:`beds.lineage.current_cause`. Elsewhere the call is a root, unless ``parent_id``
        names the event to join (``depth`` then defaults to 1: pass the parent's depth + 1).
        ``parent_id=""`` makes a root anywhere.

        Raises:
            ValueError: ``depth`` is outside ``[0:64]`` (a chain of requests that deep is a loop).
            ReplyTimeout: no reply within ``timeout`` seconds.
            PublishError: no broker queue is bound for this template and operation.
            BrokerUnavailable: RabbitMQ cannot be reached.
        """
        operation = Operation(operation)
        timeout = self.timeout if timeout is None else timeout
        if self._channel is None or self._channel.is_closed:
            await self._reconnect(timeout)
        channel = self._channel
        assert channel is not None  # connect() sets it or raises
        if parent_id is None:
            cause = current_cause()
            parent_id = "" if cause is None else cause.event_id
            if depth is None:
                depth = 0 if cause is None else cause.depth + 1
        elif depth is None:
            depth = 1 if parent_id else 0
        correlation_id = os.urandom(16).hex()
        if idempotency_key is None and self.idempotent_writes and operation in _KEYED:
            idempotency_key = f"{self.origin}.{correlation_id}"
        request = Request(
            operation=operation,
            template=template,
            payload=payload or {},
            meta=RequestMeta(
                event_id=new_event_id(self.origin, self.env),
                parent_id=parent_id,
                depth=depth,
                correlation_id=correlation_id,
                origin=self.origin,
                idempotency_key=idempotency_key,
                deadline=time.time() + timeout,
                principal=principal if principal is not None else self.principal,
            ),
        )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Response] = loop.create_future()
        self._waiting[correlation_id] = future
        # The node answers BEDS-504 right at the deadline: wait a little past it for that. A
        # timer on the future costs a quarter of an ``asyncio.timeout`` block.
        expiry = loop.call_at(loop.time() + timeout + REPLY_GRACE, _expire, future)
        try:
            properties = Basic.Properties(
                content_type=CONTENT_TYPE,
                correlation_id=correlation_id,
                reply_to=_REPLY_TO,
                message_id=correlation_id,
                expiration=str(max(1, int(timeout * 1000))),
                headers=_credential(token if token is not None else self.token),
                user_id=self._user,
            )
            outbox = self._outbox
            assert outbox is not None  # connect() sets it with the channel
            # Written with the other callers' requests of this loop turn. The reply is
            # awaited at once: a nack or the return of an unroutable request (mandatory)
            # fails the call through its confirm.
            confirmation = outbox.publish_confirmed(
                encode_request(request),
                exchange=self.exchange,
                routing_key=routing_key(template, operation),
                mandatory=True,
                properties=properties,
            )
            confirmation.add_done_callback(partial(_fail_on_refusal, future))
            return await future
        except TimeoutError:
            raise ReplyTimeout(
                f"no reply to {operation.value} {template} within {timeout:g} s"
            ) from None
        except aiormq.exceptions.PublishError as exc:
            raise PublishError(
                f"no broker is bound for {routing_key(template, operation)!r} on exchange "
                f"{self.exchange!r}"
            ) from exc
        except CONNECTION_FAILURES as exc:  # a channel closed while we waited for its lock too
            raise BrokerUnavailable(f"RabbitMQ connection failed: {exc}") from exc
        finally:
            expiry.cancel()
            self._waiting.pop(correlation_id, None)

    async def _data(
        self, template: str, operation: Operation, payload: dict[str, Any], **kwargs: Any
    ) -> Any:
        response = await self.call(template, operation, payload, **kwargs)
        if not response.ok:
            assert response.error is not None
            raise RequestError.from_error(response.error)
        return response.data

    async def create(self, template: str, record: dict[str, Any], **kwargs: Any) -> Any:
        """Create a record; return its ``returns`` fields. Raises the RequestError replied."""
        return await self._data(template, Operation.CREATE, record, **kwargs)

    async def fetch(
        self,
        template: str,
        query: str | None = None,
        params: dict[str, Any] | None = None,
        *,
        limit: int | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        """Run a declared query; return the records. Raises the RequestError replied."""
        payload: dict[str, Any] = {"params": params or {}}
        if query is not None:
            payload["query"] = query
        if limit is not None:
            payload["limit"] = limit
        result: list[dict[str, Any]] = await self._data(
            template, Operation.FETCH, payload, **kwargs
        )
        return result

    async def update(self, template: str, record: dict[str, Any], **kwargs: Any) -> Any:
        """Update a record by key; return the template's ``returns`` fields."""
        return await self._data(template, Operation.UPDATE, record, **kwargs)

    async def delete(self, template: str, key: dict[str, Any], **kwargs: Any) -> Any:
        """Delete a record by key; return ``{"deleted": n}``."""
        return await self._data(template, Operation.DELETE, key, **kwargs)

    # -- batches (docs/client.md, "Batches") ----------------------------------------------------

    async def create_many(
        self, template: str, records: Iterable[dict[str, Any]], **options: Any
    ) -> list[BatchResult]:
        """Create many records in batches (``create_many``); one result per record, in order.

        Options (every batch method): ``idempotency_key`` (chunk ``n`` is sent with
        ``f"{key}:{n}"``, so a retried call repeats exactly; by default, with
        ``idempotent_writes``, a key of the client's own per call, so a redelivered message
        never writes twice), ``timeout`` (per message), ``chunk`` (records per message, default
        500: at most the node's ``amqp.max_batch_records`` and the template's ``[batch]
        max_records``), ``in_flight`` (messages outstanding at once, default 4), ``token``,
        ``principal``.

        A message refused as a whole (an error reply: access, payload, an all-or-nothing
        batch with a failing record) gives each of its records that error.

        Raises:
            ValueError: ``chunk`` or ``in_flight`` below 1.
            ReplyTimeout, PublishError, BrokerUnavailable: as :meth:`call`.
        """
        return await self._many(template, Operation.CREATE_MANY, records, **options)

    async def update_many(
        self, template: str, records: Iterable[dict[str, Any]], **options: Any
    ) -> list[BatchResult]:
        """Update many records by key (``update_many``); options as :meth:`create_many`."""
        return await self._many(template, Operation.UPDATE_MANY, records, **options)

    async def delete_many(
        self, template: str, keys: Iterable[dict[str, Any]], **options: Any
    ) -> list[BatchResult]:
        """Delete many records by key (``delete_many``); options as :meth:`create_many`."""
        return await self._many(template, Operation.DELETE_MANY, keys, **options)

    async def fetch_many(
        self,
        template: str,
        keys: Iterable[dict[str, Any]],
        *,
        consistency: str | None = None,
        **options: Any,
    ) -> list[BatchResult]:
        """Read many records by key through the key query (``fetch_many``).

        A found record is its result's ``data``; a key without one is a ``BEDS-404`` result.
        ``consistency`` as :meth:`fetch`'s; other options as :meth:`create_many`.
        """
        extra = {} if consistency is None else {"consistency": consistency}
        return await self._many(template, Operation.FETCH_MANY, keys, extra=extra, **options)

    async def _many(
        self,
        template: str,
        operation: Operation,
        items: Iterable[dict[str, Any]],
        **options: Any,
    ) -> list[BatchResult]:
        results: list[BatchResult] = []
        async for chunk in self.stream_many(template, operation, items, **options):
            results += chunk
        return results

    async def stream_many(
        self,
        template: str,
        operation: Operation | str,
        items: Iterable[dict[str, Any]],
        *,
        idempotency_key: str | None = None,
        chunk: int = 500,
        in_flight: int = 4,
        extra: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[list[BatchResult]]:
        """Send ``items`` as batch messages; yield each message's results, in order.

        What :meth:`create_many` and the others do, without keeping every result (``beds
        load``). ``extra`` adds payload keys to every message (``consistency``); ``kwargs``
        go to :meth:`call` (``timeout``, ``token``, ``principal``).
        """
        operation = Operation(operation)
        if chunk < 1 or in_flight < 1:
            raise ValueError("chunk and in_flight must be at least 1")
        if idempotency_key is None and self.idempotent_writes and operation in _KEYED_BATCHES:
            # As single writes: a redelivered or retried message never writes twice.
            idempotency_key = f"{self.origin}.{os.urandom(8).hex()}"
        name = "keys" if operation is Operation.FETCH_MANY else "records"
        waiting: collections.deque[asyncio.Task[list[BatchResult]]] = collections.deque()
        start = 0

        async def send(number: int, first: int, part: list[dict[str, Any]]) -> list[BatchResult]:
            key = None if idempotency_key is None else f"{idempotency_key}:{number}"
            payload = {name: part, **(extra or {})}
            response = await self.call(template, operation, payload, idempotency_key=key, **kwargs)
            return _batch_results(response, first, len(part))

        try:
            for number, part in enumerate(_chunks(items, chunk)):
                if len(waiting) >= in_flight:
                    yield await waiting.popleft()
                waiting.append(asyncio.ensure_future(send(number, start, part)))
                start += len(part)
            while waiting:
                yield await waiting.popleft()
        finally:
            for task in waiting:
                task.cancel()

    async def submit(
        self,
        template: str,
        operation: str,
        params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TicketHandle:
        """Submit a template's long operation (CALGON); return a handle on its ticket.

        The node answers once the ticket is recorded; ``await handle.result()`` waits for the
        work. Raises the RequestError replied (``BEDS-405``, ``BEDS-422``…).
        """
        payload = {"operation": operation, "params": params or {}}
        ticket = await self._data(template, Operation.SUBMIT, payload, **kwargs)
        return TicketHandle(self, ticket)

    async def ticket(
        self,
        ticket_id: str,
        *,
        cancel: bool = False,
        cursor: str | None = None,
        limit: int | None = None,
        **kwargs: Any,
    ) -> Response:
        """The ``ticket`` reply for ``ticket_id`` (any template's), error replies included.

        ``data`` is the ticket; once it succeeded, ``data["result"]`` holds a page of its
        records and ``meta.next`` the cursor of the next page.
        """
        payload: dict[str, Any] = {"ticket": ticket_id}
        if cancel:
            payload["cancel"] = True
        if cursor is not None:
            payload["cursor"] = cursor
        if limit is not None:
            payload["limit"] = limit
        return await self.call(TICKET_TEMPLATE, Operation.TICKET, payload, **kwargs)

    async def login(
        self, handle: str, password: str, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Log in (``beds_session`` create); later calls carry the session token.

        The request is sent without a credential, even if the client holds a token (an expired
        one would be refused). The password travels only in this request's payload and is
        neither kept nor logged.

        Returns:
            ``token``, ``expires_at`` and ``session``, as ``beds_session`` answers.

        Raises:
            Unauthenticated: a wrong password or an unknown handle (``BEDS-401``, the same).
            TooManyAttempts: too many failed logins for this handle or origin (``BEDS-429``).
        """
        data: dict[str, Any] = await self._data(
            _SESSION_TEMPLATE,
            Operation.CREATE,
            {"handle": handle, "password": password},
            timeout=timeout,
            token="",
        )
        self.token = data["token"]
        return data

    async def refresh(self, *, timeout: float | None = None) -> dict[str, Any]:
        """Trade the session token for a new one (``beds_session`` update); keep it.

        Returns:
            ``token``, ``expires_at`` and ``session``, as ``beds_session`` answers.

        Raises:
            Unauthenticated: no token, or the session ended (expired, revoked, past
                ``auth.session_ttl``).
        """
        data: dict[str, Any] = await self._data(
            _SESSION_TEMPLATE, Operation.UPDATE, {}, timeout=timeout
        )
        self.token = data["token"]
        return data

    async def logout(self, *, timeout: float | None = None) -> None:
        """End the session (``beds_session`` delete): every node refuses its tokens from now on.

        The token is dropped on success and when the node answers ``BEDS-401`` (the session
        had ended already); after any other error it is kept, so the logout can be tried again.

        Raises:
            Unauthenticated: no token, or the session had already ended.
        """
        try:
            await self._data(_SESSION_TEMPLATE, Operation.DELETE, {}, timeout=timeout)
        except Unauthenticated:
            self.token = None
            raise
        self.token = None

    async def ping(self, *, timeout: float | None = None) -> Response:
        """Ask any read broker to answer without touching a store."""
        return await self.call(PING_TEMPLATE, Operation.PING, timeout=timeout)


class TicketHandle:
    """A submitted long operation: its ticket's state, progress, cancel and result."""

    def __init__(self, client: BedsClient, ticket: dict[str, Any]) -> None:
        self.client = client
        self.ticket = ticket
        """The ticket as last read (``state``, ``progress``, timestamps, ``error``…)."""
        self._next: str | None = None

    @property
    def id(self) -> str:
        """The ticket's id (a UUID): ``beds ticket ID`` finds it too."""
        ticket_id: str = self.ticket["ticket"]
        return ticket_id

    @property
    def state(self) -> str:
        """``queued``, ``running``, ``succeeded``, ``failed`` or ``cancelled``, as last read."""
        state: str = self.ticket["state"]
        return state

    async def refresh(self, **kwargs: Any) -> dict[str, Any]:
        """Read the ticket again; return it. Raises the RequestError replied."""
        self.ticket = await self._read(**kwargs)
        return self.ticket

    async def cancel(self, **kwargs: Any) -> dict[str, Any]:
        """Cancel it: at once when queued, after its running step otherwise.

        Raises:
            TicketFinished: it had finished already (``BEDS-409F``).
        """
        self.ticket = await self._read(cancel=True, **kwargs)
        return self.ticket

    async def result(
        self,
        *,
        poll: float = 0.5,
        timeout: float | None = None,
        on_progress: Callable[[float, dict[str, Any]], object] | None = None,
    ) -> list[dict[str, Any]]:
        """Wait for the ticket to finish; return every record of its result (all pages).

        Args:
            poll: seconds between two reads of the ticket.
            timeout: seconds to wait at most (``None``: as long as it takes).
            on_progress: called with the progress (0 to 1) and the ticket each time it changes.

        Raises:
            TimeoutError: still unfinished after ``timeout`` seconds.
            RequestError: the ticket failed: its error, as the class of its catalogue code.
            TicketFinished: it was cancelled.
        """
        async with asyncio.timeout(timeout):
            progress = -1.0
            while True:
                ticket = await self.refresh()
                if on_progress is not None and ticket["progress"] != progress:
                    progress = ticket["progress"]
                    on_progress(progress, ticket)
                if ticket["state"] in ("succeeded", "failed", "cancelled"):
                    break
                await asyncio.sleep(poll)
        if ticket["state"] == "failed":
            error = ticket["error"] or {}
            raise RequestError.from_error(
                ErrorBody(
                    code=error.get("code", InternalError.CODE),
                    message=error.get("message", "the long operation failed"),
                    details=tuple(error.get("details", ())),
                )
            )
        if ticket["state"] == "cancelled":
            raise TicketFinished("the ticket was cancelled", details=(f"ticket: {self.id}",))
        records: list[dict[str, Any]] = list(ticket.get("result", []))
        cursor = self._next
        while cursor is not None:
            response = await self.client.ticket(self.id, cursor=cursor)
            page = _data_of(response)
            records += page.get("result", [])
            cursor = response.meta.next
        return records

    async def _read(self, **kwargs: Any) -> dict[str, Any]:
        response = await self.client.ticket(self.id, **kwargs)
        self._next = response.meta.next
        ticket: dict[str, Any] = _data_of(response)
        return ticket


@attrs.frozen
class BatchResult:
    """One item's result in a batch (docs/wire-contract.md, "Batches")."""

    index: int
    """The item's position in what was sent (all chunks counted)."""
    ok: bool
    status: int
    """201 or 200 on success; the item's error status otherwise."""
    data: Any = None
    """The single operation's answer for the item (a fetched record for ``fetch_many``)."""
    error: ErrorBody | None = None

    def exception(self) -> RequestError | None:
        """The item's error as the class of its catalogue code (``None`` when it succeeded)."""
        return None if self.error is None else RequestError.from_error(self.error)

    def to_json(self) -> dict[str, Any]:
        """The result as ``beds load`` prints it: the wire item with its ``index``."""
        document: dict[str, Any] = {"index": self.index, "ok": self.ok, "status": self.status}
        if self.error is None:
            document["data"] = self.data
        else:
            error = self.error
            document["error"] = {
                "code": error.code,
                "message": error.message,
                "details": list(error.details),
            }
        return document


def _chunks(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    iterator = iter(items)
    while part := list(itertools.islice(iterator, size)):
        yield part


def _batch_results(response: Response, first: int, count: int) -> list[BatchResult]:
    """The results of one batch message: its items, or its error for each of them."""
    if not response.ok:
        error = response.error or ErrorBody(code=InternalError.CODE, message="no error body")
        return [
            BatchResult(index=first + n, ok=False, status=response.status, error=error)
            for n in range(count)
        ]
    items = response.data.get("results") if isinstance(response.data, dict) else None
    if not isinstance(items, list) or len(items) != count:
        raise InternalError(
            f"a batch reply holds no result per item (sent {count})",
            details=("the node is older or newer than this client's wire contract",),
        )
    results = []
    for n, item in enumerate(items):
        error = item.get("error")
        results.append(
            BatchResult(
                index=first + n,
                ok=bool(item.get("ok")),
                status=int(item.get("status", 0)),
                data=item.get("data"),
                error=None
                if error is None
                else ErrorBody(
                    code=str(error.get("code", InternalError.CODE)),
                    message=str(error.get("message", "")),
                    details=tuple(error.get("details", ())),
                ),
            )
        )
    return results


def _data_of(response: Response) -> Any:
    if not response.ok:
        assert response.error is not None
        raise RequestError.from_error(response.error)
    return response.data


def _expire(waiting: asyncio.Future[Response]) -> None:
    """No reply in time: the call raises ``ReplyTimeout``."""
    if not waiting.done():
        waiting.set_exception(TimeoutError())


def _fail_on_refusal(waiting: asyncio.Future[Response], confirmation: asyncio.Future[Any]) -> None:
    """Fail a call RabbitMQ refused: request returned (unroutable) or nacked, channel closed."""
    if confirmation.cancelled():
        return
    refusal = confirmation.exception()
    if refusal is not None and not waiting.done():
        waiting.set_exception(refusal)


async def _close_quietly(connection: AbstractConnection) -> None:
    with contextlib.suppress(Exception):
        await connection.close()


def _credential(token: str | None) -> dict[str, Any] | None:
    """The AMQP headers that carry ``token`` (:mod:`beds.auth`)."""
    return None if not token else {CREDENTIAL_HEADER: bearer(token)}
