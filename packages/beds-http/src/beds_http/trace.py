"""W3C trace context in and out, and the other request headers the edge reads as text.

A request's ``traceparent`` (``00-<trace id>-<parent id>-<flags>``) names the caller's trace;
the edge continues it, or starts one when the header is absent or malformed (as the W3C
recommendation says: an invalid ``traceparent`` is ignored). Each HTTP request is one lineage
event, ``"<origin>.<env>.<trace id>-<span id>"`` (the span id is the edge's own, new for each
HTTP request: one trace may span many HTTP requests, each its own tree), recorded by
:mod:`beds_http.lineage`; every BEDS request the edge sends for it has that id as its
``meta.parent_id``. The response's ``traceparent`` carries the trace id with the edge's span
id, and ``X-Beds-Event-Id`` the node's event id of the (last) request, for ``beds lineage``.

A header holding control characters or non-ASCII text (CR/LF injection) is refused, whichever
header it is: such a value is never copied into a reply, a log or a request.
"""

from __future__ import annotations

import os
import re
from typing import Final

import attrs

from beds_http.problems import EdgeRefusal

__all__ = ("TraceContext", "check_header_text", "idempotency_key", "request_id", "trace_of")

_TRACEPARENT: Final = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
MAX_IDEMPOTENCY_KEY: Final = 200


@attrs.frozen
class TraceContext:
    """One request's trace: the caller's (or a new) trace id and the edge's span id."""

    trace_id: str
    span_id: str
    sampled: bool = True

    @property
    def traceparent(self) -> str:
        """The ``traceparent`` response header."""
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    def parent_event(self, origin: str, env: str) -> str:
        """This HTTP request's lineage event id: the parent of the BEDS requests sent for it."""
        return f"{origin}.{env}.{self.trace_id}-{self.span_id}"


def check_header_text(name: str, value: str) -> None:
    """Refuse a header value with control characters or non-ASCII text.

    Raises:
        EdgeRefusal: ``BEDS-400``, reason ``header``.
    """
    if not (value.isascii() and value.isprintable()):
        raise EdgeRefusal(
            "BEDS-400",
            f"header {name} holds control characters or non-ASCII text",
            reason="header",
        )


def trace_of(header: str | None) -> TraceContext:
    """The trace a request continues (or a new one): see the module docstring.

    Raises:
        EdgeRefusal: the header holds control characters.
    """
    span = os.urandom(8).hex()
    if header is not None:
        check_header_text("traceparent", header)
        found = _TRACEPARENT.fullmatch(header.strip())
        if found is not None:
            version, trace_id, parent, flags = found.groups()
            if version != "ff" and trace_id != "0" * 32 and parent != "0" * 16:
                return TraceContext(trace_id, span, sampled=bool(int(flags, 16) & 1))
    return TraceContext(os.urandom(16).hex(), span)


def idempotency_key(header: str | None) -> str | None:
    """The ``Idempotency-Key`` header as a BEDS idempotency key (``None`` when absent).

    Raises:
        EdgeRefusal: not 1 to 200 printable ASCII characters without a space at either end.
    """
    if header is None:
        return None
    check_header_text("Idempotency-Key", header)
    if not 0 < len(header) <= MAX_IDEMPOTENCY_KEY or header != header.strip():
        raise EdgeRefusal(
            "BEDS-400",
            f"header Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII "
            "characters without a space at either end",
            reason="header",
        )
    return header


def request_id(header: str | None) -> str | None:
    """The ``X-Request-Id`` header, echoed in the response (``None`` when absent).

    Raises:
        EdgeRefusal: not 1 to 128 of letters, digits and ``._:@/+=-``.
    """
    if header is None:
        return None
    check_header_text("X-Request-Id", header)
    if not _REQUEST_ID.fullmatch(header):
        raise EdgeRefusal(
            "BEDS-400",
            "header X-Request-Id must be 1 to 128 of letters, digits and ._:@/+=-",
            reason="header",
        )
    return header
