"""The HTTP group's load generator: ``benchmarks.load`` with an HTTP/1.1 target and a SPEW one.

How to plug in: nothing to wire; :mod:`benchmarks.http_edge` runs it as
``python -m benchmarks.http_load SPEC_JSON`` (the spec of ``benchmarks.load``: points, repeats,
warm-up, watched processes) and reads its JSON line. Targets it adds:

- ``http``: a small HTTP/1.1 client written on asyncio streams, keep-alive, one connection
  per request in flight (reused, opened on demand, dropped after an error or
  ``Connection: close``), so that what it costs per request stays small and the same for the
  edge and the peer app. As real clients do (httpx's ``keepalive_expiry``, aiohttp's
  ``keepalive_timeout``), it never sends on a connection that sat idle ``max_idle`` seconds
  (:data:`MAX_IDLE`, well below the 5 s after which uvicorn, the edge's and the peer's server,
  closes an idle one) or that the server already closed: such a connection is dropped and
  another opened. Nothing is ever sent twice: a request that fails counts as an error (a
  create retried could run twice). ``params``: ``host``, ``port``, ``method``, ``path``,
  ``body`` (JSON, optional), ``token_file`` (a Bearer token read from this file, optional),
  ``status`` (the status a right reply has), ``records`` (the number of records ``data`` must
  hold, for reads; each reply is decoded and counted) and ``max_idle`` (optional).
- ``spew``: :class:`beds.client.BedsClient` over AMQP doing the same: ``params`` ``url``,
  ``token_file``, ``operation`` (``home``: ``fetch("spew_post", "home", limit=50)``; ``create``:
  ``create("spew_post", {"body": ...})`` with the client's idempotency key) and ``records``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from benchmarks import load
from benchmarks.load import CALL_TIMEOUT, BadReply, Call
from benchmarks.work import POST_TEXT

if TYPE_CHECKING:
    from contextlib import AsyncExitStack

HOME_LIMIT: Final = 50
"""Posts a home timeline page holds (``spew_post``'s ``home`` allows 50 at most)."""
_MAX_HEAD: Final = 64 * 1024
MAX_IDLE: Final = 2.0
"""Seconds a kept-alive connection may have been idle and still carry a request: a safe margin
below uvicorn's ``timeout_keep_alive`` (5 s), after which the server closes it. Without it, the
connections a 64-in-flight point opened sit idle through the next 16-in-flight point (8 s),
the server closes them, and the next 64-in-flight point's first request on each reads
``IncompleteReadError: 0 bytes read``."""


class HttpError(Exception):
    """The server's answer is not HTTP/1.1 this client reads, or the connection broke."""


class Connection:
    """One keep-alive HTTP/1.1 connection: a request, then its whole response, in turn."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reusable = True
        self.idle_since = 0.0
        """When its last response was read (``time.monotonic()``)."""

    def open_for(self, now: float, max_idle: float) -> bool:
        """Whether a request may be sent on it: idle less than ``max_idle``, not closed."""
        return (
            now - self.idle_since < max_idle
            and not self.reader.at_eof()
            and not self.writer.is_closing()
        )

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send ``request`` (head and body); the status and body of the response."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise HttpError(f"not an HTTP status line: {lines[0][:80]!r}") from None
        length: int | None = None
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection" and b"close" in value.lower():
                self.reusable = False
        if chunked:
            return status, await self._chunked()
        if length is None:
            self.reusable = False  # the body runs to the end of the connection
            return status, await self.reader.read()
        return status, await self.reader.readexactly(length)

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")  # no trailers are sent to this client
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    def close(self) -> None:
        self.writer.close()


class HttpClient:
    """Keep-alive connections to one server, as many as requests in flight.

    Idle connections are kept in the order they were released: the newest is reused first,
    and those idle ``max_idle`` seconds or more (the oldest) are closed before a request picks
    one. A request is sent once, never again on another connection.
    """

    def __init__(self, host: str, port: int, max_idle: float = MAX_IDLE) -> None:
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self._idle: deque[Connection] = deque()
        self._all: set[Connection] = set()

    async def request(self, request: bytes) -> tuple[int, bytes]:
        connection = self._reusable() or await self._open()
        try:
            status, body = await connection.exchange(request)
        except BaseException:
            self._drop(connection)
            raise
        if connection.reusable:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            self._drop(connection)
        return status, body

    def _reusable(self) -> Connection | None:
        """The most recently released connection still open for a request; the stale dropped."""
        now = time.monotonic()
        while self._idle and now - self._idle[0].idle_since >= self.max_idle:
            self._drop(self._idle.popleft())
        while self._idle:
            connection = self._idle.pop()
            if connection.open_for(now, self.max_idle):
                return connection
            self._drop(connection)
        return None

    async def _open(self) -> Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=_MAX_HEAD * 16)
        connection = Connection(reader, writer)
        self._all.add(connection)
        return connection

    def _drop(self, connection: Connection) -> None:
        connection.close()
        self._all.discard(connection)

    async def close(self) -> None:
        for connection in list(self._all):
            self._drop(connection)
        self._idle.clear()


def request_bytes(
    method: str, host: str, port: int, path: str, body: Any = None, token: str | None = None
) -> bytes:
    """One HTTP/1.1 request, head and body (JSON when ``body`` is not None)."""
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: application/json"]
    if token:
        head.append(f"Authorization: Bearer {token}")
    data = b""
    if body is not None:
        data = orjson.dumps(body)
        head += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + data


def _token(params: dict[str, Any]) -> str | None:
    path = params.get("token_file")
    return Path(path).read_text(encoding="utf-8").strip() if path else None


def _check_records(data: Any, records: int | None) -> None:
    if records is not None and (not isinstance(data, list) or len(data) != records):
        count = len(data) if isinstance(data, list) else type(data).__name__
        raise BadReply(f"expected {records} records, got {count}")


async def http_target(stack: AsyncExitStack, params: dict[str, Any]) -> Call:
    host, port = params.get("host", "127.0.0.1"), int(params["port"])
    client = HttpClient(host, port, float(params.get("max_idle", MAX_IDLE)))
    stack.push_async_callback(client.close)
    request = request_bytes(
        params["method"], host, port, params["path"], params.get("body"), _token(params)
    )
    expected = int(params["status"])
    records = params.get("records")

    async def call() -> None:
        async with asyncio.timeout(CALL_TIMEOUT):
            status, body = await client.request(request)
        if status != expected:
            raise BadReply(f"HTTP {status}: {body[:200]!r}")
        if records is not None:
            _check_records(orjson.loads(body).get("data"), records)

    return call


async def spew_target(stack: AsyncExitStack, params: dict[str, Any]) -> Call:
    from beds.client import BedsClient

    client = BedsClient(
        params["url"], origin="bench", env="bench", timeout=CALL_TIMEOUT, token=_token(params)
    )
    await client.connect()
    stack.push_async_callback(client.close)
    operation, records = params["operation"], params.get("records")

    async def home() -> None:
        _check_records(await client.fetch("spew_post", "home", {}, limit=HOME_LIMIT), records)

    async def create() -> None:
        created = await client.create("spew_post", {"body": POST_TEXT})
        if "id" not in created:
            raise BadReply(f"create returned no id: {created!r}"[:300])

    calls: dict[str, Call] = {"home": home, "create": create}
    if operation not in calls:
        raise ValueError(f"no spew operation {operation!r}: home or create")
    return calls[operation]


def main() -> None:
    load.TARGETS["http"] = http_target
    load.TARGETS["spew"] = spew_target
    load.main()


if __name__ == "__main__":
    main()
