"""Node heartbeats on the control channel: each node says how it is, every node hears the rest.

Every ``control.heartbeat_seconds`` a serving node publishes a ``node.status`` control event
(its identity, state and, per broker, what it handled and holds unsettled); every node keeps the
latest heartbeat of each node of its environment (``peers``), replayed from the stream when it
starts. ``/status`` shows them, and ``beds status --all`` reads them from the stream without any
node's HTTP port.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, Final, Protocol

from loguru import logger

if TYPE_CHECKING:
    from beds.broker.pool import BrokerPool
    from beds.config.model import Config
    from beds.transport.control import ControlChannel
    from beds.transport.control_event import ControlEvent

__all__ = ("HEARTBEAT", "Heartbeat", "HeartbeatSource", "read_peers")

HEARTBEAT: Final = "node.status"
"""The kind of a heartbeat event."""


def _keep_latest(peers: dict[str, dict[str, Any]], event: ControlEvent) -> None:
    """Keep ``event`` as its node's heartbeat unless a later one is known."""
    name = str(event.data.get("name") or event.origin)
    known = peers.get(name)
    if known is None or known["at"] <= event.at:
        peers[name] = {**event.data, "at": event.at, "user": event.user}


class HeartbeatSource(Protocol):
    """What a heartbeat reads of its node."""

    @property
    def state(self) -> str:
        """``starting``, ``ready``, ``reconnecting``, ``stopping`` or ``stopped``."""

    @property
    def pools(self) -> dict[str, BrokerPool]:
        """The node's broker pools."""


class Heartbeat:
    """Publishes this node's heartbeats and keeps every node's latest one.

    Args:
        channel: the node's control channel.
        node: the node (its state and pools).
        identity: name, role and env of the node, sent with every beat.
        interval: seconds between two beats.
    """

    def __init__(
        self,
        channel: ControlChannel,
        node: HeartbeatSource,
        *,
        identity: dict[str, str],
        interval: float,
    ) -> None:
        self.channel = channel
        self.node = node
        self.identity = identity
        self.interval = interval
        self.started_at = time.time()
        self.peers: dict[str, dict[str, Any]] = {}
        """Node name → its latest heartbeat's data, with ``at`` and ``age_seconds`` on read."""
        self._task: asyncio.Task[None] | None = None
        channel.subscribe(HEARTBEAT, self._heard)

    def beat(self) -> dict[str, Any]:
        """This node's heartbeat data now."""
        now = time.monotonic()
        return {
            **self.identity,
            "state": self.node.state,
            "started_at": self.started_at,
            "brokers": {
                name: {
                    "handled": pool.handled,
                    "in_flight": pool.in_flight,
                    "unsettled": pool.settle.unsettled_count,
                    "oldest_unsettled_seconds": round(pool.oldest_unsettled(now), 3),
                    "dead_lettered": pool.dead_lettered,
                }
                for name, pool in self.node.pools.items()
            },
        }

    def _heard(self, event: ControlEvent) -> None:
        _keep_latest(self.peers, event)

    def start(self) -> None:
        """Beat now and then every ``interval`` seconds until :meth:`stop`."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="beds-heartbeat")

    async def _run(self) -> None:
        while True:
            try:
                await self.channel.publish(HEARTBEAT, self.beat())
            except Exception as exc:  # a lost channel raises what closed it; the next beat tries
                logger.debug("heartbeat not published ({})", type(exc).__name__)
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        """Stop beating (the last beat says the state it had)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def read_peers(
    config: Config, *, quiet: float = 0.5, timeout: float = 10.0
) -> dict[str, Any]:
    """The latest heartbeat of every node of ``config``'s environment, read from the stream.

    What ``beds status --all`` shows, without any node's HTTP port: it joins the control
    stream like a node (replaying ``control.replay_seconds``) but publishes nothing, and stops
    once it has caught up: an event published after it started arrived, or none for ``quiet``
    seconds.

    Raises:
        BrokerUnavailable: RabbitMQ cannot be reached.
    """
    from beds.transport.amqp import amqp_user, connect_to
    from beds.transport.control import ControlChannel

    connection = await connect_to(config.amqp, name="beds-status")
    try:
        channel = ControlChannel(config, user=amqp_user(config.amqp.url))
        heard, live = asyncio.Event(), asyncio.Event()
        started = time.time()
        peers: dict[str, dict[str, Any]] = {}

        def keep(event: ControlEvent) -> None:
            _keep_latest(peers, event)
            heard.set()
            if event.at >= started:
                live.set()

        channel.subscribe(HEARTBEAT, keep)
        await channel.attach(connection)
        with contextlib.suppress(TimeoutError):  # a busy stream: what arrived so far
            async with asyncio.timeout(timeout):
                while not live.is_set():
                    heard.clear()
                    try:
                        await asyncio.wait_for(heard.wait(), quiet)
                    except TimeoutError:
                        break
        await channel.aclose()
        return {"env": config.node.env, "now": time.time(), "peers": peers}
    finally:
        with contextlib.suppress(Exception):
            await connection.close()
