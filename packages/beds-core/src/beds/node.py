"""A BEDS node: the start-up sequence (IPL), the broker pools, and shutdown.

IPL: configuration (already loaded) → plugins → adapters and templates → RabbitMQ (always
fatal) → stores → template database objects → topology → brokers → ready. In production every
failure is fatal; in development only required ones are, the rest are warnings.
``BedsNode.check()`` runs the same steps without serving and returns the checklist.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Literal, Self

import attrs
from loguru import logger

from beds.broker.dispatch import Dispatcher
from beds.broker.pool import BrokerPool
from beds.errors import BedsError, PluginError, RequestError, TemplateError
from beds.factory import Factory
from beds.namaste import NamasteCore, StoreSettings
from beds.plugins import Hooks, make_plugin_manager
from beds.transport.amqp import connect, declare_topology

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

    import pluggy
    from aiormq.abc import AbstractConnection

    from beds.config.model import Config
    from beds.registry import TemplateRegistry
    from beds.templates.model import Template

__all__ = ("BedsNode", "Check", "NodeInfo", "StartupError")


@attrs.frozen(kw_only=True)
class NodeInfo:
    """What plugins are told about the node (lifecycle hooks)."""

    name: str
    role: str
    env: str
    templates: tuple[str, ...]


@attrs.frozen(kw_only=True)
class Check:
    """One line of the IPL checklist."""

    name: str
    status: Literal["ok", "warning", "failed"]
    detail: str = ""


class StartupError(BedsError):
    """IPL stopped at a fatal check.

    Attributes:
        checks: the checklist up to and including the failure.
    """

    def __init__(self, message: str, checks: Sequence[Check]) -> None:
        self.checks = tuple(checks)
        super().__init__(message)


class BedsNode:
    """Run one node: ``async with BedsNode(config): ...`` or ``start()`` / ``stop()``.

    Args:
        config: the loaded configuration.
        plugin_manager: a ready plugin manager (tests and embedding); by default one is built
            from the installed entry points.
    """

    def __init__(
        self, config: Config, *, plugin_manager: pluggy.PluginManager | None = None
    ) -> None:
        self.config = config
        self._pm = plugin_manager
        self.checks: list[Check] = []
        self.adapters: dict[str, NamasteCore] = {}
        self.templates: dict[str, Template] = {}
        self.registry: TemplateRegistry | None = None
        self.pools: dict[str, BrokerPool] = {}
        self.factory: Factory | None = None
        self.hooks: Hooks | None = None
        self._connection: AbstractConnection | None = None
        self._closed = asyncio.Event()
        self.ready = False

    @property
    def info(self) -> NodeInfo:
        """The node's identity and served templates."""
        node = self.config.node
        return NodeInfo(
            name=node.name, role=node.role, env=node.env, templates=tuple(sorted(self.templates))
        )

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _record(
        self, name: str, error: BaseException | str | None = None, *, required: bool = False
    ) -> None:
        """Add a checklist line; raise StartupError when a failure is fatal here."""
        if error is None:
            self.checks.append(Check(name=name, status="ok"))
            logger.info("IPL {}: ok", name)
            return
        detail = str(error)
        if isinstance(error, RequestError) and error.details:
            detail = f"{detail}: {', '.join(error.details)}"
        fatal = required or self.config.production
        self.checks.append(Check(name=name, status="failed" if fatal else "warning", detail=detail))
        if fatal:
            logger.error("IPL {}: {}", name, detail)
            raise StartupError(f"start-up failed at {name}: {detail}", self.checks)
        logger.warning("IPL {}: {} (development: continuing)", name, detail)

    def load_plugins(self) -> None:
        """IPL: plugins, adapters (built, not connected) and templates (parsed and prepared)."""
        try:
            pm = self._pm or make_plugin_manager(
                disabled=self.config.plugins.disabled, strict=self.config.production
            )
            self.hooks = hooks = Hooks(pm)
            factories = hooks.register_adapters()
            self.registry = registry = hooks.register_templates()
        except (PluginError, TemplateError) as exc:
            self._record("plugins", exc, required=True)
            raise AssertionError("unreachable") from exc  # pragma: no cover
        self._record("plugins")
        used_stores = sorted({t.store for t in registry.templates.values()})
        for store in used_stores:
            factory = factories.factories.get(store)
            if factory is None:
                self._record(f"adapter {store}", f"no plugin provides store {store!r}")
                continue
            settings = StoreSettings(
                store=store,
                options=self.config.stores.get(store, {}),
                file=self.config.store_files.get(store),
                production=self.config.production,
            )
            try:
                self.adapters[store] = factory(settings)
            except BedsError as exc:
                self._record(f"adapter {store}", exc, required=True)
        for name, template in sorted(registry.templates.items()):
            adapter = self.adapters.get(template.store)
            if adapter is None:
                continue
            try:
                adapter.prepare(template)
            except TemplateError as exc:
                self._record(f"template {name}", exc)
                continue
            self.templates[name] = template

    async def _connect_amqp(self) -> AbstractConnection:
        try:
            connection = await connect(
                self.config.amqp.url,
                timeout=self.config.amqp.connect_timeout,
                name=f"beds-{self.config.node.name}",
            )
        except BedsError as exc:
            self._record("rabbitmq", exc, required=True)
            raise AssertionError("unreachable") from exc  # pragma: no cover
        self._record("rabbitmq")
        return connection

    async def _start_stores(self) -> None:
        for store, adapter in sorted(self.adapters.items()):
            try:
                await adapter.start()
            except BedsError as exc:
                self._record(f"store {store}", exc, required=self.config.production)
                self.templates = {n: t for n, t in self.templates.items() if t.store != store}
                continue
            self._record(f"store {store}")

    async def _verify_templates(self) -> None:
        for name, template in sorted(self.templates.items()):
            try:
                await self.adapters[template.store].verify(template)
            except RequestError as exc:
                self._record(f"template {name} objects", exc)
                continue
            self._record(f"template {name} objects")

    async def check(self) -> list[Check]:
        """Run the start-up checks without serving; return the checklist (never raises)."""
        self.checks = [
            Check(name="config", status="ok", detail=", ".join(self.config.files) or "defaults")
        ]
        try:
            self.load_plugins()
            connection = await self._connect_amqp()
            await connection.close()
            await self._start_stores()
            await self._verify_templates()
        except StartupError:
            pass
        finally:
            await self._close_adapters()
        return self.checks

    async def start(self) -> None:
        """Run IPL and start consuming.

        Raises:
            StartupError: a fatal check failed; everything opened so far is closed again.
        """
        self.checks = [
            Check(name="config", status="ok", detail=", ".join(self.config.files) or "defaults")
        ]
        try:
            self.load_plugins()
            self._connection = await self._connect_amqp()
            await self._start_stores()
            await self._verify_templates()
            await self._start_brokers(self._connection)
            assert self.hooks is not None
            await self.hooks.node_started(self.info)
        except BaseException:
            await self.stop()
            raise
        self.ready = True
        logger.info(
            "node {} ({}, env {}) ready: {} templates, brokers {}",
            self.config.node.name,
            self.config.node.role,
            self.config.node.env,
            len(self.templates),
            ", ".join(self.pools),
        )

    async def _start_brokers(self, connection: AbstractConnection) -> None:
        channel = await connection.channel()
        queues = await declare_topology(channel, self.config)
        await channel.close()
        self._record("topology")
        self.factory = Factory(self.templates, self.adapters)
        dispatcher = Dispatcher(
            self.factory,
            node=self.config.node.name,
            env=self.config.node.env,
            max_message_bytes=self.config.amqp.max_message_bytes,
            hooks=self.hooks,
        )
        for broker, settings in self.config.brokers.items():
            pool = BrokerPool(
                broker,
                settings,
                queue=queues[broker],
                dispatcher=dispatcher,
                dead_letter_exchange=self.config.amqp.dead_letter_exchange,
            )
            await pool.start(connection)
            self.pools[broker] = pool
        self._record("brokers")
        connection.closing.add_done_callback(self._on_connection_closed)

    def _on_connection_closed(self, future: asyncio.Future[object]) -> None:
        if self.ready:
            logger.error(
                "RabbitMQ connection lost: {}",
                future.exception() if not future.cancelled() and future.exception() else "closed",
            )
        self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until the node stops or loses its RabbitMQ connection."""
        await self._closed.wait()

    async def stop(self) -> None:
        """Stop consuming, drain in-flight requests, then close stores and the connection."""
        was_ready, self.ready = self.ready, False
        if was_ready and self.hooks is not None:
            with contextlib.suppress(Exception):
                await self.hooks.node_stopping(self.info)
        drain = self.config.node.drain_seconds
        await asyncio.gather(
            *(pool.stop(drain) for pool in self.pools.values()), return_exceptions=True
        )
        self.pools.clear()
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()
        await self._close_adapters()
        self._closed.set()

    async def _close_adapters(self) -> None:
        for adapter in self.adapters.values():
            try:
                await adapter.aclose()
            except Exception:
                logger.opt(exception=True).warning("closing adapter {} failed", adapter.store)
