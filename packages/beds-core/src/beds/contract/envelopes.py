"""JSON Schemas of the v1 request and response envelopes (docs/wire-contract.md).

They mirror :mod:`beds.envelopes` and its limits: a request envelope is closed (unknown keys
are ``BEDS-400``), ``meta`` text is printable and at most 255 bytes in UTF-8 (a schema can
only count characters, so it says 255 characters and the description says bytes), ``depth`` is
0 to 64, a deadline a Unix time below 1e11. Responses are open where the contract lets them
grow (new ``meta`` and ``meta.timings`` keys within v1).
"""

from __future__ import annotations

from typing import Any, Final

from beds.envelopes import DEADLINE_RANGE, MAX_DEPTH, MAX_IDEMPOTENCY_KEY, MAX_META_BYTES, Operation
from beds.errors import error_catalogue

__all__ = (
    "TEMPLATE_NAME_PATTERN",
    "error_code_schema",
    "error_response_schema",
    "request_meta_schema",
    "request_schema",
    "response_meta_schema",
    "response_schema",
)

TEMPLATE_NAME_PATTERN: Final = "^[a-z][a-z0-9_]{0,62}$"
"""What a request's ``template`` may be (``beds.envelopes.TEMPLATE_NAME``)."""


def _text(description: str, *, nullable: bool = False) -> dict[str, Any]:
    return {
        "type": ["string", "null"] if nullable else "string",
        "maxLength": MAX_META_BYTES,
        "description": f"{description} Printable text, at most {MAX_META_BYTES} bytes in UTF-8.",
    }


def request_meta_schema() -> dict[str, Any]:
    """``meta`` of a request (:class:`beds.envelopes.RequestMeta`); every key is optional."""
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "event_id": _text('"{node}.{env}.{guid}"; empty: the broker assigns one.'),
            "parent_id": _text("The event that caused this one; empty for a root event."),
            "depth": {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_DEPTH,
                "description": "Levels below the root event.",
            },
            "correlation_id": _text("Mirrors the AMQP property, for logs."),
            "causation_id": _text("The message that directly caused this one."),
            "origin": _text("Replaced by the node with the AMQP user RabbitMQ vouches for."),
            "idempotency_key": {
                "type": ["string", "null"],
                "minLength": 1,
                "maxLength": MAX_IDEMPOTENCY_KEY,
                "pattern": r"^\S(.*\S)?$",
                "description": "A write with a key runs at most once per key while it is "
                f"remembered. 1 to {MAX_IDEMPOTENCY_KEY} printable characters, at most "
                f"{MAX_META_BYTES} bytes in UTF-8, no space at either end.",
            },
            "deadline": {
                "type": ["number", "null"],
                "exclusiveMinimum": DEADLINE_RANGE[0],
                "exclusiveMaximum": DEADLINE_RANGE[1],
                "description": "Unix time in seconds (UTC) after which the request is not run "
                "(BEDS-504).",
            },
            "principal": _text(
                "Ignored as sent: the node puts the principal the authorization header proves.",
                nullable=True,
            ),
        },
    }


def request_schema(
    operation: Operation | None = None,
    template: str | None = None,
    payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A request envelope, for one operation and template when given.

    Args:
        operation: fixes ``operation`` (``None``: any).
        template: fixes ``template`` (``None``: any template name).
        payload: the payload's schema (``None``: any object).
    """
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["operation", "template"],
        "properties": {
            "version": {"const": 1, "description": "Contract version."},
            "operation": (
                {"const": operation.value}
                if operation is not None
                else {"enum": [op.value for op in Operation]}
            ),
            "template": (
                {"const": template}
                if template is not None
                else {"type": "string", "pattern": TEMPLATE_NAME_PATTERN}
            ),
            "payload": payload if payload is not None else {"type": "object"},
            "meta": {"$ref": "#/components/schemas/RequestMeta"},
        },
    }


def response_meta_schema() -> dict[str, Any]:
    """``meta`` of a response (:class:`beds.envelopes.ResponseMeta`)."""
    return {
        "type": "object",
        "required": ["event_id", "node", "timings"],
        "properties": {
            "event_id": {
                "type": "string",
                "description": 'The request\'s event id ("" when it could not be decoded).',
            },
            "node": {"type": "string", "description": "The node that handled the request."},
            "timings": {
                "type": "object",
                "additionalProperties": {"type": "number"},
                "description": "Milliseconds per phase: store (when an adapter ran), total.",
            },
            "next": {
                "type": ["string", "null"],
                "description": "A fetch with more records: the next page's cursor.",
            },
            "cached": {
                "type": "boolean",
                "description": "The fetch was answered from the node's cache.",
            },
        },
    }


def error_code_schema() -> dict[str, Any]:
    """Every catalogue code (docs/errors.md); a client treats an unknown one by its status."""
    catalogue = error_catalogue()
    lines = "; ".join(f"{code}: {cls.STATUS}" for code, cls in catalogue.items())
    return {
        "type": "string",
        "enum": list(catalogue),
        "description": f"Catalogue code, with its status: {lines}.",
    }


def response_schema(
    status: int | None = None, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A successful response envelope (``ok`` true), with its status and ``data`` when given."""
    return {
        "type": "object",
        "required": ["version", "ok", "status", "data", "error", "meta"],
        "properties": {
            "version": {"const": 1},
            "ok": {"const": True},
            "status": {"const": status} if status is not None else {"type": "integer"},
            "data": data if data is not None else {},
            "error": {"type": "null"},
            "meta": {"$ref": "#/components/schemas/ResponseMeta"},
        },
    }


def error_response_schema() -> dict[str, Any]:
    """An error response envelope (``ok`` false, ``error`` set, ``data`` null)."""
    statuses = sorted({cls.STATUS for cls in error_catalogue().values()})
    return {
        "type": "object",
        "required": ["version", "ok", "status", "data", "error", "meta"],
        "properties": {
            "version": {"const": 1},
            "ok": {"const": False},
            "status": {"enum": statuses},
            "data": {"type": "null"},
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"$ref": "#/components/schemas/ErrorCode"},
                    "message": {
                        "type": "string",
                        "description": "What went wrong; deterministic (no ids or timestamps).",
                    },
                    "details": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Field-level problems, in a stable order.",
                    },
                },
            },
            "meta": {"$ref": "#/components/schemas/ResponseMeta"},
        },
    }
