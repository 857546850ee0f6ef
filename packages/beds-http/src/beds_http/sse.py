"""Server-Sent Events framing (the WHATWG ``text/event-stream`` format) and its response.

A plain :class:`~starlette.responses.StreamingResponse`: an event is three short lines, and
Starlette already ends the generator when the client disconnects, so no SSE library is needed
(docs/dependencies.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import orjson
from starlette.responses import StreamingResponse

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ("KEEPALIVE", "MEDIA_TYPE", "event_stream", "sse_event")

MEDIA_TYPE: Final = "text/event-stream"
KEEPALIVE: Final = b": keep-alive\n\n"
"""A comment line: keeps proxies from closing an idle stream, ignored by readers."""


def sse_event(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One event; ``data`` as one line of JSON (orjson never writes a newline)."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


def event_stream(
    chunks: AsyncIterator[bytes], headers: dict[str, str] | None = None
) -> StreamingResponse:
    """A streaming response of ``chunks``, uncached and unbuffered by proxies."""
    return StreamingResponse(
        chunks,
        media_type=MEDIA_TYPE,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no", **(headers or {})},
    )
