"""Fixtures of the broker-runtime tests: a node serving the in-memory ``note`` template.

``start_node`` and ``beds_log_on_failure`` are defined in ``helpers.py`` (shared with
``tests/integration/test_telemetry.py``) and registered here by importing them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiormq
import pytest

from beds.client import BedsClient
from beds.node import BedsNode
from beds.testing import unique_name
from beds.transport.amqp import dead_letter_queue
from tests.integration.amqp.helpers import (
    StartNode,
    beds_log_on_failure,
    client_of,
    start_node,
)

__all__ = ("beds_log_on_failure", "start_node")  # fixtures defined in helpers.py


@pytest.fixture
async def node(start_node: StartNode) -> AsyncIterator[BedsNode]:
    async with start_node() as running:
        yield running


@pytest.fixture
async def client(node: BedsNode) -> AsyncIterator[BedsClient]:
    async with client_of(node) as c:
        yield c


@pytest.fixture
def client_for() -> Callable[..., BedsClient]:
    """``client_for(node, timeout=5)``: a client for that node's environment."""
    return client_of


@pytest.fixture
def dead_letter() -> Callable[[BedsNode], Awaitable[aiormq.abc.DeliveredMessage]]:
    """Take the next message from the node's dead-letter queue (waiting up to 5 s)."""

    async def take(node: BedsNode) -> aiormq.abc.DeliveredMessage:
        connection = await aiormq.connect(node.config.amqp.url)
        try:
            channel = await connection.channel()
            for _ in range(50):
                got = await channel.basic_get(dead_letter_queue(node.config), no_ack=True)
                if got.body:
                    return got
                await asyncio.sleep(0.1)
        finally:
            await connection.close()
        raise AssertionError("nothing reached the dead-letter queue")

    return take


@pytest.fixture
def config_file(tmp_path: Path, amqp_url: str) -> Callable[..., Path]:
    """``config_file(env, url=None)``: a config file for an environment, named as ``start_node``
    names its exchanges, for ``beds --config`` when no node of that environment ran (a running
    node's own file is ``Path(node.config.files[0])``)."""

    def write(env: str, url: str | None = None) -> Path:
        path = tmp_path / f"{unique_name('beds')}.toml"
        path.write_text(
            f"""
schema_version = 1
[node]
env = "{env}"
[amqp]
url = "{url or amqp_url}"
connect_timeout = 5
events_exchange = "beds.events.{env}"
logs_exchange = "beds.logs.{env}"
dead_letter_exchange = "beds.dlx.{env}"
""",
            encoding="utf-8",
        )
        return path

    return write
