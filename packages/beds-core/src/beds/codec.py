"""The one wire codec: envelopes ↔ JSON bytes (cattrs + orjson), with size limits.

Every undecodable input becomes a :class:`~beds.errors.RequestError` with a catalogue code and
deterministic details; no other exception leaves :func:`decode_request`.
"""

from __future__ import annotations

from typing import Any, Final, TypeVar

import cattrs
import orjson
from cattrs.preconf.orjson import make_converter

from beds.envelopes import Request, Response
from beds.errors import MalformedRequest, PayloadTooLarge

__all__ = (
    "CONTENT_TYPE",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "converter",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "make_wire_converter",
)

CONTENT_TYPE: Final = "application/json"
DEFAULT_MAX_MESSAGE_BYTES: Final = 1024 * 1024
_ACCEPTED_CONTENT_TYPES: Final = frozenset({CONTENT_TYPE, "application/json; charset=utf-8", ""})

_T = TypeVar("_T")


def make_wire_converter() -> cattrs.Converter:
    """Build the converter used on the wire: extra keys are errors, details are collected."""
    return make_converter(forbid_extra_keys=True, detailed_validation=True)


converter: Final = make_wire_converter()


def _details(exc: Exception) -> tuple[str, ...]:
    if isinstance(exc, cattrs.BaseValidationError):
        return tuple(sorted(cattrs.transform_error(exc, path="$")))
    return (str(exc),)


def _decode(kind: type[_T], body: bytes, content_type: str | None, max_bytes: int) -> _T:
    if len(body) > max_bytes:
        raise PayloadTooLarge(
            "message body is larger than the limit",
            details=(f"limit is {max_bytes} bytes, body has {len(body)}",),
        )
    if (content_type or "") not in _ACCEPTED_CONTENT_TYPES:
        raise MalformedRequest(
            "unsupported content type", details=(f"expected {CONTENT_TYPE}, got {content_type}",)
        )
    try:
        raw: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest("message body is not valid JSON", details=(str(exc),)) from exc
    if not isinstance(raw, dict):
        raise MalformedRequest(
            "message body must be a JSON object", details=(f"got {type(raw).__name__}",)
        )
    try:
        return converter.structure(raw, kind)
    except Exception as exc:  # cattrs raises many kinds; all mean "wrong envelope shape"
        raise MalformedRequest(
            f"message body is not a valid {kind.__name__} envelope", details=_details(exc)
        ) from exc


def decode_request(
    body: bytes,
    content_type: str | None = CONTENT_TYPE,
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Request:
    """Decode a request body.

    Raises:
        PayloadTooLarge: the body is over ``max_bytes``.
        MalformedRequest: anything else that is not a valid v1 request envelope.
    """
    return _decode(Request, body, content_type, max_bytes)


def decode_response(
    body: bytes,
    content_type: str | None = CONTENT_TYPE,
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Response:
    """Decode a response body (client side); same errors as :func:`decode_request`."""
    return _decode(Response, body, content_type, max_bytes)


def encode_request(request: Request) -> bytes:
    """Encode a request envelope."""
    return orjson.dumps(converter.unstructure(request))


def encode_response(response: Response) -> bytes:
    """Encode a response envelope. Data must already be JSON-safe (see :mod:`beds.values`)."""
    return orjson.dumps(converter.unstructure(response))
