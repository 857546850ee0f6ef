"""What telemetry reads of a node, as a Protocol: telemetry never imports the node runtime.

:class:`~beds.node.BedsNode` satisfies :class:`NodeView` (mypy checks it where the node builds
its :class:`~beds.telemetry.Telemetry`), so the layers stay one way: the node imports
telemetry, telemetry imports only what lies below the node (docs/architecture.md, "Layers and
the modules that own them").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aiormq.abc import AbstractConnection

    from beds.broker.pool import BrokerPool
    from beds.config.model import Config
    from beds.dispatch import Dispatcher
    from beds.heartbeat import Heartbeat
    from beds.namaste import NamasteCore
    from beds.templates.model import Template
    from beds.transport.control import ControlChannel

__all__ = ("NodeView",)


class NodeView(Protocol):
    """The parts of a running node that its telemetry reads (all read-only)."""

    @property
    def config(self) -> Config:
        """The node's configuration."""
        ...

    @property
    def state(self) -> str:
        """``starting``, ``ready``, ``draining``, ``reconnecting``, ``stopping`` or ``stopped``."""
        ...

    @property
    def templates(self) -> Mapping[str, Template]:
        """The templates the node serves, by name."""
        ...

    @property
    def adapters(self) -> Mapping[str, NamasteCore]:
        """The store adapters, by connection (``rel``, ``rel.warehouse``)."""
        ...

    @property
    def pools(self) -> Mapping[str, BrokerPool]:
        """The broker pools, by broker name (none before they start)."""
        ...

    @property
    def dispatchers(self) -> Mapping[str, Dispatcher]:
        """The dispatcher of each broker, by broker name."""
        ...

    @property
    def reconnects(self) -> int:
        """Times the node reconnected to RabbitMQ."""
        ...

    @property
    def control(self) -> ControlChannel | None:
        """The control-event channel, while the node has one."""
        ...

    @property
    def heartbeat(self) -> Heartbeat | None:
        """The node's heartbeats and those of its peers, while the node has them."""
        ...

    @property
    def connection(self) -> AbstractConnection | None:
        """The node's AMQP connection while it has one."""
        ...

    @property
    def retention_retired(self) -> Mapping[str, int]:
        """Template → records the retention sweeps this node ran retired (never goes down)."""
        ...
