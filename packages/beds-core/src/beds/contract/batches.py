"""JSON Schemas of the batch operations' payloads and replies (docs/wire-contract.md, "Batches")."""

from __future__ import annotations

from typing import Any

from beds.contract.envelopes import response_schema

__all__ = ("batch_payload_schema", "batch_reply_schema")

MULTI_STATUS = 207
"""A batch where some items failed (the others succeeded)."""


def batch_payload_schema(
    items: str, item: dict[str, Any], limit: int, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``{items: [item, ...]}``: 1 to ``limit`` items (``extra``: other allowed keys)."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [items],
        "properties": {
            items: {"type": "array", "minItems": 1, "maxItems": limit, "items": item},
            **(extra or {}),
        },
    }


def batch_reply_schema(status: int, data: dict[str, Any]) -> dict[str, Any]:
    """The reply of a batch: ``status`` (all succeeded) or 207, one result per item."""
    error = {
        "type": "object",
        "required": ["code", "message", "details"],
        "properties": {
            "code": {"$ref": "#/components/schemas/ErrorCode"},
            "message": {"type": "string"},
            "details": {"type": "array", "items": {"type": "string"}},
        },
    }
    result = {
        "oneOf": [
            {
                "type": "object",
                "required": ["ok", "status", "data"],
                "properties": {"ok": {"const": True}, "status": {"const": status}, "data": data},
            },
            {
                "type": "object",
                "required": ["ok", "status", "error"],
                "properties": {
                    "ok": {"const": False},
                    "status": {"type": "integer"},
                    "error": error,
                },
            },
        ]
    }
    schema = response_schema(
        None,
        {
            "type": "object",
            "required": ["results", "succeeded", "failed"],
            "properties": {
                "results": {"type": "array", "items": result},
                "succeeded": {"type": "integer", "minimum": 0},
                "failed": {"type": "integer", "minimum": 0},
            },
        },
    )
    schema["properties"]["status"] = {"enum": [status, MULTI_STATUS]}
    return schema
