"""A BEDS node: the start-up sequence (IPL), the broker pools, and shutdown.

IPL: configuration (already loaded) → telemetry (when serving) → RabbitMQ → plugins, adapters
and templates → stores (``rec`` then ``rel``; required; then their optional parts such as REL
secondaries) → shared filesystem (if configured) → template database objects → brokers without
bindings → topology → brokers → ready. RabbitMQ, plugins, stores and topology are always fatal.
In production every failure is fatal; in development telemetry that cannot listen, no templates
installed, a template that cannot be prepared or whose objects are missing is a warning. A broker
without bindings is reported idle on the checklist.
``BedsNode.check()`` runs the same steps without serving and returns the checklist.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Self

import aiormq
import pluggy
from loguru import logger
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from beds.broker.admin import admin_templates
from beds.broker.dispatch import Dispatcher
from beds.broker.logs import LogsPool
from beds.broker.pool import BrokerPool
from beds.errors import BedsError, PluginError, RequestError, TemplateError
from beds.factory import Factory
from beds.heartbeat import Heartbeat
from beds.lineage import EventStore
from beds.namaste import NamasteCore, StoreSettings
from beds.nodeinfo import Check, NodeInfo, StartupError
from beds.plugins import Hooks, make_plugin_manager
from beds.routing import Bindings
from beds.transport.amqp import amqp_user, connect, declare_topology, redact
from beds.transport.control import ControlChannel
from beds.transport.events import EventPublisher

if TYPE_CHECKING:
    from types import TracebackType

    from aiormq.abc import AbstractConnection

    from beds.config.model import Config
    from beds.registry import TemplateRegistry
    from beds.telemetry import Telemetry
    from beds.templates.model import Template

__all__ = ("BedsNode", "Check", "NodeInfo", "StartupError")


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
        self.dispatchers: dict[str, Dispatcher] = {}
        """One per broker type, so its counters (``retried``, ``over_budget``) are per broker."""
        self.events: EventPublisher | None = None
        """Publishes lineage events and audit records to the logs exchange, while serving."""
        self.telemetry: Telemetry | None = None
        """The HTTP endpoints and metrics (``[telemetry]``), while the node serves them."""
        self.control: ControlChannel | None = None
        """Control events to and from the environment's other nodes (``[control]``)."""
        self.heartbeat: Heartbeat | None = None
        """This node's heartbeats, and the latest of every node (``peers``)."""
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

    @property
    def state(self) -> Literal["starting", "ready", "reconnecting", "stopping", "stopped"]:
        """Where the node is in its life; only ``ready`` serves (``GET /ready``)."""
        if self._closed.is_set():
            return "stopped"
        if self._stopping:
            return "stopping"
        if self.ready:
            return "ready"
        if self._reconnecting is not None and not self._reconnecting.done():
            return "reconnecting"
        return "starting"

    @property
    def connection(self) -> AbstractConnection | None:
        """The node's AMQP connection while it has one."""
        return self._connection

    @property
    def telemetry_url(self) -> str | None:
        """Where the telemetry endpoints answer, such as ``http://127.0.0.1:9464``.

        With ``telemetry.port = 0`` this names the port the node picked.
        """
        return self.telemetry.url if self.telemetry is not None else None

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
        cause = error if isinstance(error, BaseException) else None
        self.checks.append(Check(name=name, status="failed", detail=detail, error=cause))
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
        stores = {t.store for t in registry.templates.values()}
        if self.keeps_events:
            stores.add(self.config.lineage.store)
        for store in sorted(stores):
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
        if self.keeps_events and self.event_store is None:
            self._fail(
                "lineage store",
                f"this role's logs brokers keep events in store {self.config.lineage.store!r} "
                "(key lineage.store), whose adapter cannot store events",
            )
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

    def _check_templates_installed(self) -> None:
        """A node without templates serves no request: a warning in development, else fatal."""
        if self.registry is not None and not self.registry.templates:
            self._problem(
                "templates",
                "no templates are installed, so this node serves no requests: install a "
                "template package (docs/writing-a-domain.md), such as beds-templates-example",
            )

    @property
    def event_store(self) -> EventStore | None:
        """The adapter of ``lineage.store``, if it can store lineage events."""
        adapter: object = self.adapters.get(self.config.lineage.store)
        return adapter if isinstance(adapter, EventStore) else None

    @property
    def keeps_events(self) -> bool:
        """Whether this node stores lineage events (its role has a ``logs`` broker)."""
        return any(settings.type == "logs" for settings in self.config.brokers.values())

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
            # Optional parts of a store (REL secondaries): a warning in development.
            optional_checks = getattr(adapter, "optional_checks", None)
            if optional_checks is not None:
                for name, problem in await optional_checks():
                    if problem is None:
                        self._ok(name)
                    else:
                        self._problem(name, problem)

    def _check_shared_path(self) -> None:
        """IPL: the shared filesystem, if configured, is a folder this node can write to."""
        path = self.config.node.shared_path
        if not path:
            return
        try:
            with tempfile.NamedTemporaryFile(dir=path, prefix=".beds-ipl-"):
                pass
        except OSError as exc:
            reason = exc.strerror or str(exc)
            self._problem(
                "shared filesystem", f"cannot write to {path}: {reason} (key node.shared_path)"
            )
            return
        self._ok("shared filesystem", path)

    def _check_bindings(self) -> None:
        """IPL: a broker without bindings consumes a queue nothing routes to (a seed placeholder).

        Said on its checklist line, not warned: the seed roles carry such placeholders (SPEC),
        which a config cannot remove, and ``beds check`` must pass on the seed configuration.
        """
        role = self.config.node.role
        for broker, settings in self.config.brokers.items():
            if settings.bindings:
                continue
            detail = (
                f"idle: no bindings, so its queue receives nothing (bind routing keys in "
                f"[roles.{role}.brokers.{broker}] bindings)"
            )
            self._ok(f"broker {broker}", detail)

    def _check_events_destination(self) -> None:
        """IPL: lineage events and audit records need a ``logs`` broker in some role to keep them.

        Without one nothing takes them off the logs exchange: they wait in the node's memory and
        the oldest are dropped (audit records too), so production refuses to start.
        """
        audited = sorted(name for name, t in self.templates.items() if t.capabilities.audit)
        if not (self.config.lineage.enabled or audited):
            return
        if any(
            settings.type == "logs"
            for role in self.config.roles.values()
            for settings in role.brokers.values()
        ):
            return
        what = "lineage events"
        if audited:
            what += f" and the audit records of {', '.join(audited)}"
        self._problem(
            "events",
            f'no role has a logs broker (type = "logs"), so nothing stores {what}; add one '
            "(the seed admin role's adminLogsBroker) or set lineage.enabled = false",
        )

    async def _verify_templates(self) -> None:
        for name, template in sorted(self.templates.items()):
            try:
                await self.adapters[template.store].verify(template)
            except RequestError as exc:
                # Development keeps serving: calls then fail with DatabaseObjectMissing by name.
                self._problem(f"template {name} objects", exc)
                continue
            self._ok(f"template {name} objects")

    async def _start_telemetry(self) -> None:
        """IPL (serving only): the HTTP endpoints, first, so probes get answers during IPL."""
        settings = self.config.telemetry
        if not settings.enabled:
            return
        from beds.telemetry import Telemetry  # only when serving: aiohttp takes time to import

        telemetry = Telemetry(self)
        try:
            await telemetry.start()
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            self._problem(
                "telemetry",
                f"cannot listen on {settings.host}:{settings.port}: {reason} (key telemetry.port)",
            )
            return
        self.telemetry = telemetry
        self._ok("telemetry", telemetry.url)

    async def _ipl(self, *, serve: bool = False) -> AbstractConnection:
        """Config → telemetry → RabbitMQ → plugins/templates → stores → objects → bindings."""
        self.checks = [
            Check(name="config", status="ok", detail=", ".join(self.config.files) or "defaults")
        ]
        if serve:
            await self._start_telemetry()
        connection = await self._connect_amqp()
        try:
            self.load_plugins()
            self._check_templates_installed()
            await self._start_stores()
            self._check_shared_path()
            await self._verify_templates()
            self._check_bindings()
            self._check_events_destination()
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
            self._connection = await self._ipl(serve=True)
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
        if self.heartbeat is not None:
            self.heartbeat.start()
        if self.telemetry is not None:
            self.telemetry.serving()
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
        node, lineage = self.config.node, self.config.lineage
        if lineage.enabled or any(t.capabilities.audit for t in self.templates.values()):
            self.events = EventPublisher(
                self.config.amqp.logs_exchange,
                node=node.name,
                env=node.env,
                batch_size=lineage.batch_size,
                flush_interval=lineage.flush_interval,
                log_level=lineage.log_level,
            )
        if self.config.control.enabled:
            self.control = ControlChannel(self.config, user=amqp_user(self.config.amqp.url))
            self.heartbeat = Heartbeat(
                self.control,
                self,
                identity={"name": node.name, "role": node.role, "env": node.env},
                interval=self.config.control.heartbeat_seconds,
            )
        store = self.event_store
        builtins = admin_templates(store) if store is not None and self.keeps_events else None
        self.dispatchers = {
            broker: Dispatcher(
                self.factory,
                node=node.name,
                env=node.env,
                max_message_bytes=self.config.amqp.max_message_bytes,
                hooks=self.hooks,
                reliability=self.config.reliability,
                events=self.events,
                trace=lineage.enabled,
                builtins=builtins,
                bindings=Bindings(settings.bindings),
            )
            for broker, settings in self.config.brokers.items()
        }
        try:
            await self._consume(connection)
        except (aiormq.exceptions.AMQPError, ConnectionError) as exc:
            self._fail("topology and brokers", f"RabbitMQ refused a declaration: {exc!r}")
        self._ok(
            "brokers", ", ".join(f"{b} x{s.instances}" for b, s in self.config.brokers.items())
        )

    async def _consume(self, connection: AbstractConnection) -> None:
        """Declare the topology and start one pool per broker on ``connection``."""
        channel = await connection.channel()
        queues = await declare_topology(channel, self.config)
        await channel.close()
        if self.events is not None:
            await self.events.attach(connection)
        if self.control is not None:
            await self.control.attach(connection)
        for broker, settings in self.config.brokers.items():
            common: dict[str, Any] = {
                "queue": queues[broker],
                "dispatcher": self.dispatchers[broker],
                "dead_letter_exchange": self.config.amqp.dead_letter_exchange,
                "count_redeliveries": self.config.amqp.queue_type == "classic",
                "observer": self.telemetry.observer(broker) if self.telemetry else None,
            }
            store = self.event_store
            pool = (
                LogsPool(broker, settings, store=store, **common)
                if settings.type == "logs" and store is not None
                else BrokerPool(broker, settings, **common)
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
            # Any failure, not only the expected ones: a node that stopped trying would stay
            # "reconnecting" for good, serving nothing, with nothing in its log.
            retry=retry_if_exception_type(Exception),
            before_sleep=lambda state: logger.warning(
                "reconnecting to RabbitMQ failed ({!r}); trying again",
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
        telemetry = self.telemetry  # /ready answers 503 from here on; /health until closed
        if telemetry is not None:
            await telemetry.stop_polling()
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(BaseException):
                await self._reconnecting
        was_ready, self.ready = self.ready, False
        if was_ready and self.hooks is not None:
            with contextlib.suppress(Exception):
                await self.hooks.node_stopping(self.info)
        if self.heartbeat is not None:
            await self.heartbeat.stop()
        drain = self.config.node.drain_seconds
        await asyncio.gather(
            *(pool.stop(drain) for pool in self.pools.values()), return_exceptions=True
        )
        self.pools.clear()
        events, self.events = self.events, None
        if events is not None:
            await events.aclose()  # the last batch goes out before the connection closes
        control, self.control = self.control, None
        if control is not None:
            await control.aclose()
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()
        await self._close_adapters()
        if telemetry is not None:
            await telemetry.stop()
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
