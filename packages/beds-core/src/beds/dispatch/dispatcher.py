"""One request, without any transport: bytes in, response out.

decode → route → builtin → deadline → template → access → plan (validation, idempotency, audit,
journal; a fetch's page and cache in :mod:`beds.dispatch.reads`; a batch's steps in
:mod:`beds.dispatch.batch`) → before-dispatch hooks → store call (timeout, retries) →
response; each step is one method or function below. Every failure becomes an error response
with a catalogue code; nothing raises. Keeping this free of AMQP lets unit tests and embedding
drive it directly.

With an :class:`EventSink`, each request leaves lineage events (:mod:`beds.lineage`): the
request itself, its database call, the log records made while it ran (loguru, bound to its
event id) and, for audited templates, an audit record.

Why this module is long: it is the one place that orders those steps for every operation,
and the order is the contract (docs/architecture.md); each step's work lives in the modules
it calls.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger

from beds.bugs import report_bug
from beds.codec import decode_request
from beds.config.model import ReliabilitySettings
from beds.dispatch.access import admit, authenticate, check_owner
from beds.dispatch.audit import audit_write
from beds.dispatch.batch import BatchAnswer, serve_batch
from beds.dispatch.calgon import TICKET_TEMPLATE, Calgon, TicketPage
from beds.dispatch.plan import WRITES, plan_write
from beds.dispatch.reads import Page, serve_fetch
from beds.dispatch.retry import call_store
from beds.dispatch.routes import check_route
from beds.dispatch.trace import EventSink, child_event, request_event, store_object
from beds.envelopes import BATCH_OPERATIONS, Operation, Request, Response, ResponseMeta
from beds.errors import (
    DeadlineExceeded,
    InternalError,
    RequestError,
    Unauthenticated,
    UnsupportedOperation,
)
from beds.handlers import HandlerCall
from beds.lineage import Cause, new_event_id, reset_cause, set_cause
from beds.namaste import CallContext, NamasteCore, Record
from beds.pagination import Cursors, development_secret
from beds.routing import PING_TEMPLATE, Bindings
from beds.templates.validate import validate_fetch

if TYPE_CHECKING:
    from beds.auth.authenticator import Authenticator
    from beds.auth.principal import Principal
    from beds.dispatch.cache import FetchCache
    from beds.dispatch.live import LivePublisher
    from beds.factory import Factory
    from beds.handlers import Handler, NodeServices
    from beds.lineage import Event
    from beds.plugins import Hooks
    from beds.templates.model import Template

__all__ = ("Builtin", "Dispatcher", "EventSink")

Builtin = Callable[[Request, "Principal | None"], Awaitable[Any]]
"""A template the node answers itself (no store), such as ``beds_lineage`` on the admin node;
it is given the request and its authenticated principal."""


_STATUS_OK = {Operation.CREATE: 201, Operation.SUBMIT: 202}


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
        authenticator: Authenticator | None = None,
        handlers: Mapping[tuple[str, Operation], Handler] | None = None,
        services: NodeServices | None = None,
        cursors: Cursors | None = None,
        cache: FetchCache | None = None,
        calgon: Calgon | None = None,
        live: LivePublisher | None = None,
        max_batch_records: int = 500,
    ) -> None:
        self.factory = factory
        self.max_batch_records = max_batch_records
        """Most items one batch carries (``amqp.max_batch_records``; a template may say fewer)."""
        self.live = live
        """Publishes ``record.changed`` after writes of ``live = true`` templates (``None``:
        this node publishes none: its control channel is off)."""
        self.calgon = calgon
        """Answers ``submit`` and ``ticket`` (``None``: this node keeps no tickets)."""
        self.cursors = cursors or Cursors(development_secret(env))
        """Makes and reads page cursors (``reads.cursor_secret``)."""
        self.cache = cache
        """The node's fetch cache (templates with ``cache = true``), shared by its brokers."""
        self.authenticator = authenticator
        """Turns credentials into principals (``None``: every request is anonymous)."""
        self.handlers = dict(handlers or {})
        """Template handlers, by template and operation (:mod:`beds.handlers`)."""
        self.services = services
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
        self,
        body: bytes,
        content_type: str | None,
        route: str | None = None,
        credential: object = None,
        origin: str | None = None,
    ) -> tuple[Request | None, Response]:
        """Handle one request body; return the decoded request (if any) and its response.

        ``route`` is the routing key the request travelled with (the broker passes it; an
        embedding caller may pass ``None``): it must be the key of the body's template and
        operation, and one this dispatcher's bindings route, or nothing executes. ``credential``
        is the request's ``authorization`` header (:mod:`beds.auth`); the returned request's
        ``meta.principal`` is the principal it proves, whatever the sender wrote there.
        ``origin`` is the AMQP user RabbitMQ vouched for (the broker passes it, ``""`` when the
        message had none): it replaces ``meta.origin``. ``None`` (an embedding caller) keeps
        ``meta.origin`` as sent.

        A response whose error is transient (``RequestError.TRANSIENT``) was retried
        ``reliability.retry_attempts`` times already; the broker dead-letters a copy.
        """
        started = time.perf_counter()
        timings: dict[str, float] = {}
        # The credential first (a header, no body needed): the codec then puts the proven
        # principal in meta.principal while it builds the request. A refusal is answered after
        # decoding, so the reply and the lineage event still name the request.
        principal: Principal | None = None
        refused: Unauthenticated | None = None
        try:
            principal = authenticate(credential, self.authenticator)
        except Unauthenticated as exc:
            refused = exc
        try:
            request = decode_request(
                body,
                content_type,
                max_bytes=self.max_message_bytes,
                principal=principal.id if principal is not None else None,
                **({} if origin is None else {"origin": origin}),
            )
        except Exception as exc:  # a RequestError; anything else is a codec bug, still answered
            if not isinstance(exc, RequestError):
                report_bug(exc, "a request body failed to decode unexpectedly")
                exc = InternalError("the request could not be decoded; the node log has details")
            response = self._error(exc, "", started, timings)
            if self._trace is not None:
                self._trace.emit(request_event(self.node, self.env, None, response, started))
            return None, response
        event_id = request.meta.event_id or new_event_id(self.node, self.env)
        # Every log line made while the request runs carries its event id; with lineage on, its
        # records also become events. A request sent meanwhile (BedsClient) is its child.
        context: dict[str, Any] = {
            "event_id": event_id,
            "event_depth": request.meta.depth,
            "template": request.template,
        }
        if self._trace is not None:
            context["beds_events"] = self._trace.token
        cause = set_cause(Cause(event_id, request.meta.depth))
        try:
            with logger.contextualize(**context):
                response = await self._respond(
                    request, event_id, started, timings, route, (principal, refused)
                )
                if self._after is not None:
                    try:
                        await self._after.after_dispatch(request, response)
                    except Exception as exc:
                        report_bug(exc, "after-dispatch hook failed", event_id=event_id)
        finally:
            reset_cause(cause)
        if self._trace is not None:
            self._trace.emit(request_event(self.node, self.env, request, response, started))
        return request, response

    async def _respond(
        self,
        request: Request,
        event_id: str,
        started: float,
        timings: dict[str, float],
        route: str | None,
        authenticated: tuple[Principal | None, Unauthenticated | None],
    ) -> Response:
        principal, refused = authenticated
        try:
            if route is not None:
                check_route(request, route, self.bindings)
            if refused is not None:
                raise refused
            data = await self._execute(request, principal, event_id, timings)
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
        meta = self._meta(event_id, started, timings)
        if isinstance(data, Page):
            meta = attrs.evolve(meta, next=data.next, cached=data.cached)
            data = data.records
        elif isinstance(data, TicketPage):
            meta = attrs.evolve(meta, next=data.next)
            data = data.ticket
        elif isinstance(data, BatchAnswer):
            status, data = data.status, data.data
        return Response(ok=True, status=status, data=data, meta=meta)

    async def _execute(
        self,
        request: Request,
        principal: Principal | None,
        event_id: str,
        timings: dict[str, float],
    ) -> Any:
        builtin = self._builtin(request)
        if builtin is not None:
            return await builtin(request, principal)
        deadline = request.meta.deadline
        if deadline is not None and time.time() >= deadline:
            raise DeadlineExceeded("the request's deadline passed before it was executed")
        if request.template == TICKET_TEMPLATE:
            if request.operation is not Operation.TICKET:
                raise UnsupportedOperation(f"{TICKET_TEMPLATE} only answers ticket")
            return await self._calgon().ticket(request, principal, None)
        template, adapter = self.factory.resolve(request.template)
        batch = request.operation in BATCH_OPERATIONS
        if not batch:  # a batch binds each record itself (beds.dispatch.batch)
            request = admit(request, template, principal)
        ctx = CallContext(
            event_id=event_id,
            principal=request.meta.principal,
            identity=principal,
            deadline=deadline,
            origin=request.meta.origin,
        )
        if batch:
            return await serve_batch(self, request, template, adapter, ctx, principal, timings)
        await check_owner(request, template, adapter, ctx, principal)
        handler = self.handlers.get((template.name, request.operation)) if self.handlers else None
        if handler is not None:
            if self.services is None:
                raise InternalError(f"the handler of {template.name} needs the node's services")
            handled = HandlerCall(
                request=request,
                template=template,
                adapter=adapter,
                ctx=ctx,
                principal=principal,
                services=self.services,
            )
            if self._before is not None:
                await self._before.before_dispatch(request, template)
            handled_result = await self._call_store(
                request, template, adapter, ctx, partial(handler, handled), timings
            )
            if request.operation in WRITES:
                self._written_live(template, request, handled_result, ctx)
            return handled_result
        if request.operation is Operation.FETCH:
            return await self._fetch(request, template, adapter, ctx, timings)
        if request.operation is Operation.SUBMIT:
            if not template.long_operations:  # before asking for a ticket store
                raise UnsupportedOperation(f"template {template.name!r} declares no long operation")
            return await self._calgon().submit(request, template, ctx)
        if request.operation is Operation.TICKET:
            return await self._calgon().ticket(request, principal, template.access.admin_role)
        audited = partial(self._audited, request) if template.capabilities.audit else None
        ctx, call = plan_write(
            request, template, adapter, ctx, reliability=self.reliability, audited=audited
        )
        if self._before is not None:
            await self._before.before_dispatch(request, template)
        result = await self._call_store(request, template, adapter, ctx, call, timings)
        if self.cache is not None:
            await self.cache.written(template.name)
        self._written_live(template, request, result, ctx)
        return result

    def _written_live(
        self, template: Template, request: Request, result: Any, ctx: CallContext
    ) -> None:
        """A write succeeded: a live template's event goes out without delaying the reply."""
        if self.live is None or not template.capabilities.live:
            return
        identity = ctx.identity
        self.live.written(
            template,
            request,
            result,
            principal=identity.handle if identity is not None else None,
            trace_id=ctx.event_id,
        )

    async def _fetch(
        self,
        request: Request,
        template: Template,
        adapter: NamasteCore,
        ctx: CallContext,
        timings: dict[str, float],
    ) -> Page:
        query = validate_fetch(template, request.payload, self.cursors)
        if self._before is not None:
            await self._before.before_dispatch(request, template)

        async def store(call: Callable[[], Awaitable[Page]]) -> Page:
            page: Page = await self._call_store(request, template, adapter, ctx, call, timings)
            return page

        return await serve_fetch(
            template, adapter, query, ctx, cursors=self.cursors, cache=self.cache, store=store
        )

    def _calgon(self) -> Calgon:
        if self.calgon is None:
            raise UnsupportedOperation(
                "this node keeps no tickets: its calgon.store has no ticket store (docs/calgon.md)"
            )
        return self.calgon

    def _builtin(self, request: Request) -> Builtin | None:
        """The node's own answer to ``request`` (ping, admin templates), if it has one."""
        if request.operation is Operation.PING and request.template == PING_TEMPLATE:
            return self._pong
        return self.builtins.get(request.template) if self.builtins else None

    async def _pong(self, request: Request, principal: Principal | None) -> Any:
        return {"pong": self.node}

    async def _call_store(
        self,
        request: Request,
        template: Template,
        adapter: NamasteCore,
        ctx: CallContext,
        call: Callable[[], Awaitable[Any]],
        timings: dict[str, float],
        *,
        what: str | None = None,
    ) -> Any:
        """Run the store call within the deadline, retrying what is safe to retry; trace it.

        ``what`` names the database object in the ``db`` lineage event (default: the one the
        template binds to the request's operation).
        """
        operation = request.operation
        store_started = time.perf_counter()
        failure = ""
        try:
            result = await call_store(
                call,
                ctx,
                write=operation in WRITES or BATCH_OPERATIONS.get(operation) in WRITES,
                settings=self.reliability,
                on_retry=self._count_retry,
            )
        except RequestError as exc:
            failure = exc.CODE
            raise
        except BaseException:
            failure = InternalError.CODE
            raise
        finally:
            took = timings["store"] = round((time.perf_counter() - store_started) * 1000, 3)
            if self._trace is not None:
                call_event = child_event(
                    self.node,
                    self.env,
                    request,
                    ctx.event_id,
                    "db",
                    took,
                    f"{adapter.store} {operation.value} "
                    f"{store_object(template, request) if what is None else what}".rstrip(),
                )
                self._trace.emit(attrs.evolve(call_event, code=failure) if failure else call_event)
        logger.debug(
            "{} {} on {} took {:.1f} ms", operation.value, request.template, adapter.store, took
        )
        return result

    call_store = _call_store
    """The store call of a batch (:mod:`beds.dispatch.batch_store`)."""

    def _count_retry(self) -> None:
        self.retried += 1

    def audit_event(self, request: Request, ctx: CallContext) -> Event:
        """A new ``audit`` event of ``request`` (its data is set by the caller)."""
        return child_event(self.node, self.env, request, ctx.event_id, "audit", None)

    async def before_dispatch(self, request: Request, template: Template) -> None:
        """Run the plugins' before-dispatch hooks (nothing when none implements them)."""
        if self._before is not None:
            await self._before.before_dispatch(request, template)

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
        new_event = partial(self.audit_event, request, ctx)
        return await audit_write(
            self.events, new_event, request, template, adapter, record, ctx, write
        )

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
