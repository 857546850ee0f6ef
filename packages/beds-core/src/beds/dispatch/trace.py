"""The lineage events a request leaves, and the sink they go to.

One event for the request itself, and one for each thing it caused (its database call, its
audit record), each a child of the request's event. A database call's event names the database
object the template binds to the call (:func:`store_object`), so a tree shows ``rel create
spp_create``, not only which store ran.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from beds.envelopes import BATCH_OPERATIONS, Operation
from beds.lineage import Event, new_event_id

if TYPE_CHECKING:
    from beds.envelopes import Request, Response
    from beds.templates.model import Template

__all__ = ("EventSink", "child_event", "request_event", "store_object")

_OBJECT_KEYS = ("procedure", "function", "view", "collection")
"""Binding keys that name a database object, in the order one is preferred."""
_BATCH_KEY = "batch_procedure"
"""A write's binding key naming the store object that takes a whole batch (REL)."""


class EventSink(Protocol):
    """Where lineage events go (:class:`beds.transport.events.EventPublisher`)."""

    token: int
    """Bound to log records of requests handled here (``extra["beds_events"]``)."""

    def emit(self, event: Event) -> None:
        """Queue an event; never blocks."""

    async def publish_now(self, *events: Event) -> None:
        """Publish events and wait until they are safe (audit records).

        In as few messages as the sink's batches allow; raises ``EventsNotPublished`` naming
        those not taken.
        """


def request_event(
    node: str, env: str, request: Request | None, response: Response, started: float
) -> Event:
    """The event of one handled request (``request`` is ``None`` when it did not decode)."""
    meta = response.meta
    return Event(
        event_id=meta.event_id,
        parent_id=request.meta.parent_id if request is not None else "",
        depth=request.meta.depth if request is not None else 0,
        kind="request",
        node=node,
        env=env,
        at=time.time() - (time.perf_counter() - started),
        ms=meta.timings.get("total"),
        template=request.template if request is not None else "",
        operation=request.operation.value if request is not None else "",
        status=response.status,
        code=response.error.code if response.error is not None else "",
    )


def child_event(
    node: str,
    env: str,
    request: Request,
    parent: str,
    kind: str,
    ms: float | None,
    message: str = "",
) -> Event:
    """An event ``parent`` caused, started ``ms`` ago (or now)."""
    return Event(
        event_id=new_event_id(node, env),
        parent_id=parent,
        depth=request.meta.depth + 1,
        kind=kind,  # type: ignore[arg-type]
        node=node,
        env=env,
        at=time.time() - (ms or 0) / 1000,
        ms=ms,
        template=request.template,
        operation=request.operation.value,
        message=message,
    )


def store_object(template: Template, request: Request, *, batched: bool = True) -> str:
    """The database object a request's store call runs, by the template's declaration.

    The binding of the operation (or of the fetched query) names it: its ``procedure``,
    ``function``, ``view`` or ``collection``; else the template's store-wide ``collection``
    (REC). ``""`` when nothing names one (a memory store, a pipeline). A few dictionary
    lookups: lineage stays cheap.

    A batch names its single operation's object (``fetch_many``: the key query's), its
    ``batch_procedure`` first when the store serves the batch itself (``batched``).
    """
    operation = request.operation
    keys: tuple[str, ...] = _OBJECT_KEYS
    if operation is Operation.FETCH:
        name = request.payload.get("query", template.default_query)
        spec: Any = template.queries.get(name) if isinstance(name, str) else None
    elif operation is Operation.FETCH_MANY:
        spec = template.key_query()
    elif operation in BATCH_OPERATIONS:
        spec = template.operations.get(BATCH_OPERATIONS[operation])
        keys = (_BATCH_KEY, *_OBJECT_KEYS) if batched else _OBJECT_KEYS
    else:
        spec = template.operations.get(operation)
    binding = spec.binding if spec is not None else {}
    for key in keys:
        value = binding.get(key)
        if isinstance(value, str):
            return value
    collection = template.store_options.get("collection")
    return collection if isinstance(collection, str) else ""
