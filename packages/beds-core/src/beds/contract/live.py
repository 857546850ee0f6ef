"""JSON Schemas of the control events that live templates publish.

``record.changed`` (one write) and ``records.changed`` (a batch's written items, packed:
``{"events": [record.changed data, ...]}``) travel on the live exchange
(``{amqp.control_exchange}.live``, topic, the kind as routing key) inside the control-event
envelope; :mod:`beds.dispatch.live` writes their ``data``. A reader binds a queue of its own
with both routing keys (or reads the environment's live stream, ``beds.{env}.live``) to follow
every write of the ``live = true`` templates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from beds.dispatch.live import RECORD_CHANGED, RECORDS_CHANGED

if TYPE_CHECKING:
    from collections.abc import Sequence

    from beds.templates.model import Template

__all__ = ("record_changed_schema", "records_changed_schema")


def record_changed_schema(templates: Sequence[Template]) -> dict[str, Any]:
    """The whole ``record.changed`` event (envelope and data) of the live ``templates``."""
    return _envelope(RECORD_CHANGED, _change(templates))


def records_changed_schema(templates: Sequence[Template]) -> dict[str, Any]:
    """The whole ``records.changed`` event: a batch's items, in item order."""
    data = {
        "type": "object",
        "required": ["events"],
        "properties": {"events": {"type": "array", "minItems": 1, "items": _change(templates)}},
    }
    return _envelope(RECORDS_CHANGED, data)


def _change(templates: Sequence[Template]) -> dict[str, Any]:
    """The data of one written record."""
    text = {"type": "string"}
    records = [{"$ref": f"#/components/schemas/{template.name}"} for template in templates]
    return {
        "type": "object",
        "required": ["template", "operation", "key", "principal", "trace_id", "at"],
        "properties": {
            "template": {"enum": [template.name for template in templates]},
            "operation": {"enum": ["create", "update", "delete"]},
            "key": {"type": "object", "description": "The written record's key fields."},
            "record": {
                "anyOf": records,
                "description": "The written fields and the returned ones, never a secret one; "
                "left out when the event would be too large (fetch the record by its key).",
            },
            "principal": {
                "type": ["string", "null"],
                "description": "The writer's handle; null when anonymous.",
            },
            "trace_id": {**text, "description": "The request's event id (its lineage)."},
            "at": {**text, "format": "date-time"},
        },
    }


def _envelope(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """The control-event envelope around ``data``."""
    text = {"type": "string"}
    return {
        "type": "object",
        "required": ["version", "kind", "id", "origin", "env", "at", "data"],
        "properties": {
            "version": {"const": 1},
            "kind": {"const": kind},
            "id": {**text, "description": "The event's id (also its AMQP message_id)."},
            "origin": {**text, "description": "The publishing node's name."},
            "env": {**text, "description": "The environment (node.env)."},
            "at": {"type": "number", "description": "Unix time it was published."},
            "data": data,
        },
    }
