"""A TCP proxy a test puts between a node and a database server, to cut and restore the link.

``cut("refuse")`` stops listening and closes every live connection: the database looks stopped
(connections fail at once with "connection refused"). ``cut("blackhole")`` closes every live
connection but keeps accepting new ones, which it holds without a byte in either direction: the
database looks hung (clients wait for the server's greeting until some timeout). ``restore()``
listens again, and the connections the blackhole held go on to the server, as a hung server
that resumes would answer them.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

__all__ = ("FaultProxy", "Outage")

Outage = Literal["refuse", "blackhole"]

_CHUNK = 64 * 1024


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream_host:upstream_port`` until told otherwise."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = "127.0.0.1"
        self.port = 0
        self.accepted = 0
        """Client connections accepted, held ones included."""
        self.held = 0
        """Connections accepted during a blackhole outage (answered only after restore)."""
        self.cut_connections = 0
        """Live connections closed by ``cut``."""
        self.outage: Outage | None = None
        self._server: asyncio.Server | None = None
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._transports: set[asyncio.WriteTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def start(self) -> None:
        """Listen (on a free port the first time, on the same port after an outage)."""
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self, outage: Outage) -> None:
        """Start an outage: close live connections; refuse or hold new ones."""
        assert self.outage is None, "the proxy is already cut"
        self.outage = outage
        self._resumed.clear()
        if outage == "refuse":
            await self._stop_listening()
        self.cut_connections += len(self._transports)
        for transport in list(self._transports):
            transport.abort()

    async def restore(self) -> None:
        """End the outage: listen again and let held connections through to the server."""
        assert self.outage is not None, "the proxy is not cut"
        if self.outage == "refuse":
            await self.start()
        self.outage = None
        self._resumed.set()

    async def aclose(self) -> None:
        """Stop listening, close every connection and wait for the forwarding tasks."""
        self._closed = True
        await self._stop_listening()
        self._resumed.set()
        for transport in list(self._transports):
            transport.abort()
        # Not cancelled: Python 3.11's stream server logs a cancelled handler task as an error.
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)

    async def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        self._transports.add(writer.transport)
        upstream: asyncio.StreamWriter | None = None
        try:
            if not self._resumed.is_set():
                self.held += 1
                await self._resumed.wait()
            if self._closed or writer.transport.is_closing():
                return
            up_reader, upstream = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
            self._transports.add(upstream.transport)
            pumps = {
                asyncio.create_task(_pump(reader, upstream)),
                asyncio.create_task(_pump(up_reader, writer)),
            }
            try:
                # Either side closing ends the pair: neither protocol half-closes.
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except OSError:
            pass  # the server is unreachable: drop the client, as a dead server would
        finally:
            for side in (writer, upstream):
                if side is not None:
                    self._transports.discard(side.transport)
                    side.transport.abort()
            self._tasks.discard(task)


async def _pump(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await source.read(_CHUNK):
            target.write(data)
            await target.drain()
