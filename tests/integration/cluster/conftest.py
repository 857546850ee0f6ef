"""Fixtures of the RabbitMQ cluster tests: a 3-node cluster on this machine, for the session.

The cluster starts only when a test of this folder asks for ``rabbit_cluster`` (about 20 s),
once per session, and is stopped (every process, by its process group) and removed after it,
also when a test failed. ``stores`` (the session's databases, with the example schema) comes
from ``tests/integration/nodes.py``; ``start_node`` (an in-process node on the session's single
RabbitMQ) from ``tests/integration/amqp/helpers.py``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.amqp.helpers import beds_log_on_failure, start_node
from tests.integration.cluster.servers import SERVER, Cluster, ClusterStartError, start_cluster
from tests.integration.nodes import stores

# Defined in tests/integration/nodes.py (stores) and tests/integration/amqp/helpers.py.
__all__ = ("beds_log_on_failure", "start_node", "stores")


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[Cluster]:
    """Three RabbitMQ nodes clustered on loopback, with a vhost and a user of their own."""
    if shutil.which(SERVER) is None:
        pytest.fail(f"{SERVER} is needed to start a RabbitMQ cluster", pytrace=False)
    folder = Path(tempfile.mkdtemp(prefix="beds-cluster-"))
    try:
        cluster = start_cluster(folder)
    except ClusterStartError as exc:
        pytest.fail(f"the RabbitMQ cluster did not start: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()
