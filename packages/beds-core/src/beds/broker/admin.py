"""The templates an admin node answers itself: ``beds_lineage`` (``beds lineage EVENT_ID``).

They are routed with the class ``admin`` (``beds_lineage.admin``), which only admin brokers bind
(``*.admin``), and read the lineage store the admin node's logs brokers fill.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from beds.envelopes import Operation
from beds.errors import NotFound, UnsupportedOperation, ValidationFailed
from beds.lineage import LINEAGE_TEMPLATE, collect_tree

if TYPE_CHECKING:
    from beds.auth.principal import Principal
    from beds.dispatch import Builtin
    from beds.envelopes import Request
    from beds.lineage import EventStore

__all__ = ("admin_templates",)

_MAX_EVENT_ID = 300


def admin_templates(store: EventStore) -> dict[str, Builtin]:
    """The admin node's own templates, reading events from ``store``."""

    async def lineage(request: Request, principal: Principal | None) -> list[dict[str, Any]]:
        if request.operation is not Operation.FETCH:
            raise UnsupportedOperation(f"{LINEAGE_TEMPLATE} only supports fetch")
        event_id = _event_id(request.payload)
        tree = await collect_tree(store, event_id)
        if not tree:
            raise NotFound("no stored event has that id", details=(f"event_id: {event_id}",))
        return [event.to_record() for event in tree]

    return {LINEAGE_TEMPLATE: lineage}


def _event_id(payload: dict[str, Any]) -> str:
    unknown = sorted(set(payload) - {"params", "query", "limit"})
    if unknown:
        raise ValidationFailed(
            "the payload has unknown keys", details=tuple(f"$.payload.{key}" for key in unknown)
        )
    params = payload.get("params")
    event_id = params.get("event_id") if isinstance(params, dict) else None
    if not isinstance(event_id, str) or not 0 < len(event_id) <= _MAX_EVENT_ID:
        raise ValidationFailed(
            "the lineage query needs an event id",
            details=(
                f"$.payload.params.event_id: must be text of 1 to {_MAX_EVENT_ID} characters",
            ),
        )
    return event_id
