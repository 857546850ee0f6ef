"""RabbitMQ drops every connection: the node and the client reconnect and carry on."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from beds.errors import BrokerUnavailable, ReplyTimeout
from tests.helpers import until

if TYPE_CHECKING:
    from collections.abc import Callable

    from beds.client import BedsClient
    from beds.node import BedsNode

    ClientFor = Callable[..., BedsClient]


def close_all_connections(node: BedsNode) -> None:
    """What an operator (or a RabbitMQ restart) does to every connection of the vhost."""
    vhost = unquote(urlsplit(node.config.amqp.url).path.lstrip("/")) or "/"
    ctl = shutil.which("rabbitmqctl")
    assert ctl is not None
    subprocess.run(
        [ctl, "-q", "close_all_connections", "-p", vhost, "beds reconnection test"],
        check=True,
        capture_output=True,
    )


async def test_node_and_client_recover_from_a_dropped_connection(
    node: BedsNode, client_for: ClientFor
) -> None:
    async with client_for(node, timeout=10) as client:
        assert (await client.create("note", {"text": "before"}))["id"] >= 1
        close_all_connections(node)
        await until(lambda: node.reconnects == 1 and node.ready, 15)
        # The client notices on its next call and reconnects with back-off.
        created = await client.create("note", {"text": "after"})
        assert created["id"] >= 1
        assert node.pools["wBroker"].size == 2


async def test_every_request_under_load_is_answered_or_fails_clearly(
    node: BedsNode, client_for: ClientFor
) -> None:
    answered = failed = 0
    async with client_for(node, timeout=10) as client:

        async def one(i: int) -> None:
            nonlocal answered, failed
            try:
                await client.create("note", {"text": f"load {i}"})
                answered += 1
            except (BrokerUnavailable, ReplyTimeout):
                failed += 1

        async def load() -> None:
            for batch in range(20):
                await asyncio.gather(*(one(batch * 10 + i) for i in range(10)))

        task = asyncio.create_task(load())
        await asyncio.sleep(0.2)
        close_all_connections(node)
        await asyncio.wait_for(task, 60)
    assert answered + failed == 200
    assert answered > 0
    await until(lambda: node.ready, 15)
    async with client_for(node, timeout=10) as fresh:
        assert (await fresh.ping()).ok
