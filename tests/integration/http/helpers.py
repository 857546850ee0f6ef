"""Helpers of the HTTP edge's integration tests (fixtures are in ``conftest.py``)."""

from __future__ import annotations

import contextlib
import socket

import aiormq
import attrs

from beds.node import BedsNode

__all__ = ("Edge", "delete_environment", "free_port")


@attrs.frozen
class Edge:
    """The running node and edge of one test."""

    node: BedsNode
    url: str
    app: object

    def node_requests(self) -> int:
        """Messages the node's brokers answered so far (its request counter)."""
        telemetry = self.node.telemetry
        assert telemetry is not None
        return sum(b.handled for b in telemetry.metrics.brokers.values())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def delete_environment(amqp_url: str, env: str) -> None:
    """Best effort: the queues and exchanges the node and the edge declared for ``env``."""
    queues = [
        f"beds.{env}.control",
        f"beds.{env}.live",
        f"beds.{env}.dead",
        f"beds.{env}.admin.adminBrokerIn",
        f"beds.{env}.admin.adminLogsBroker",
    ] + [f"beds.{env}.appServer.{broker}" for broker in ("rBroker", "wBroker", "mBroker")]
    exchanges = [f"beds.{kind}.{env}" for kind in ("events", "logs", "dlx", "control")]
    exchanges.append(f"beds.control.{env}.live")
    connection = await aiormq.connect(amqp_url)
    try:
        for queue in queues:
            channel = await connection.channel()
            with contextlib.suppress(aiormq.exceptions.AMQPError):
                await channel.queue_delete(queue)
        for exchange in exchanges:
            channel = await connection.channel()
            with contextlib.suppress(aiormq.exceptions.AMQPError):
                await channel.exchange_delete(exchange)
    finally:
        await connection.close()
