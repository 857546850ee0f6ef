"""Live updates: templates with ``live = true`` publish ``record.changed`` after each write.

After a successful create, update or delete of a live template, the node publishes one control
event (:mod:`beds.transport.control`) of kind ``record.changed``::

    {"template": "post", "operation": "create", "key": {"id": 41},
     "record": {"id": 41, "author": "ann", "body": "hi", "created_at": "…Z"},
     "principal": "ann", "trace_id": "<the request's event id>", "at": "…Z"}

- ``record`` is the written params plus the returned fields, declared fields only (a handler's
  extra payload keys never travel), never a ``secret`` one (such templates cannot be live:
  :mod:`beds.templates.capabilities`). It is left out, ``key`` kept, when the event would be
  larger than the control channel takes (``ControlChannel.room``): readers fetch the record
  then.
- **Off the reply path.** The event is queued on the control channel's outbox and leaves with
  the loop turn's other publishes; the reply never waits for its confirm, and a failed
  publication is logged at warning and counted (``failed``, and the channel's
  ``beds_control_events_total{outcome="failed"}``), never failing the write. At most
  ``MAX_PENDING`` publications wait at once; beyond that an event is dropped and counted
  (``dropped``), so a stalled broker cannot make a node hoard memory.
- **Batches.** Each written item of a batch has the same ``record.changed`` data (its
  ``operation`` is the single one, ``create`` for a ``create_many``); they travel packed, in
  item order, as ``records.changed`` control events ``{"events": [data, ...]}``, each as full as
  the control channel takes: a 500-record batch costs RabbitMQ a few messages, not 500. Each
  item is encoded once, to measure it, and travels as that JSON (an ``orjson.Fragment`` in the
  pack's ``events``): ``publish`` receives data that ``orjson.dumps`` writes as it is.
- Every node reading the stream sees the event, with the trusted-origin rules of every control
  event; an HTTP edge filters what each caller may see (its fetch access, its owner's records).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson
from loguru import logger

from beds.values import to_wire_record

if TYPE_CHECKING:
    from beds.envelopes import Request
    from beds.templates.model import Template

__all__ = ("MAX_PENDING", "RECORDS_CHANGED", "RECORD_CHANGED", "LivePublisher", "record_changed")

RECORD_CHANGED: Final = "record.changed"
"""The control-event kind of a live template's write."""
RECORDS_CHANGED: Final = "records.changed"
"""The control-event kind of a batch's written items: ``{"events": [record.changed data, ...]}``,
in item order, as many per control event as fit."""
_PACK: Final = len(b'{"events":[]}')
MAX_PENDING: Final = 1000
"""Most publications one node keeps waiting at once."""

Publish = Callable[[str, dict[str, Any]], Awaitable[object]]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def record_changed(
    template: Template,
    request: Request,
    result: object,
    *,
    principal: str | None,
    trace_id: str,
    at: str | None = None,
) -> dict[str, Any]:
    """The ``record.changed`` data of a successful write (see the module docstring).

    Args:
        template: the written template.
        request: the request as it ran (its owner and principal params bound).
        result: what the store answered (its returned fields).
        principal: the authenticated principal's handle (``None``: anonymous).
        trace_id: the request's event id, which its lineage events share.
        at: when (ISO 8601 UTC); now by default.
    """
    return _changed(
        template,
        request.operation.value,
        request.payload,
        result,
        principal=principal,
        trace_id=trace_id,
        at=at,
    )


def _changed(
    template: Template,
    operation: str,
    payload: Mapping[str, Any],
    result: object,
    *,
    principal: str | None,
    trace_id: str,
    at: str | None = None,
) -> dict[str, Any]:
    public = template.public_fields
    record = to_wire_record({k: v for k, v in payload.items() if k in public})
    if isinstance(result, dict):  # an adapter's Record: its values are wire values already
        record.update({k: v for k, v in result.items() if k in public})
    return {
        "template": template.name,
        "operation": operation,
        "key": {name: record.get(name) for name in template.key},
        "record": record,
        "principal": principal,
        "trace_id": trace_id,
        "at": at or _now(),
    }


