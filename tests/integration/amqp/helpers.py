"""The broker-runtime tests' node: the in-memory ``note`` template on a fresh environment.

The stores have their own integration tests; here the store is a :class:`MemoryAdapter` that a
test can make slow, failing or crashing, to see what the runtime does around it.

Two fixtures live here rather than in ``conftest.py``, because
``tests/integration/test_telemetry.py`` shares them: ``start_node`` and ``beds_log_on_failure``.
``amqp/conftest.py`` and that module import them to register them; tests import the rest
(``StartNode``, ``client_of``, ``MemoryPlugin``) from here, never from a conftest.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from loguru import logger

from beds import hookimpl
from beds.client import BedsClient
from beds.config import load_config
from beds.node import BedsNode
from beds.plugins import make_plugin_manager
from beds.registry import AdapterRegistry, TemplateRegistry
from beds.testing import MemoryAdapter, unique_name
from tests.helpers import client_of_node

__all__ = (
    "NOTE",
    "MemoryPlugin",
    "StartNode",
    "beds_log_on_failure",
    "client_of",
    "start_node",
)

NOTE = """
name = "note"
store = "memory"
tla = "not"
key = ["id"]
[fields.id]
type = "int"
generated = true
[fields.text]
type = "str"
max_length = 20
[operations.create]
params = ["text"]
returns = ["id"]
[operations.update]
params = ["id", "text"]
[operations.delete]
params = ["id"]
[queries.by_id]
params = ["id"]
max_limit = 1
[queries.by_text]
params = ["text"]
"""


class MemoryPlugin:
    def __init__(self) -> None:
        self.adapter = MemoryAdapter("memory")

    @hookimpl
    def beds_register_adapters(self, registry: AdapterRegistry) -> None:
        registry.add(store="memory", factory=lambda settings: self.adapter)

    @hookimpl
    def beds_register_templates(self, registry: TemplateRegistry) -> None:
        registry.add_text(NOTE, source="note.toml")


StartNode = Callable[..., contextlib.AbstractAsyncContextManager[BedsNode]]


@pytest.fixture
def start_node(tmp_path: Path, amqp_url: str) -> StartNode:
    """Start a node serving ``note``: ``async with start_node(extra="...toml...") as node``.

    ``plugins`` are registered beside the one providing the in-memory store and ``note``.

    Each call gets its own environment name (its own queues) unless ``env`` is given, so two
    calls with the same ``env`` are two nodes of one role sharing queues.
    """

    @contextlib.asynccontextmanager
    async def start(
        extra: str = "",
        instances: int = 2,
        env: str | None = None,
        queue_type: str = "classic",
        plugins: tuple[object, ...] = (),
        name: str = "t1",
    ) -> AsyncIterator[BedsNode]:
        path = tmp_path / f"{unique_name('beds')}.toml"
        env = env or unique_name("env")
        # Exchanges are shared by a whole vhost (an environment is a vhost in production); the
        # tests run many environments in one vhost, so each gets its own exchanges.
        path.write_text(
            f"""
schema_version = 1
[node]
name = "{name}"
env = "{env}"
drain_seconds = 2
[amqp]
url = "{amqp_url}"
queue_type = "{queue_type}"
events_exchange = "beds.events.{env}"
logs_exchange = "beds.logs.{env}"
dead_letter_exchange = "beds.dlx.{env}"
control_exchange = "beds.control.{env}"
[roles.appServer.brokers.rBroker]
instances = {instances}
[roles.appServer.brokers.wBroker]
instances = {instances}
{extra}
""",
            encoding="utf-8",
        )
        pm = make_plugin_manager(load_entry_points=False)
        pm.register(MemoryPlugin())
        for plugin in plugins:
            pm.register(plugin)
        async with BedsNode(load_config(path, environ={}), plugin_manager=pm) as running:
            yield running

    return start


def client_of(node: BedsNode, timeout: float = 5) -> BedsClient:
    """A client for the node's environment (its exchange)."""
    return client_of_node(node, timeout=timeout)


@pytest.fixture(autouse=True)
def beds_log_on_failure() -> Iterator[None]:
    """Show the node's warnings and errors in a failing test's captured stderr."""
    logger.enable("beds")

    def write(message: object) -> None:
        sys.stderr.write(str(message))  # the current stderr: pytest swaps it per test

    sink = logger.add(write, level="WARNING")
    yield
    logger.remove(sink)
    logger.disable("beds")
