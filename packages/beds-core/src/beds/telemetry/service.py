"""One node's telemetry: its metrics, the queue poller and the HTTP server, started by the node.

:class:`~beds.node.BedsNode` drives it (``beds run`` and embedding alike):

1. ``start()`` during IPL, right after the configuration: ``/health`` answers 200 and
   ``/ready`` 503 while the rest of IPL runs;
2. ``observer(broker)`` for each broker pool it starts (again after a reconnect);
3. ``serving()`` once the node is ready: the queue poller starts;
4. ``stop_polling()`` when the node starts stopping, ``stop()`` once it has stopped.
"""

from __future__ import annotations

import time
from importlib.metadata import version
from typing import TYPE_CHECKING

from beds.telemetry.http import TelemetryServer
from beds.telemetry.metrics import BrokerInstruments, NodeMetrics
from beds.telemetry.queues import QueuePoller

if TYPE_CHECKING:
    from collections.abc import Callable

    from beds.telemetry.view import NodeView

__all__ = ("Telemetry",)


class Telemetry:
    """The telemetry of one node (``[telemetry]``; docs/telemetry.md).

    Args:
        node: the node it observes.
        process_metrics: also export prometheus_client's process, platform and GC metrics.
    """

    def __init__(self, node: NodeView, *, process_metrics: bool = True) -> None:
        self.node = node
        settings = node.config.telemetry
        self.version = version("beds-core")
        self.time: Callable[[], float] = time.time
        """The wall clock (replaceable in tests)."""
        self.monotonic: Callable[[], float] = time.monotonic
        """The clock of ``BrokerPool.holding()`` (replaceable in tests)."""
        self.started_at = self.time()
        """Unix time the node started (IPL began)."""
        self.metrics = NodeMetrics(self, process_metrics=process_metrics)
        self.poller = QueuePoller(node, settings.queue_poll_seconds)
        self.server = TelemetryServer(self, settings.host, settings.port)

    @property
    def url(self) -> str:
        """``http://host:port`` where the endpoints answer (the bound port when 0 was asked)."""
        return self.server.url

    async def start(self) -> None:
        """Start the HTTP server.

        Raises:
            OSError: ``telemetry.host``/``port`` cannot be bound.
        """
        await self.server.start()

    def observer(self, broker: str) -> BrokerInstruments:
        """What the pool of ``broker`` reports its messages to."""
        return self.metrics.broker(broker)

    def serving(self) -> None:
        """The node is ready: start reading queue depths."""
        self.poller.start()

    async def stop_polling(self) -> None:
        """The node is stopping: stop reading queue depths (before its connection closes)."""
        await self.poller.stop()

    async def stop(self) -> None:
        """Stop the HTTP server (and the poller, if still running)."""
        await self.poller.stop()
        await self.server.stop()

    def ready(self) -> tuple[bool, str]:
        """Whether the node serves, and the node's state (or which brokers do not consume)."""
        node = self.node
        state = node.state
        if state != "ready":
            return False, state
        idle = [
            broker
            for broker in node.config.brokers
            if broker not in node.pools
            or not (node.pools[broker].consuming or node.pools[broker].paused)
        ]
        if idle:
            return False, f"not consuming: {', '.join(idle)}"
        return True, state
