"""The one rule that turns database values into JSON-safe wire values.

=====================  =====================================================
database value         wire value
=====================  =====================================================
``datetime``           ISO 8601 text in UTC with ``Z``; naive values are UTC
``date`` / ``time``    ISO 8601 text
``Decimal``            text (keeps every digit; floats would round)
``bytes``              base64 text
``UUID``               canonical text
str/int/float/bool     unchanged; ``None`` → ``null``; integers beyond 64 bits → text
mapping / sequence     converted element by element
anything else          ``str(value)`` — adapters convert their own types first
=====================  =====================================================

Adapters call :func:`to_wire` on every value they return, after mapping driver-specific types
(for example MongoDB ``ObjectId``) themselves. :func:`json_problem` says whether a value of a
``json`` field is one JSON value that every store can keep and give back unchanged.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

__all__ = ("MAX_JSON_DEPTH", "json_problem", "json_type", "to_wire", "to_wire_record")

_PLAIN = (str, bool, type(None))
_INT_MIN, _INT_END = -(2**63), 2**64
"""Integers orjson can write: signed and unsigned 64-bit."""
MAX_JSON_DEPTH = 32
"""Most levels of arrays and objects in a ``json`` field's value (the outermost is level 1)."""


def _datetime_to_wire(value: dt.datetime) -> str:
    if value.tzinfo is None:  # UTC, as the stores give it: the common case, made short
        return f"{value.isoformat()}Z"
    try:
        value = value.astimezone(dt.UTC)
    except OverflowError:  # within hours of year 1 or 9999: keep the original offset
        return value.isoformat()
    return value.isoformat().replace("+00:00", "Z")


def to_wire(value: Any) -> Any:
    """Convert one value by the rule in the module docstring."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, int):
        return value if _INT_MIN <= value < _INT_END else str(value)
    if isinstance(value, float):
        return value if type(value) is float else float(value)  # orjson rejects subclasses
    if isinstance(value, dt.datetime):
        return _datetime_to_wire(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_wire(v) for v in value]
    return str(value)


_AS_IS = frozenset((str, bool, type(None), float))
"""Types :func:`to_wire` returns unchanged (exactly these: not their subclasses)."""


def to_wire_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """Convert every value of a record (the usual values are checked by type alone)."""
    return {
        key: value
        if type(value) in _AS_IS or (type(value) is int and _INT_MIN <= value < _INT_END)
        else to_wire(value)
        for key, value in record.items()
    }


_JSON_TYPES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
    type(None): "null",
}


def json_type(value: object) -> str:
    """Name a decoded JSON value's type as JSON does, for messages: ``"array"``, ``"null"``."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def json_problem(value: Any) -> str | None:
    """Why ``value`` is not a JSON value a ``json`` field may hold, or ``None`` when it is.

    A JSON value is ``None``, a bool, a string, an integer that fits in a signed 64-bit
    integer (what MongoDB stores and every JSON reader takes exactly), a finite float, a list of
    JSON values, or a dict with string keys and JSON values, nested at most
    :data:`MAX_JSON_DEPTH` levels. The walk is iterative, so no value can exhaust the stack, and
    its first problem (in a fixed order) is the one reported.
    """
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if item is None or isinstance(item, bool | str):
            continue
        if isinstance(item, int):
            if not _INT_MIN <= item < 2**63:
                return "must hold integers of at most 64 bits (signed)"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "must hold finite numbers (no NaN or Infinity)"
        elif isinstance(item, list | dict):
            if depth == MAX_JSON_DEPTH:
                return f"must nest arrays and objects at most {MAX_JSON_DEPTH} levels deep"
            if isinstance(item, dict):
                if not all(isinstance(key, str) for key in item):
                    return "must have objects with string keys"
                item = list(item.values())
            pending.extend((element, depth + 1) for element in reversed(item))
        else:
            return f"must be a JSON value, got {json_type(item)}"
    return None
