"""``BedsClient`` with several broker URLs: the first that answers, and another after a loss.

Against the session's single RabbitMQ, reached under two names (127.0.0.1 and localhost) so
that "another broker" can be told apart; the 3-node cluster is in ``test_failover.py``.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from beds.client import BedsClient
from tests.helpers import client_of_node

if TYPE_CHECKING:
    from tests.integration.amqp.helpers import StartNode


def with_host(url: str, host: str) -> str:
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{auth}@{host}:{parts.port or 5672}"))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def connected_host(client: BedsClient) -> str:
    connection = client._connection
    assert connection is not None
    return f"{connection.url.host}:{connection.url.port}"


async def test_the_client_skips_a_dead_broker_and_moves_on_after_losing_one(
    start_node: StartNode,
) -> None:
    async with start_node() as node:
        real = node.config.amqp.url
        port = urlsplit(real).port or 5672
        dead = with_host(real, "127.0.0.1").replace(f":{port}/", f":{closed_port()}/")
        by_name = with_host(real, "localhost")
        template = client_of_node(node)
        client = BedsClient(
            [dead, with_host(real, "127.0.0.1"), by_name],
            exchange=template.exchange,
            env=template.env,
            origin=template.origin,
            timeout=5,
            token=template.token,
        )
        async with client:
            assert (await client.ping()).ok
            assert connected_host(client) == f"127.0.0.1:{port}", "the dead one is skipped"
            connection = client._connection
            assert connection is not None
            await connection.close()  # as if that broker died
            assert (await client.ping()).ok  # reconnects on the next call
            assert connected_host(client) == f"localhost:{port}", "the lost broker is tried last"