class LivePublisher:
    """Publishes the ``record.changed`` events of one node (see the module docstring).

    Args:
        publish: queues a control event and returns its confirm (``ControlChannel.send``: the
            events of one loop turn leave in one write); a coroutine function works too (each
            publication is then a task).
        room: the most bytes an event's data may take as JSON (``ControlChannel.room``).
        pack_room: the same for a ``records.changed`` event (default ``room``).
    """

    def __init__(self, publish: Publish, *, room: int, pack_room: int | None = None) -> None:
        self.publish = publish
        self.published = 0
        """Events RabbitMQ took (each item of a ``records.changed`` counts)."""
        self.failed = 0
        """Events RabbitMQ did not take (logged at warning)."""
        self.dropped = 0
        """Events not published because ``MAX_PENDING`` publications were waiting."""
        self.trimmed = 0
        """Events published without ``record`` (too large)."""
        self._pending: set[asyncio.Future[Any]] = set()
        self._room = room
        self._pack_room = room if pack_room is None else pack_room

    def written(
        self,
        template: Template,
        request: Request,
        result: object,
        *,
        principal: str | None,
        trace_id: str,
    ) -> None:
        """A write of ``template`` succeeded: publish its event, without waiting for it."""
        if self._full(1, template.name, request.operation.value):
            return
        data, _ = self._encoded(
            record_changed(template, request, result, principal=principal, trace_id=trace_id)
        )
        sent = self._send(RECORD_CHANGED, data, [data])
        if sent is not None:
            self._wait_for(sent)

    def written_many(
        self,
        template: Template,
        operation: str,
        written: Sequence[tuple[Mapping[str, Any], object]],
        *,
        principal: str | None,
        trace_id: str,
    ) -> None:
        """A batch wrote ``written`` (each item's payload and result): one event per item.

        The items' events travel packed, in item order, as few ``records.changed`` control
        events as fit (a 500-record batch in a few messages, not 500); the batch counts once
        against ``MAX_PENDING``.
        """
        if not written or self._full(len(written), template.name, operation):
            return
        at = _now()
        packs: list[list[orjson.Fragment]] = [[]]
        items: list[list[dict[str, Any]]] = [[]]  # each pack's, to count and name in logs
        size = _PACK
        alone = self._pack_room - _PACK  # an item alone in its pack fits
        for payload, result in written:
            data, encoded = self._encoded(
                _changed(
                    template,
                    operation,
                    payload,
                    result,
                    principal=principal,
                    trace_id=trace_id,
                    at=at,
                ),
                alone,
            )
            if packs[-1] and size + 1 + len(encoded) > self._pack_room:
                packs.append([])
                items.append([])
                size = _PACK
            packs[-1].append(orjson.Fragment(encoded))
            items[-1].append(data)
            size += 1 + len(encoded)
        confirms = [
            sent
            for pack, its in zip(packs, items, strict=True)
            if (sent := self._send(RECORDS_CHANGED, {"events": pack}, its)) is not None
        ]
        if confirms:
            self._wait_for(asyncio.gather(*confirms, return_exceptions=True))

    def _full(self, events: int, template: str, operation: str) -> bool:
        """Whether ``MAX_PENDING`` publications wait already (the events are dropped then)."""
        if len(self._pending) < MAX_PENDING:
            return False
        self.dropped += events
        logger.warning(
            "{} live event(s) of {} {} dropped: {} publications are waiting",
            events,
            template,
            operation,
            MAX_PENDING,
        )
        return True

    def _send(
        self, kind: str, data: dict[str, Any], events: Sequence[Mapping[str, Any]]
    ) -> asyncio.Future[Any] | None:
        """Queue one control event carrying ``events``; counted when RabbitMQ answers."""
        try:
            sent = asyncio.ensure_future(self.publish(kind, data))
        except Exception as exc:  # refused before it was queued (channel closed, too large)
            self._failed(events, exc)
            return None
        sent.add_done_callback(lambda done: self._settled(events, done))
        return sent

    def _wait_for(self, sent: asyncio.Future[Any]) -> None:
        self._pending.add(sent)
        sent.add_done_callback(self._pending.discard)

    def _settled(self, events: Sequence[Mapping[str, Any]], sent: asyncio.Future[Any]) -> None:
        if sent.cancelled():
            self._failed(events, asyncio.CancelledError())
        elif (exc := sent.exception()) is not None:
            self._failed(events, exc)
        else:
            self.published += len(events)

    def _failed(self, events: Sequence[Mapping[str, Any]], exc: BaseException) -> None:
        # The write is done and answered; a lost event never fails it.
        self.failed += len(events)
        logger.warning(
            "{} live event(s) of {} {} not published ({!r}); live views miss them",
            len(events),
            events[0]["template"],
            events[0]["operation"],
            exc,
        )

    def fit(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data``, without ``record`` when the event would exceed the channel's limit."""
        return self._encoded(data)[0]

    def _encoded(
        self, data: dict[str, Any], room: int | None = None
    ) -> tuple[dict[str, Any], bytes]:
        """:meth:`fit` (to ``room`` bytes when given), and what it returns as JSON."""
        encoded = orjson.dumps(data)
        if len(encoded) <= (self._room if room is None else room) or "record" not in data:
            return data, encoded
        self.trimmed += 1
        kept = {name: value for name, value in data.items() if name != "record"}
        return kept, orjson.dumps(kept)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the waiting publications (node stop)."""
        pending = set(self._pending)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            logger.warning("{} live events were not published before the node stopped", len(late))
