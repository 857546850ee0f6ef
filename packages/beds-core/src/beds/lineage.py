"""Event lineage: ids, the event record, batches on the wire, and one request's tree.

Every request is an event ``"{node}.{env}.{guid}"`` with a ``parent_id`` and a ``depth``; what
it causes (its database call, its log records, its audit records, requests it sends to other
templates) are child events. Nodes publish events in batches on the logs exchange; the admin
node's logs broker stores them (``msLogs``) through an :class:`EventStore`, and
:func:`collect_tree` reads one request's whole tree back (``beds lineage EVENT_ID``).
"""

from __future__ import annotations

import contextvars
import datetime as dt
import os
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable

import attrs
import orjson

from beds.codec import converter
from beds.envelopes import MAX_DEPTH

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = (
    "LINEAGE_TEMPLATE",
    "Cause",
    "Event",
    "EventKind",
    "EventPurger",
    "EventStore",
    "EventsNotPublished",
    "collect_tree",
    "current_cause",
    "decode_events",
    "encode_events",
    "format_tree",
    "new_event_id",
)

EventKind = Literal["request", "db", "log", "audit", "http"]
"""``http``: an HTTP request an edge (``beds http``) forwarded, the root of the BEDS requests it
sent (method, route template, status; ``data``: trace id and principal)."""
LINEAGE_TEMPLATE: Final = "beds_lineage"
"""The built-in template the admin node answers ``beds lineage`` with (routing ``*.admin``)."""


@attrs.frozen
class Cause:
    """The request a node is handling, as the parent of what the handling causes."""

    event_id: str
    depth: int


_cause: contextvars.ContextVar[Cause | None] = contextvars.ContextVar("beds_cause", default=None)


def current_cause() -> Cause | None:
    """The request being handled in this task, if any (the dispatcher sets it).

    A :class:`~beds.client.BedsClient` call made while a node handles a request (from an
    adapter, a dispatch hook or a built-in) takes it as its parent, so the request it sends to
    another template joins the same lineage tree one level down.
    """
    return _cause.get()


def set_cause(cause: Cause | None) -> contextvars.Token[Cause | None]:
    """Make ``cause`` the current one; pass the token to :func:`reset_cause` afterwards."""
    return _cause.set(cause)


def reset_cause(token: contextvars.Token[Cause | None]) -> None:
    """Restore the cause that was current before :func:`set_cause`."""
    _cause.reset(token)


def new_event_id(node: str, env: str) -> str:
    """Return a new event id made on ``node`` in environment ``env``.

    The guid is 128 random bits as 32 hex digits (``os.urandom``: a fifth of the cost of
    ``uuid.uuid4().hex``, which builds a UUID object; ids are made on every request).
    """
    return f"{node}.{env}.{os.urandom(16).hex()}"


@attrs.frozen(kw_only=True)
class Event:
    """One node of a lineage tree, as stored in ``msLogs``."""

    event_id: str
    parent_id: str = ""
    """The event that caused this one; empty for a root (a request from outside)."""
    depth: int = 0
    kind: EventKind
    node: str
    env: str
    at: float
    """Unix time (seconds, UTC) the event started."""
    ms: float | None = None
    """How long it took, in milliseconds (requests and database calls)."""
    template: str = ""
    operation: str = ""
    status: int = 0
    """The response status (requests), 0 otherwise."""
    code: str = ""
    """The error code, if the event failed; the level (``INFO``…) of a log record."""
    message: str = ""
    """What happened, in words (log records); the store, operation and database object called
    (database calls: ``rel create spp_create``); the route template (HTTP requests)."""
    data: dict[str, Any] | None = None
    """Audit records: principal, origin, key, before, after. HTTP requests: trace id,
    principal."""

    def to_record(self) -> dict[str, Any]:
        """A JSON-safe dict (the stored form; ``None`` fields left out)."""
        # Written out: attrs.asdict costs four times as much, and every event is encoded once.
        record: dict[str, Any] = {
            "event_id": self.event_id,
            "parent_id": self.parent_id,
            "depth": self.depth,
            "kind": self.kind,
            "node": self.node,
            "env": self.env,
            "at": self.at,
            "template": self.template,
            "operation": self.operation,
            "status": self.status,
            "code": self.code,
            "message": self.message,
        }
        if self.ms is not None:
            record["ms"] = self.ms
        if self.data is not None:
            record["data"] = self.data
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Event:
        """Rebuild an event from its stored form (unknown keys, such as ``_id``, ignored)."""
        names = {field.name for field in attrs.fields(cls)}
        return cls(**{key: value for key, value in record.items() if key in names})


