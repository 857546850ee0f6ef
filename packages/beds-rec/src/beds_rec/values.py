"""BEDS values ↔ BSON values, including the ``_id`` rule.

The ``_id`` rule: ``_id`` is the store's private ``ObjectId``. It is never accepted from a
request (no field may be named ``_id``). When a template declares a *generated* field named
``id``, that field is the 24-hex text of ``_id``: returned as text, and converted back to an
``ObjectId`` when a query parameter or key names it (text that is not 24 hexadecimal
characters is ``ValidationFailed``). Otherwise ``_id`` is never returned, and every projection
excludes it.

Decimals are stored as BSON ``Decimal128`` (34 significant digits); datetimes as BSON dates
(millisecond precision, UTC). A ``json`` field's value is stored as it is (a document, an array,
a scalar), except that its object keys must be MongoDB field names: a key starting with ``$``
would turn an equality filter into an operator, and ``.`` or NUL cannot be stored, so those are
``ValidationFailed``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, DecimalException
from typing import TYPE_CHECKING, Any

from bson.codec_options import CodecOptions
from bson.decimal128 import Decimal128
from bson.objectid import ObjectId

from beds.errors import ValidationFailed
from beds.values import to_wire_record

if TYPE_CHECKING:
    from beds.namaste import Record

__all__ = (
    "CODEC_OPTIONS",
    "DOC_ID",
    "ID_FIELD",
    "from_bson",
    "object_id",
    "to_bson",
    "to_record",
    "utc_now",
)

ID_FIELD = "id"
"""The template field that, when generated, exposes ``_id``."""
DOC_ID = "_id"

CODEC_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(
    document_class=dict, tz_aware=True, tzinfo=dt.UTC
)
"""Decode BSON dates as aware UTC datetimes."""

_HEX24 = re.compile(r"^[0-9A-Fa-f]{24}$")


def object_id(value: Any, *, path: str, template: str) -> ObjectId:
    """Convert the wire form of an ``id`` (24 hexadecimal characters) to an ``ObjectId``.

    Args:
        value: the request's value.
        path: where the value sits in the request, for the error detail.
        template: the template's name, for the error message.

    Raises:
        ValidationFailed: ``value`` is not 24 hexadecimal characters.
    """
    if isinstance(value, str) and _HEX24.match(value):
        return ObjectId(value)
    raise ValidationFailed(
        f"payload does not match template {template!r}",
        details=(f"{path}: must be 24 hexadecimal characters",),
    )


def _bad_key(value: Mapping[str, Any] | list[Any]) -> bool:
    """Whether a JSON value holds an object key that is not a MongoDB field name."""
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, Mapping):
            if any(key.startswith("$") or "." in key or "\0" in key for key in item):
                return True
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def to_bson(value: Any, *, path: str, template: str) -> Any:
    """Convert a validated request value to the value stored in MongoDB.

    Raises:
        ValidationFailed: a decimal that does not fit ``Decimal128``, or a ``json`` value with
            an object key that starts with ``$`` or holds ``.`` or NUL.
    """
    if isinstance(value, Mapping | list) and _bad_key(value):
        raise ValidationFailed(
            f"payload does not match template {template!r}",
            details=(
                f"{path}: must have object keys that are MongoDB field names (not starting with "
                "'$', without '.' or NUL)",
            ),
        )
    if isinstance(value, Decimal):
        try:
            return Decimal128(value)
        except DecimalException:
            raise ValidationFailed(
                f"payload does not match template {template!r}",
                details=(f"{path}: must have at most 34 significant digits",),
            ) from None
    return value


def from_bson(value: Any) -> Any:
    """Replace the BSON-only types in a stored value (``ObjectId``, ``Decimal128``)."""
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, Mapping):
        return {key: from_bson(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [from_bson(item) for item in value]
    return value


def to_record(document: Mapping[str, Any], names: Iterable[str], *, id_mapped: bool) -> Record:
    """Build the wire record of ``names`` from a stored document.

    Args:
        document: the document as the driver returned it.
        names: the template fields to return, in order; a field the document lacks is ``None``.
        id_mapped: whether the field ``id`` is the text of ``_id`` (the ``_id`` rule).
    """
    record = {
        name: document.get(DOC_ID if id_mapped and name == ID_FIELD else name) for name in names
    }
    return to_wire_record(from_bson(record))


def utc_now() -> dt.datetime:
    """Return the current UTC time truncated to milliseconds, the precision BSON stores."""
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond - now.microsecond % 1000)
