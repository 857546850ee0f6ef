"""Request bodies: content type, size and JSON nesting, checked before anything is sent.

A body is read only when it is declared JSON (``application/json``, UTF-8), never past
``http.max_body_bytes`` (a ``Content-Length`` over it is refused before a byte is read), and
decoded with orjson, then walked once to refuse nesting deeper than ``http.max_json_depth``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from beds_http.problems import EdgeRefusal

if TYPE_CHECKING:
    from starlette.requests import Request

    from beds_http.settings import HttpSettings

__all__ = ("json_depth", "read_json", "read_object")


def _content_type(request: Request) -> None:
    raw = request.headers.get("content-type")
    media, _, params = (raw or "").partition(";")
    charset = ""
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.lower() == "charset":
            charset = value.strip().strip('"').lower()
    if media.strip().lower() != "application/json" or charset not in ("", "utf-8"):
        raise EdgeRefusal(
            "BEDS-400",
            "the body must be JSON: send Content-Type: application/json (UTF-8)",
            reason="content_type",
            status=415,
        )


def _too_large(limit: int) -> EdgeRefusal:
    return EdgeRefusal(
        "BEDS-413", f"the body is larger than {limit} bytes", reason="body_size", status=413
    )


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise EdgeRefusal("BEDS-400", "Content-Length must be a number", reason="header")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def json_depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value`` (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


async def read_json(request: Request, settings: HttpSettings) -> Any:
    """The request's JSON body.

    Raises:
        EdgeRefusal: wrong content type (415), too large (413), not JSON or too deep (400).
    """
    _content_type(request)
    body = await _body(request, settings.max_body_bytes)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise EdgeRefusal("BEDS-400", "the body is not valid JSON (UTF-8)", reason="json") from None
    if json_depth(value) > settings.max_json_depth:
        raise EdgeRefusal(
            "BEDS-400",
            f"the body nests arrays and objects deeper than {settings.max_json_depth} levels",
            reason="json_depth",
        )
    return value


async def read_object(request: Request, settings: HttpSettings) -> dict[str, Any]:
    """The request's JSON body, which must be an object.

    Raises:
        EdgeRefusal: as :func:`read_json`, or the body is not an object (400).
    """
    value = await read_json(request, settings)
    if not isinstance(value, dict):
        raise EdgeRefusal("BEDS-400", "the body must be a JSON object", reason="json")
    return value
