"""Errors as RFC 9457 problem documents (``application/problem+json``).

Every error the edge answers, its own refusals and a node's error replies alike, is one shape::

    {"type": "urn:beds:error:BEDS-422", "title": "The payload does not match the template's
     declaration", "status": 422, "detail": "...", "code": "BEDS-422",
     "details": ["params.limit: ..."], "instance": "/v1/spew_post/home", "trace_id": "..."}

``type`` is a URN rather than a web address: it names the catalogue code (docs/errors.md)
without promising a page on a domain. ``title`` is the catalogue's one-line meaning of the code
(the first sentence of its class docstring), the same for every instance of the code.

The HTTP status is the catalogue's ``STATUS``, except for refusals that HTTP has a finer word
for and the catalogue does not: a wrong content type is ``BEDS-400`` with status 415, and a
transport failure between the edge and RabbitMQ is ``BEDS-503`` (no reply possible) or
``BEDS-504`` (no reply in time).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Final

import orjson
from starlette.responses import Response

from beds.errors import (
    BrokerUnavailable,
    DeadlineExceeded,
    InternalError,
    PublishError,
    ReplyTimeout,
    RequestError,
    StoreUnavailable,
    TransportError,
    error_catalogue,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from beds.envelopes import ErrorBody

__all__ = (
    "PROBLEM_TYPE",
    "EdgeRefusal",
    "catalogue_title",
    "problem_document",
    "problem_of_error",
    "problem_response",
)

PROBLEM_TYPE: Final = "urn:beds:error:"
"""The ``type`` of a problem is this prefix and its catalogue code."""
MEDIA_TYPE: Final = "application/problem+json"


class EdgeRefusal(Exception):
    """A request the edge refuses itself: it never reaches a node.

    Attributes:
        code: the catalogue code.
        status: the HTTP status (the code's ``STATUS`` unless HTTP has a finer one).
        reason: the ``beds_http_refused_total`` label (``body``, ``content_type``…).
        details: field-level messages, in a stable order.
        headers: extra response headers (``Allow``).
    """

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        reason: str,
        status: int | None = None,
        details: Iterable[str] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.reason = reason
        self.status = status if status is not None else status_of(code)
        self.details = tuple(details)
        self.headers = headers or {}


@functools.cache
def catalogue_title(code: str) -> str:
    """The one-line meaning of a catalogue code (its class docstring's first sentence)."""
    kind = error_catalogue().get(code)
    if kind is None or not kind.__doc__:
        return "Error"
    first = kind.__doc__.strip().split("\n\n", 1)[0].replace("\n", " ")
    return first.split(". ", 1)[0].rstrip(".")


def status_of(code: str) -> int:
    """The HTTP status of a catalogue code (500 for a code this edge does not know)."""
    kind = error_catalogue().get(code)
    return kind.STATUS if kind is not None else 500


def problem_document(
    code: str,
    detail: str,
    *,
    status: int,
    instance: str,
    trace_id: str,
    details: Iterable[str] = (),
) -> dict[str, Any]:
    """The problem+json document of one error."""
    document: dict[str, Any] = {
        "type": PROBLEM_TYPE + code,
        "title": catalogue_title(code),
        "status": status,
        "detail": detail,
        "code": code,
        "instance": instance,
        "trace_id": trace_id,
    }
    details = tuple(details)
    if details:
        document["details"] = list(details)
    return document


def problem_response(
    document: dict[str, Any], *, headers: dict[str, str] | None = None
) -> Response:
    """A response carrying ``document`` with its status."""
    return Response(
        orjson.dumps(document),
        status_code=int(document["status"]),
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def problem_of_error(
    error: ErrorBody | RequestError | TransportError | EdgeRefusal,
    *,
    instance: str,
    trace_id: str,
    status: int | None = None,
) -> dict[str, Any]:
    """The problem document of a node's error reply, a raised error, or an edge refusal."""
    if isinstance(error, EdgeRefusal):
        code, detail, details = error.code, error.detail, error.details
        status = error.status
    elif isinstance(error, RequestError):
        code, detail, details = error.CODE, error.message, error.details
    elif isinstance(error, TransportError):
        code, detail, details = _transport(error), _transport_detail(error), ()
    else:
        code, detail, details = error.code, error.message, error.details
    return problem_document(
        code,
        detail,
        status=status if status is not None else status_of(code),
        instance=instance,
        trace_id=trace_id,
        details=details,
    )


def _transport(error: TransportError) -> str:
    if isinstance(error, ReplyTimeout):
        return DeadlineExceeded.CODE
    if isinstance(error, BrokerUnavailable | PublishError):
        return StoreUnavailable.CODE
    return InternalError.CODE


def _transport_detail(error: TransportError) -> str:
    # Fixed words: a transport error's own message may name hosts and exchanges.
    if isinstance(error, ReplyTimeout):
        return "no node answered in time; a write may or may not have run"
    if isinstance(error, PublishError):
        return "no node serves this template and operation now"
    if isinstance(error, BrokerUnavailable):
        return "the edge cannot reach RabbitMQ now; try again shortly"
    return "the edge failed to send the request"
