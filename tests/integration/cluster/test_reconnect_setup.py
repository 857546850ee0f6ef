"""A node whose connection dies while it declares its queues again does not hang: it retries.

The set-up after a reconnect (declare, bind, consume) waits on RabbitMQ's answers; when the new
connection dies in between, or a quorum queue has no leader yet, an answer may never come. The
node gives the whole step ``max(4 x amqp.connect_timeout, 2 s)`` and then starts over (another
broker first). One broker is enough to show it: the first set-up is made to hang.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import attrs

from tests.integration.amqp.helpers import client_of

if TYPE_CHECKING:
    from aiormq.abc import AbstractConnection

    from tests.integration.amqp.helpers import StartNode


async def test_a_reconnect_whose_set_up_never_answers_is_given_up_and_tried_again(
    start_node: StartNode,
) -> None:
    async with start_node() as node:
        amqp = attrs.evolve(node.config.amqp, connect_timeout=0.5)  # set-up budget: 2 s
        node.config = attrs.evolve(node.config, amqp=amqp)
        real_consume = node._consume
        attempts = 0

        async def consume(connection: AbstractConnection) -> None:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                await asyncio.Event().wait()  # a declare whose answer never comes
            await real_consume(connection)

        node._consume = consume  # type: ignore[method-assign]
        connection = node.connection
        assert connection is not None
        lost_at = time.monotonic()
        await connection.close()  # as if RabbitMQ dropped it
        while not (node.ready and node.reconnects == 1):
            assert time.monotonic() - lost_at < 15, f"still {node.state} after 15 s"
            await asyncio.sleep(0.05)
        took = time.monotonic() - lost_at
        assert attempts == 2
        assert 2 <= took < 10, took
        async with client_of(node) as client:
            assert (await client.ping()).ok
