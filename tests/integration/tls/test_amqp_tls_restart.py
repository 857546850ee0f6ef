"""A node on a TLS-only RabbitMQ reconnects over TLS after the broker restarts.

The broker's application is stopped and started again (``rabbitmqctl stop_app`` and
``start_app``: every connection drops and the TLS listener goes away, as in a restart); the
node notices, waits, and reconnects with its TLS context, and a client is served again.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import TYPE_CHECKING

import pytest

from beds.client import BedsClient
from beds.node import BedsNode
from beds.plugins import make_plugin_manager
from beds.testing import unique_name
from beds.transport.tls import amqp_context
from tests.helpers import until
from tests.integration.amqp.helpers import MemoryPlugin
from tests.integration.tls.helpers import tls_node_config
from tests.integration.tls.servers import rabbitmq_node

if TYPE_CHECKING:
    from pathlib import Path

    from tests.integration.tls.helpers import TlsBroker

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]


def rabbitmqctl(broker: TlsBroker, *args: str) -> None:
    ctl = shutil.which("rabbitmqctl")
    assert ctl is not None
    subprocess.run(
        [ctl, "-q", "-n", rabbitmq_node(broker), *args], check=True, capture_output=True, timeout=60
    )


async def test_a_node_reconnects_over_tls_after_the_broker_restarts(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    env = unique_name("tls")
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(MemoryPlugin())
    config = tls_node_config(tls_broker, tmp_path, env)
    context = amqp_context(config.amqp)
    async with BedsNode(config, plugin_manager=pm) as node:
        async with BedsClient(tls_broker.url(), env=env, timeout=10, ssl_context=context) as client:
            assert (await client.ping()).ok
        rabbitmqctl(tls_broker, "stop_app")
        try:
            await until(lambda: not node.ready, 60)
        finally:
            rabbitmqctl(tls_broker, "start_app")
        await until(lambda: node.ready and node.reconnects >= 1, 60)
        async with BedsClient(tls_broker.url(), env=env, timeout=10, ssl_context=context) as client:
            created = await client.create("note", {"text": "after"})
            assert created["id"] >= 1
        assert node.pools["wBroker"].size >= 1
