"""Run a BEDS node inside your own asyncio application, beside your own tasks.

The node serves a template from a plugin object registered by hand (here an in-memory store, so
only RabbitMQ is needed), and the application calls it through BedsClient like any client would.
Configuration comes from the environment as usual (``BEDS__AMQP__URL``…); see
docs/embedding.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from beds import hookimpl
from beds.client import BedsClient
from beds.config import load_config
from beds.node import BedsNode
from beds.plugins import make_plugin_manager
from beds.testing import MemoryAdapter

if TYPE_CHECKING:
    from beds.registry import AdapterRegistry, TemplateRegistry

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
max_length = 80
[operations.create]
params = ["text"]
returns = ["id"]
[queries.by_id]
params = ["id"]
max_limit = 1
"""


class NotesPlugin:
    """The application's own plugin: a store adapter and one template."""

    def __init__(self) -> None:
        self.adapter = MemoryAdapter("memory")

    @hookimpl
    def beds_register_adapters(self, registry: AdapterRegistry) -> None:
        """Provide the store ``memory``."""
        registry.add(store="memory", factory=lambda settings: self.adapter)

    @hookimpl
    def beds_register_templates(self, registry: TemplateRegistry) -> None:
        """Declare the template ``note``."""
        registry.add_text(NOTE, source="note.toml")


async def heartbeat(ticks: list[float]) -> None:
    """Stands for the application's own work, running on the same event loop."""
    while True:
        ticks.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.05)


async def main() -> None:
    """Start the node, call it, stop it, while the application's own task runs."""
    config = load_config()  # the development default node, with BEDS_* from the environment
    plugins = make_plugin_manager(load_entry_points=False)  # only what the app registers
    plugins.register(NotesPlugin())
    ticks: list[float] = []
    own_work = asyncio.create_task(heartbeat(ticks))
    try:
        async with (
            BedsNode(config, plugin_manager=plugins) as node,
            BedsClient(
                config.amqp.url, exchange=config.amqp.events_exchange, env=config.node.env
            ) as client,
        ):
            created = await client.create("note", {"text": "hello from inside"})
            [row] = await client.fetch("note", "by_id", {"id": created["id"]})
            print(f"node {node.config.node.name} ({node.state}) stored {row}")
    finally:
        own_work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await own_work
    print(f"the application's own task ran {len(ticks)} times meanwhile")


if __name__ == "__main__":
    asyncio.run(main())
