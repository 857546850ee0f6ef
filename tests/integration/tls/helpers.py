"""Helpers of the TLS tests: free loopback ports, a handshake-only TLS server, the broker."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from beds.config.model import Config

__all__ = ("TlsBroker", "free_port", "port_open", "tls_listener", "tls_node_config")


@attrs.frozen
class TlsBroker:
    """The session's TLS-only RabbitMQ node."""

    port: int
    folder: Path
    ca_file: str
    ca: Any
    """The trustme CA that signed the node's certificate."""

    def url(self, host: str = "localhost") -> str:
        return f"amqps://guest:guest@{host}:{self.port}/"


def tls_node_config(broker: TlsBroker, folder: Path, env: str) -> Config:
    """A node's configuration on ``broker`` over TLS (lineage off), written in ``folder``."""
    from beds.config import load_config

    path = folder / "beds.toml"
    path.write_text(
        f"""schema_version = 1
[node]
env = "{env}"
drain_seconds = 1
[amqp]
url = "{broker.url()}"
[amqp.tls]
ca_file = "{broker.ca_file}"
[lineage]
enabled = false
""",
        encoding="utf-8",
    )
    return load_config(path, environ={})


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextlib.asynccontextmanager
async def tls_listener(cert_file: str, key_file: str) -> AsyncIterator[int]:
    """A loopback TLS server that only completes handshakes (then closes): the other side of
    the certificate checks a client makes (expired, wrong host, unknown CA)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()
