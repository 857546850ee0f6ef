"""One request, without any transport: bytes in, response out.

decode → route → deadline → template → access → validation → (before-dispatch hooks) →
adapter → response. Every failure becomes an error response with a catalogue code; nothing raises.
Keeping this free of AMQP lets unit tests and embedding drive it directly.

With an :class:`EventSink`, each request leaves lineage events (:mod:`beds.lineage`): the
request itself, its database call, the log records made while it ran (loguru, bound to its
event id) and, for audited templates, an audit record.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import attrs
from loguru import logger
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from beds.broker.audit import audited_write
from beds.bugs import report_bug
from beds.codec import decode_request
from beds.config.model import ReliabilitySettings
from beds.envelopes import Operation, Request, Response, ResponseMeta
from beds.errors import (
    DeadlineExceeded,
    InternalError,
    MalformedRequest,
    RequestError,
    Unauthorized,
    UnsupportedOperation,
)
from beds.idempotency import fingerprint, watch_repeats
from beds.lineage import Cause, Event, new_event_id, reset_cause, set_cause
from beds.namaste import CallContext, NamasteCore, Record
from beds.routing import PING_TEMPLATE, Bindings, routing_key
from beds.templates.model import Template
from beds.templates.validate import validate_fetch, validate_write

if TYPE_CHECKING:
    from tenacity.stop import stop_base

    from beds.factory import Factory
    from beds.plugins import Hooks

__all__ = ("Builtin", "Dispatcher", "EventSink")

Builtin = Callable[[Request], Awaitable[Any]]
"""A template the node answers itself (no store), such as ``beds_lineage`` on the admin node."""


class EventSink(Protocol):
    """Where lineage events go (:class:`beds.transport.events.EventPublisher`)."""

    token: int
    """Bound to log records of requests handled here (``extra["beds_events"]``)."""

    def emit(self, event: Event) -> None:
        """Queue an event; never blocks."""

    async def publish_now(self, event: Event) -> None:
        """Publish an event and wait until it is safe (audit records)."""


_STATUS_OK = {Operation.CREATE: 201}
_IN_DOUBT = (
    "the write may or may not have been executed: send it again with the same idempotency key "
    "to get its outcome"
)
_Write = Callable[[NamasteCore, Template, Record, CallContext], Awaitable[Record]]
_WRITES: dict[Operation, _Write] = {
    Operation.CREATE: lambda adapter, *args: adapter.create(*args),
    Operation.UPDATE: lambda adapter, *args: adapter.update(*args),
    Operation.DELETE: lambda adapter, *args: adapter.delete(*args),
}


class Dispatcher:
    """Turns request bodies into responses using the factory's templates and adapters."""

    def __init__(
        self,
        factory: Factory,
        *,
        node: str,
        env: str,
        max_message_bytes: int,
        hooks: Hooks | None = None,
        reliability: ReliabilitySettings | None = None,
        events: EventSink | None = None,
        trace: bool = True,
        builtins: Mapping[str, Builtin] | None = None,
        bindings: Bindings | None = None,
    ) -> None:
        self.factory = factory
        self.bindings = bindings
        """The routing keys this dispatcher's broker serves (``None``: any, when embedded)."""
        self.events = events
        """Audit records go here; with ``trace``, every request's lineage events too."""
        self._trace = events if trace else None
        self.builtins = dict(builtins or {})
        self.node = node
        self.env = env
        self.max_message_bytes = max_message_bytes
        self.reliability = reliability or ReliabilitySettings()
        self.retried = 0
        """Store calls tried again after a transient failure."""
        # Dispatch hooks cost nothing unless some plugin implements them (decided once, here).
        self._before = (
            hooks if hooks is not None and hooks.implemented("beds_before_dispatch") else None
        )
        self._after = (
            hooks if hooks is not None and hooks.implemented("beds_after_dispatch") else None
        )

    async def handle(
        self, body: bytes, content_type: str | None, route: str | None = None
    ) -> tuple[Request | None, Response]:
        """Handle one request body; return the decoded request (if any) and its response.

        ``route`` is the routing key the request travelled with (the broker passes it; an
        embedding caller may pass ``None``): it must be the key of the body's template and
        operation, and one this dispatcher's bindings route, or nothing executes.

        A response whose error is transient (``RequestError.TRANSIENT``) was retried
        ``reliability.retry_attempts`` times already; the broker dead-letters a copy.
        """
        started = time.perf_counter()
        timings: dict[str, float] = {}
        try:
            request = decode_request(body, content_type, max_bytes=self.max_message_bytes)
        except Exception as exc:  # a RequestError; anything else is a codec bug, still answered
            if not isinstance(exc, RequestError):
                report_bug(exc, "a request body failed to decode unexpectedly")
                exc = InternalError("the request could not be decoded; the node log has details")
            response = self._error(exc, "", started, timings)
            if self._trace is not None:
                self._trace.emit(self._request_event(None, response, started))
            return None, response
        event_id = request.meta.event_id or new_event_id(self.node, self.env)
        # Every log line made while the request runs carries its event id; with lineage on, its
        # records also become events. A request sent meanwhile (BedsClient) is its child.
        context: dict[str, Any] = {"event_id": event_id, "event_depth": request.meta.depth}
        if self._trace is not None:
            context["beds_events"] = self._trace.token
        cause = set_cause(Cause(event_id, request.meta.depth))
        try:
            with logger.contextualize(**context):
                response = await self._respond(request, event_id, started, timings, route)
                if self._after is not None:
                    try:
                        await self._after.after_dispatch(request, response)
                    except Exception as exc:
                        report_bug(exc, "after-dispatch hook failed", event_id=event_id)
        finally:
            reset_cause(cause)
        if self._trace is not None:
            self._trace.emit(self._request_event(request, response, started))
        return request, response

    async def _respond(
        self,
        request: Request,
        event_id: str,
        started: float,
        timings: dict[str, float],
        route: str | None,
    ) -> Response:
        try:
            if route is not None:
                self._check_route(request, route)
            data = await self._execute(request, event_id, timings)
        except RequestError as exc:
            return self._error(exc, event_id, started, timings)
        except Exception as exc:
            report_bug(exc, "request {} failed unexpectedly", event_id, event_id=event_id)
            return self._error(
                InternalError("the request failed unexpectedly; the node log has the details"),
                event_id,
                started,
                timings,
            )
        status = _STATUS_OK.get(request.operation, 200)
        return Response(
            ok=True, status=status, data=data, meta=self._meta(event_id, started, timings)
        )

    def _request_event(self, request: Request | None, response: Response, started: float) -> Event:
        meta = response.meta
        return Event(
            event_id=meta.event_id,
            parent_id=request.meta.parent_id if request is not None else "",
            depth=request.meta.depth if request is not None else 0,
            kind="request",
            node=self.node,
            env=self.env,
            at=time.time() - (time.perf_counter() - started),
            ms=meta.timings.get("total"),
            template=request.template if request is not None else "",
            operation=request.operation.value if request is not None else "",
            status=response.status,
            code=response.error.code if response.error is not None else "",
        )

    def _check_route(self, request: Request, route: str) -> None:
        """Refuse a request whose routing key is not its own, or not one this broker serves.

        Per-class queues, prefetch, permissions and access rules all rely on a write never
        running on a read broker, whatever key or queue a sender used.

        Raises:
            MalformedRequest: no key, or a key of another template (BEDS-400).
            UnsupportedOperation: a key of another class, or one this broker does not serve
                (BEDS-405).
        """
        expected = routing_key(request.template, request.operation)
        if route != expected:
            if not route:
                raise MalformedRequest(
                    "the request has no routing key; publish it on the events exchange",
                    details=(f"expected routing key {expected!r}",),
                )
            template = route.rpartition(".")[0]
            if template != request.template:
                raise MalformedRequest(
                    "the routing key names another template than the body",
                    details=(f"routing key {route!r}, expected {expected!r}",),
                )
            raise UnsupportedOperation(
                f"{request.operation.value} does not belong to the routing class of the key",
                details=(f"routing key {route!r}, expected {expected!r}",),
            )
        if self.bindings is not None and not self.bindings.route(route):
            raise UnsupportedOperation(
                "this broker does not serve the request's routing key",
                details=(
                    f"routing key {route!r}; this broker is bound to "
                    f"{', '.join(self.bindings.patterns) or 'nothing'}",
                ),
            )

    async def _execute(self, request: Request, event_id: str, timings: dict[str, float]) -> Any:
        operation = request.operation
        if operation is Operation.PING and request.template == PING_TEMPLATE:
            return {"pong": self.node}
        if self.builtins and request.template in self.builtins:
            return await self.builtins[request.template](request)
        deadline = request.meta.deadline
        if deadline is not None and time.time() >= deadline:
            raise DeadlineExceeded("the request's deadline passed before it was executed")
        template, adapter = self.factory.resolve(request.template)
        if not template.access.allows(operation, request.meta.principal):
            raise Unauthorized(
                f"principal may not {operation.value} {template.name}",
                details=(f"principal: {request.meta.principal}",),
            )
        payload = request.payload
        ctx = CallContext(event_id=event_id, principal=request.meta.principal, deadline=deadline)
        if operation is Operation.FETCH:
            query = validate_fetch(template, payload)
            call: Callable[[], Awaitable[Any]] = partial(adapter.fetch, template, query, ctx)
        elif operation in _WRITES:
            record = validate_write(template, operation, payload)
            if request.meta.idempotency_key is not None:
                ctx = self._idempotent(ctx, request, adapter)
            call = partial(_WRITES[operation], adapter, template, record, ctx)
            if template.capabilities.audit:
                call = partial(self._audited, request, template, adapter, record, ctx, call)
        else:
            raise UnsupportedOperation(
                f"template {template.name!r} does not support {operation.value}"
            )
        if self._before is not None:
            await self._before.before_dispatch(request, template)

        store_started = time.perf_counter()
        failure = ""
        try:
            async with asyncio.timeout_at(_loop_deadline(deadline)):
                try:
                    result = await call()
                except RequestError as exc:
                    # A keyless write that failed transiently may have run (the reply was lost
                    # with the connection): only reads and keyed writes are safe to try again.
                    if not exc.TRANSIENT or (operation in _WRITES and ctx.idempotency_key is None):
                        raise
                    result = await self._retry(call, exc, event_id, deadline)
        except TimeoutError:
            failure = DeadlineExceeded.CODE
            raise DeadlineExceeded(
                "the request's deadline passed while the store was working"
            ) from None
        except RequestError as exc:
            failure = exc.CODE
            if exc.TRANSIENT and operation in _WRITES:
                # The connection may have dropped after the database committed.
                raise type(exc)(exc.message, details=(*exc.details, _IN_DOUBT)) from exc
            raise
        except BaseException:
            failure = InternalError.CODE
            raise
        finally:
            took = timings["store"] = round((time.perf_counter() - store_started) * 1000, 3)
            if self._trace is not None:
                call_event = self._child(
                    request, event_id, "db", took, f"{adapter.store} {operation.value}"
                )
                self._trace.emit(attrs.evolve(call_event, code=failure) if failure else call_event)
        logger.debug(
            "{} {} on {} took {:.1f} ms", operation.value, template.name, adapter.store, took
        )
        return result

    def _child(
        self, request: Request, parent: str, kind: str, ms: float | None, message: str = ""
    ) -> Event:
        """An event ``parent`` caused, started ``ms`` ago (or now)."""
        return Event(
            event_id=new_event_id(self.node, self.env),
            parent_id=parent,
            depth=request.meta.depth + 1,
            kind=kind,  # type: ignore[arg-type]
            node=self.node,
            env=self.env,
            at=time.time() - (ms or 0) / 1000,
            ms=ms,
            template=request.template,
            operation=request.operation.value,
            message=message,
        )

    async def _audited(
        self,
        request: Request,
        template: Template,
        adapter: NamasteCore,
        record: Record,
        ctx: CallContext,
        write: Callable[[], Awaitable[Record]],
    ) -> Record:
        """Run an audited write and publish its audit record before it is answered."""
        with watch_repeats() as repeated:
            result, audit = await audited_write(request, template, adapter, record, ctx, write)
            repeat = repeated()
        if repeat:
            return result  # answered from its idempotency key: audited when it ran
        event = attrs.evolve(self._child(request, ctx.event_id, "audit", None), data=audit)
        if self.events is None:
            logger.info("audit {}: {}", ctx.event_id, event.to_record())
            return result
        try:
            await self.events.publish_now(event)
        except Exception as exc:  # the write is done: keep the record for the next batch
            logger.warning("audit record of {} waits for the logs exchange ({})", ctx.event_id, exc)
            self.events.emit(event)
        return result

    def _idempotent(self, ctx: CallContext, request: Request, adapter: NamasteCore) -> CallContext:
        """Give the adapter the key, the request's fingerprint and how long to remember them."""
        if not getattr(adapter, "idempotent_writes", False):
            raise UnsupportedOperation(
                f"store {adapter.store!r} of template {request.template!r} does not support "
                "idempotency keys; send the write without meta.idempotency_key"
            )
        return attrs.evolve(
            ctx,
            idempotency_key=request.meta.idempotency_key,
            fingerprint=fingerprint(request),
            idempotency_ttl=self.reliability.idempotency_ttl,
            idempotency_lease=self.reliability.handler_budget + self.reliability.settle_grace,
            attempt=os.urandom(12).hex(),
        )

    async def _retry(
        self,
        call: Callable[[], Awaitable[Any]],
        first: RequestError,
        event_id: str,
        deadline: float | None,
    ) -> Any:
        """Try a transiently failed store call again with exponential back-off and jitter.

        Off the hot path: only a call that already failed transiently gets here. Stops after
        ``retry_attempts`` tries in all, or when the next wait would pass the deadline.
        """
        settings = self.reliability

        stop: stop_base = stop_after_attempt(settings.retry_attempts - 1)
        if deadline is not None:
            stop = stop | stop_before_delay(max(0.0, deadline - time.time()))
        retrying = AsyncRetrying(
            stop=stop,
            wait=wait_exponential_jitter(
                multiplier=settings.retry_initial_delay,
                max=settings.retry_max_delay,
                jitter=settings.retry_initial_delay,
            ),
            retry=retry_if_exception(lambda exc: isinstance(exc, RequestError) and exc.TRANSIENT),
            before_sleep=lambda state: logger.warning(
                "request {} failed transiently ({}); retrying", event_id, first.CODE
            ),
            reraise=True,
        )
        if settings.retry_attempts <= 1:
            raise first
        await asyncio.sleep(settings.retry_initial_delay)
        async for attempt in retrying:
            with attempt:
                self.retried += 1
                return await call()
        raise first  # pragma: no cover - reraise=True raises the last error instead

    def _meta(self, event_id: str, started: float, timings: dict[str, float]) -> ResponseMeta:
        timings["total"] = round((time.perf_counter() - started) * 1000, 3)
        return ResponseMeta(event_id=event_id, node=self.node, timings=timings)

    def _error(
        self, exc: RequestError, event_id: str, started: float, timings: dict[str, float]
    ) -> Response:
        return Response(
            ok=False,
            status=exc.STATUS,
            error=exc.to_error(),
            meta=self._meta(event_id, started, timings),
        )


def _loop_deadline(deadline: float | None) -> float | None:
    """Convert a wall-clock deadline into the running loop's clock."""
    if deadline is None:
        return None
    return asyncio.get_running_loop().time() + (deadline - time.time())
