"""JSON Schema of the ``record.changed`` control event that live templates publish.

The event travels on the control exchange (``amqp.control_exchange``, topic, routing key
``record.changed``) inside the control-event envelope; :mod:`beds.dispatch.live` writes its
``data``. A reader binds a queue of its own (or reads the environment's control stream) to
follow the writes of every ``live = true`` template.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from beds.dispatch.live import RECORD_CHANGED

if TYPE_CHECKING:
    from collections.abc import Sequence

    from beds.templates.model import Template

__all__ = ("record_changed_schema",)


def record_changed_schema(templates: Sequence[Template]) -> dict[str, Any]:
    """The whole event (envelope and data) of the live ``templates``' writes."""
    text = {"type": "string"}
    records = [{"$ref": f"#/components/schemas/{template.name}"} for template in templates]
    data = {
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
    return {
        "type": "object",
        "required": ["version", "kind", "id", "origin", "env", "at", "data"],
        "properties": {
            "version": {"const": 1},
            "kind": {"const": RECORD_CHANGED},
            "id": {**text, "description": "The event's id (also its AMQP message_id)."},
            "origin": {**text, "description": "The publishing node's name."},
            "env": {**text, "description": "The environment (node.env)."},
            "at": {"type": "number", "description": "Unix time it was published."},
            "data": data,
        },
    }