class EventsNotPublished(Exception):
    """Some events a sink was asked to publish at once were not taken (the others were)."""

    def __init__(self, events: Sequence[Event], cause: BaseException) -> None:
        super().__init__(f"{len(events)} events not published: {cause!r}")
        self.events = list(events)


def encode_events(events: Sequence[Event]) -> bytes:
    """One batch of events as a message body (a JSON array of records)."""
    return orjson.dumps([event.to_record() for event in events])


def decode_events(body: bytes) -> list[Event]:
    """Decode a batch, strictly (the wire converter: types checked, no unknown keys).

    Raises:
        ValueError: the body is not a JSON array of event records.
    """
    try:
        items = orjson.loads(body)
        if type(items) is not list:
            raise TypeError("must be a JSON array")
        events: list[Event] = converter.structure(items, list[Event])
    except (orjson.JSONDecodeError, ValueError, TypeError, KeyError, BaseExceptionGroup) as exc:
        raise ValueError(f"not a batch of lineage events: {exc}") from None
    return events


@runtime_checkable
class EventStore(Protocol):
    """Where the admin node keeps events: an adapter that also implements these two methods."""

    async def store_events(self, events: Sequence[dict[str, Any]]) -> None:
        """Keep the events (records with ``event_id``); storing one twice keeps one copy."""

    async def find_events(
        self, *, event_ids: Sequence[str] = (), parent_ids: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """The events with these ids, and those whose parent is one of ``parent_ids``."""


@runtime_checkable
class EventPurger(Protocol):
    """An :class:`EventStore` that also forgets old events (``lineage.retention_days``).

    Optional: the logs broker purges through a store that has it, and keeps every event in one
    that has not.
    """

    async def purge_events(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` of the oldest events whose ``at`` is before ``before``.

        ``before`` is a Unix time; the answer is how many were deleted (fewer than ``limit``:
        none older is left).
        """


async def collect_tree(store: EventStore, event_id: str) -> list[Event]:
    """Every event of the tree ``event_id`` belongs to: up to its root, then all descendants.

    Returns them root first, each followed by its descendants (depth-first, by time).
    """
    found = await store.find_events(event_ids=[event_id])
    if not found:
        return []
    root = Event.from_record(found[0])
    for _ in range(MAX_DEPTH):  # up to the root (or the oldest stored ancestor)
        if not root.parent_id:
            break
        parents = await store.find_events(event_ids=[root.parent_id])
        if not parents:
            break
        root = Event.from_record(parents[0])
    tree = [root]
    level = [root.event_id]
    seen = {root.event_id}
    for _ in range(MAX_DEPTH + 1):  # down, one level per query
        children = [
            Event.from_record(record)
            for record in await store.find_events(parent_ids=level)
            if record.get("event_id") not in seen
        ]
        if not children:
            break
        seen.update(child.event_id for child in children)
        tree.extend(children)
        level = [child.event_id for child in children]
    return _depth_first(tree)


def _depth_first(events: list[Event]) -> list[Event]:
    by_parent: dict[str, list[Event]] = {}
    for event in events:
        by_parent.setdefault(event.parent_id, []).append(event)
    ordered: list[Event] = []

    def visit(event: Event) -> None:
        ordered.append(event)
        for child in sorted(by_parent.get(event.event_id, []), key=lambda e: e.at):
            visit(child)

    visit(events[0])
    return ordered


def format_tree(events: Sequence[Event]) -> str:
    """The tree as indented text lines with timings, for ``beds lineage``."""
    if not events:
        return ""
    start = events[0].at
    base = events[0].depth
    lines = []
    for event in events:
        indent = "  " * (event.depth - base)
        offset = f"+{(event.at - start) * 1000:.1f} ms"
        took = f" {event.ms:.1f} ms" if event.ms is not None else ""
        what = _describe(event)
        lines.append(f"{indent}{event.kind:<7} {what}{took}  [{offset}] {event.event_id}")
    return "\n".join(lines)


def _describe(event: Event) -> str:
    if event.kind == "request":
        outcome = event.code or str(event.status)
        return f"{event.operation} {event.template} → {outcome} on {event.node}"
    if event.kind == "db":
        failed = f" failed {event.code}" if event.code else ""
        return f"{event.message}{failed}"
    if event.kind == "http":
        data = event.data or {}
        who = f" by {data['principal']}" if data.get("principal") else ""
        trace = f" trace {data['trace_id']}" if data.get("trace_id") else ""
        return f"{event.operation} {event.message} → {event.code or event.status}{who}{trace}"
    if event.kind == "audit":
        return f"{event.operation} {event.template} {orjson.dumps(event.data).decode()}"
    return event.message


def utc_iso(at: float) -> str:
    """A Unix time as ISO 8601 UTC (for JSON output)."""
    return dt.datetime.fromtimestamp(at, tz=dt.UTC).isoformat()
