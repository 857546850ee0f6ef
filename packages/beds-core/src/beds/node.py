"""A BEDS node: the start-up sequence (IPL), the broker pools, and shutdown.

IPL: configuration (already loaded) → RabbitMQ → plugins, adapters and templates → stores
(``rec`` then ``rel``; required) → template database objects → topology → brokers → ready.
RabbitMQ, plugins, stores and topology are always fatal. In production every failure is fatal;
in development a template that cannot be prepared or whose objects are missing is a warning.
``BedsNode.check()`` runs the same steps without serving and returns the checklist.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Literal, NoReturn, Self

import aiormq
import attrs
import pluggy
from loguru import logger
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from beds.broker.dispatch import Dispatcher
from beds.broker.pool import BrokerPool
from beds.errors import BedsError, PluginError, RequestError, TemplateError
from beds.factory import Factory
from beds.namaste import NamasteCore, StoreSettings
from beds.plugins import Hooks, make_plugin_manager
from beds.transport.amqp import connect, declare_topology, redact

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

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
        self._stopping = False
        self._dispatcher: Dispatcher | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self.reconnects = 0
        """Times the node reconnected to RabbitMQ after losing it."""
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

    def _ok(self, name: str, detail: str = "") -> None:
        self.checks.append(Check(name=name, status="ok", detail=detail))
        logger.info("IPL {}: ok{}", name, f" ({detail})" if detail else "")

    def _fail(self, name: str, error: BaseException | str) -> NoReturn:
        detail = _describe(error)
        self.checks.append(Check(name=name, status="failed", detail=detail))
        logger.error("IPL {}: {}", name, detail)
        raise StartupError(f"start-up failed at {name}: {detail}", self.checks)

    def _problem(self, name: str, error: BaseException | str) -> None:
        """A non-required check failed: fatal in production, a warning in development."""
        if self.config.production:
            self._fail(name, error)
        detail = _describe(error)
        self.checks.append(Check(name=name, status="warning", detail=detail))
        logger.warning("IPL {}: {} (development: continuing)", name, detail)

    def load_plugins(self) -> None:
        """IPL: plugins, adapters (built, not connected) and templates (parsed and prepared)."""
        try:
            pm = self._pm or make_plugin_manager(
                disabled=self.config.plugins.disabled, strict=self.config.production
            )
            pm.check_pending()  # plugins registered by hand are validated too
            self.hooks = hooks = Hooks(pm)
            factories = hooks.register_adapters()
            self.registry = registry = hooks.register_templates()
        except (PluginError, TemplateError, pluggy.PluginValidationError) as exc:
            self._fail("plugins", exc)
        self._ok("plugins", f"{len(registry.templates)} templates")
        for store in sorted({t.store for t in registry.templates.values()}):
            factory = factories.factories.get(store)
            if factory is None:
                self._problem(f"adapter {store}", f"no installed plugin provides store {store!r}")
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
                self._fail(f"adapter {store}", exc)
        for name, template in sorted(registry.templates.items()):
            adapter = self.adapters.get(template.store)
            if adapter is None:
                continue
            try:
                adapter.prepare(template)
            except TemplateError as exc:
                self._problem(f"template {name}", exc)
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
            self._fail("rabbitmq", exc)
        self._ok("rabbitmq", redact(self.config.amqp.url))
        return connection

    async def _start_stores(self) -> None:
        # Every store that serves templates is required: its templates cannot be served without it.
        for store, adapter in sorted(self.adapters.items()):
            try:
                await adapter.start()
            except BedsError as exc:
                self._fail(f"store {store}", exc)
            self._ok(f"store {store}")

    async def _verify_templates(self) -> None:
        for name, template in sorted(self.templates.items()):
            try:
                await self.adapters[template.store].verify(template)
            except RequestError as exc:
                # Development keeps serving: calls then fail with DatabaseObjectMissing by name.
                self._problem(f"template {name} objects", exc)
                continue
            self._ok(f"template {name} objects")

    async def _ipl(self) -> AbstractConnection:
        """Config (loaded) → RabbitMQ → plugins/templates → stores → template objects."""
        self.checks = [
            Check(name="config", status="ok", detail=", ".join(self.config.files) or "defaults")
        ]
        connection = await self._connect_amqp()
        try:
            self.load_plugins()
            await self._start_stores()
            await self._verify_templates()
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        return connection

    async def check(self) -> list[Check]:
        """Run the start-up checks without serving; return the checklist (never raises)."""
        try:
            connection = await self._ipl()
            await connection.close()
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
        try:
            self._connection = await self._ipl()
            await self._start_brokers(self._connection)
            assert self.hooks is not None
            try:
                await self.hooks.node_started(self.info)
            except Exception as exc:
                self._fail("node_started hooks", exc)
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
        self.factory = Factory(self.templates, self.adapters)
        self._dispatcher = Dispatcher(
            self.factory,
            node=self.config.node.name,
            env=self.config.node.env,
            max_message_bytes=self.config.amqp.max_message_bytes,
            hooks=self.hooks,
            reliability=self.config.reliability,
        )
        try:
            await self._consume(connection)
        except (aiormq.exceptions.AMQPError, ConnectionError) as exc:
            self._fail("topology and brokers", f"RabbitMQ refused a declaration: {exc!r}")
        self._ok(
            "brokers", ", ".join(f"{b} x{s.instances}" for b, s in self.config.brokers.items())
        )

    async def _consume(self, connection: AbstractConnection) -> None:
        """Declare the topology and start one pool per broker on ``connection``."""
        assert self._dispatcher is not None
        channel = await connection.channel()
        queues = await declare_topology(channel, self.config)
        await channel.close()
        for broker, settings in self.config.brokers.items():
            pool = BrokerPool(
                broker,
                settings,
                queue=queues[broker],
                dispatcher=self._dispatcher,
                dead_letter_exchange=self.config.amqp.dead_letter_exchange,
                count_redeliveries=self.config.amqp.queue_type == "classic",
            )
            await pool.start(connection)
            self.pools[broker] = pool
        connection.closing.add_done_callback(self._on_connection_closed)

    def _on_connection_closed(self, future: asyncio.Future[object]) -> None:
        if self._stopping:
            return
        reason = future.exception() if not future.cancelled() else None
        logger.error("RabbitMQ connection lost ({}); reconnecting", reason or "closed")
        self.ready = False
        self._reconnecting = asyncio.create_task(self._reconnect(), name="beds-reconnect")

    async def _reconnect(self) -> None:
        """Reconnect with back-off, redeclare the topology and resume consuming.

        Messages the lost channels held unacknowledged are redelivered by RabbitMQ.
        """
        await asyncio.gather(
            *(pool.stop(0) for pool in self.pools.values()), return_exceptions=True
        )
        self.pools.clear()
        lost, self._connection = self._connection, None
        if lost is not None:
            with contextlib.suppress(Exception):
                await lost.close()  # release our side of the socket
        retrying = AsyncRetrying(
            wait=wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.2),
            retry=retry_if_exception_type(
                (BedsError, aiormq.exceptions.AMQPError, ConnectionError, OSError)
            ),
            before_sleep=lambda state: logger.warning(
                "reconnecting to RabbitMQ failed ({}); trying again",
                state.outcome.exception() if state.outcome else "?",
            ),
        )
        connection: AbstractConnection | None = None
        async for attempt in retrying:
            with attempt:
                connection = await connect(
                    self.config.amqp.url,
                    timeout=self.config.amqp.connect_timeout,
                    name=f"beds-{self.config.node.name}",
                )
                try:
                    await self._consume(connection)
                except BaseException:
                    await asyncio.gather(
                        *(pool.stop(0) for pool in self.pools.values()), return_exceptions=True
                    )
                    self.pools.clear()
                    with contextlib.suppress(Exception):
                        await connection.close()
                    raise
        assert connection is not None  # the loop only ends after a successful attempt
        self._connection = connection
        self.reconnects += 1
        self.ready = True
        logger.info("reconnected to RabbitMQ; consuming again")

    async def wait_closed(self) -> None:
        """Wait until the node is stopped (it reconnects by itself when RabbitMQ drops it)."""
        await self._closed.wait()

    async def stop(self) -> None:
        """Stop consuming, drain in-flight requests, then close stores and the connection."""
        self._stopping = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(BaseException):
                await self._reconnecting
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


def _describe(error: BaseException | str) -> str:
    detail = str(error)
    if isinstance(error, RequestError) and error.details:
        detail = f"{detail}: {', '.join(error.details)}"
    return detail
