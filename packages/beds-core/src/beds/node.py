"""A BEDS node: start-up, the broker pools, reconnection and shutdown.

Start-up: telemetry (when serving; in development a port that cannot listen is a warning) →
the IPL checks (:mod:`beds.ipl`) → topology → brokers → ready. ``BedsNode.check()`` runs the
IPL checks without serving and returns the checklist.

Why this module is long: start, reconnect and stop change the same state (connection, pools,
events, control channel) in an order that matters; they stay in one class to be read together.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING, Any, Literal, Self

from loguru import logger
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from beds.auth import REVOKE_KIND
from beds.broker.admin import admin_templates
from beds.broker.logs import LogsPool
from beds.broker.operator import (
    COMMAND_KIND,
    DONE_KIND,
    apply_command,
    operator_template,
    parse_command,
)
from beds.broker.pool import BrokerPool
from beds.broker.syslog import SyslogPool
from beds.calgon.lanes import node_lanes
from beds.calgon.migrate import SCHEMA_TEMPLATE, MigrationRunner, schema_template
from beds.calgon.retention import RetentionScheduler, swept_templates
from beds.calgon.tickets import WAREHOUSE_LANE
from beds.calgon.worker import TicketWorkers
from beds.dispatch import Dispatcher
from beds.dispatch.cache import INVALIDATE, FetchCache
from beds.dispatch.calgon import Calgon
from beds.dispatch.live import RECORD_CHANGED, RECORDS_CHANGED, LivePublisher
from beds.errors import BrokerUnavailable, StoreUnavailable, UnknownTemplate, ValidationFailed
from beds.factory import Factory
from beds.heartbeat import Heartbeat
from beds.ipl import Ipl
from beds.nodeinfo import Check, NodeInfo, StartupError
from beds.pagination import Cursors, development_secret
from beds.routing import OPERATOR_TEMPLATE, Bindings
from beds.transport.amqp import (
    CONNECTION_FAILURES,
    amqp_user,
    broker_index,
    connect_to,
    declare_topology,
    redact,
)
from beds.transport.control import ControlChannel
from beds.transport.events import EventPublisher

if TYPE_CHECKING:
    from types import TracebackType

    import pluggy
    from aiormq.abc import AbstractConnection

    from beds.auth import SessionTokens
    from beds.config.model import AuthSettings, Config
    from beds.lineage import EventStore
    from beds.namaste import NamasteCore
    from beds.plugins import Hooks
    from beds.registry import TemplateRegistry
    from beds.telemetry import Telemetry
    from beds.templates.model import Template
    from beds.transport.control_event import ControlEvent

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
        self.ipl = Ipl(config, plugin_manager=plugin_manager)
        """The start-up checks, their checklist, and the plugins, adapters and templates."""
        self.pools: dict[str, BrokerPool] = {}
        self.factory: Factory | None = None
        self._connection: AbstractConnection | None = None
        self._closed = asyncio.Event()
        self._stopping = False
        self.dispatchers: dict[str, Dispatcher] = {}
        """One per broker type, so its counters (``retried``, ``over_budget``) are per broker."""
        self.events: EventPublisher | None = None
        self.ticket_workers: dict[str, TicketWorkers] = {}
        """This node's CALGON ticket runners, one per lane it serves (:mod:`beds.calgon.lanes`)."""
        self.retention_retired: dict[str, int] = {}
        """Template → records this node's retention sweeps retired (a metric: never reset)."""
        self.retention: RetentionScheduler | None = None
        """Submits the retention sweeps (:mod:`beds.calgon.retention`), on nodes that do."""
        self.draining = False
        """An operator drained the node (:mod:`beds.broker.operator`)."""
        """Run CALGON tickets on this node (:mod:`beds.calgon.worker`), when it does."""
        """Publishes lineage events and audit records to the logs exchange, while serving."""
        self.telemetry: Telemetry | None = None
        """The HTTP endpoints and metrics (``[telemetry]``), while the node serves them."""
        self.control: ControlChannel | None = None
        """Control events to and from the environment's other nodes (``[control]``)."""
        self.heartbeat: Heartbeat | None = None
        self.cache: FetchCache | None = None
        """The fetch cache of templates with ``cache = true`` (needs the control channel)."""
        self.live: LivePublisher | None = None
        """Publishes ``record.changed`` for templates with ``live = true`` (needs the control
        channel: the IPL serves no live template without it)."""
        """This node's heartbeats, and the latest of every node (``peers``)."""
        self._reconnecting: asyncio.Task[None] | None = None
        self.reconnects = 0
        """Times the node reconnected to RabbitMQ after losing it."""
        self.ready = False

    @property
    def checks(self) -> list[Check]:
        """The start-up checklist so far (``Ipl.checks``)."""
        return self.ipl.checks

    @property
    def adapters(self) -> dict[str, NamasteCore]:
        """One adapter per connection the node's templates use (``rel``, ``rel.warehouse``)."""
        return self.ipl.adapters

    @property
    def templates(self) -> dict[str, Template]:
        """The templates this node serves."""
        return self.ipl.templates

    @property
    def registry(self) -> TemplateRegistry | None:
        """What the plugins registered, after :meth:`load_plugins`."""
        return self.ipl.registry

    @property
    def hooks(self) -> Hooks | None:
        """The plugins' hooks, after :meth:`load_plugins`."""
        return self.ipl.hooks

    @property
    def event_store(self) -> EventStore | None:
        """The adapter of ``lineage.store``, if it can store lineage events."""
        return self.ipl.event_store

    @property
    def keeps_events(self) -> bool:
        """Whether this node stores lineage events (its role has a ``logs`` broker)."""
        return self.ipl.keeps_events

    def load_plugins(self) -> None:
        """IPL: plugins, adapters (built, not connected) and templates (parsed and prepared)."""
        self.ipl.load_plugins()

    @property
    def auth(self) -> AuthSettings:
        """``[auth]`` (:class:`beds.handlers.NodeServices`)."""
        return self.config.auth

    @property
    def tokens(self) -> SessionTokens | None:
        """Issues and verifies session tokens (:class:`beds.handlers.NodeServices`)."""
        authenticator = self.ipl.authenticator
        return authenticator.sessions if authenticator is not None else None

    def resolve(self, template: str) -> tuple[Template, NamasteCore]:
        """A served template and its adapter (:class:`beds.handlers.NodeServices`).

        Raises:
            UnknownTemplate: this node does not serve it (or is not serving yet).
        """
        if self.factory is None:
            raise UnknownTemplate(f"template {template!r} is not served yet")
        return self.factory.resolve(template)

    async def revoke(self, data: dict[str, Any]) -> None:
        """Revoke here at once, then on every node (:class:`beds.handlers.NodeServices`).

        Raises:
            StoreUnavailable: RabbitMQ did not take the event (this node applied it; saying it
                again, logging out again, is safe).
        """
        authenticator = self.ipl.authenticator
        if authenticator is not None and not authenticator.revocations.apply(data):
            raise ValueError(f"not a revocation: {sorted(data)}")
        if self.control is None:
            logger.warning(
                "revocation applied on this node only: the control channel is off ([control])"
            )
            return
        try:
            await self.control.publish(REVOKE_KIND, data)
        except CONNECTION_FAILURES as exc:
            raise StoreUnavailable(
                "the revocation could not be sent to the other nodes; send the request again"
            ) from exc

    @property
    def info(self) -> NodeInfo:
        """The node's identity and served templates."""
        node = self.config.node
        return NodeInfo(
            name=node.name, role=node.role, env=node.env, templates=tuple(sorted(self.templates))
        )

    @property
    def state(
        self,
    ) -> Literal["starting", "ready", "draining", "reconnecting", "stopping", "stopped"]:
        """Where the node is in its life; only ``ready`` serves (``GET /ready``).

        ``draining``: an operator drained it (``beds admin drain``); it takes no message.
        """
        if self._closed.is_set():
            return "stopped"
        if self._stopping:
            return "stopping"
        if self.ready:
            return "draining" if self.draining else "ready"
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
            self.ipl.problem(
                "telemetry",
                f"cannot listen on {settings.host}:{settings.port}: {reason} (key telemetry.port)",
            )
            return
        self.telemetry = telemetry
        self.ipl.ok("telemetry", telemetry.url)

    async def _ipl(self, *, serve: bool = False) -> AbstractConnection:
        """Telemetry (when serving), then the IPL checks; the connection to serve on."""
        self.ipl.begin()
        if serve:
            await self._start_telemetry()
        return await self.ipl.run()

    async def check(self) -> list[Check]:
        """Run the start-up checks without serving; return the checklist (never raises)."""
        try:
            connection = await self._ipl()
            await connection.close()
        except StartupError:
            pass
        finally:
            await self.ipl.close_adapters()
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
                self.ipl.fail("node_started hooks", exc)
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
        self.factory = Factory(self.templates, self.adapters, builtins=self._builtin_runners())
        node, lineage = self.config.node, self.config.lineage
        if lineage.enabled or any(t.capabilities.audit for t in self.templates.values()):
            self.events = EventPublisher(
                self.config.amqp.logs_exchange,
                node=node.name,
                env=node.env,
                batch_size=lineage.batch_size,
                flush_interval=lineage.flush_interval,
                log_level=lineage.log_level,
                user=amqp_user(self.config.amqp.url),
            )
        if self.config.control.enabled:
            self.control = ControlChannel(self.config, user=amqp_user(self.config.amqp.url))
            authenticator = self.ipl.authenticator
            if authenticator is not None:
                revocations = authenticator.revocations

                def revoke(event: ControlEvent) -> None:
                    if not revocations.apply(event.data):
                        logger.warning("a malformed {} event was ignored", REVOKE_KIND)

                self.control.subscribe(REVOKE_KIND, revoke)
            self.heartbeat = Heartbeat(
                self.control,
                self,
                identity={"name": node.name, "role": node.role, "env": node.env},
                interval=self.config.control.heartbeat_seconds,
            )
        store = self.event_store
        builtins = admin_templates(store) if store is not None and self.keeps_events else {}
        if self.control is not None:
            builtins[OPERATOR_TEMPLATE] = operator_template(self.control)
            self.control.subscribe(COMMAND_KIND, self._on_operator_command)
        secret = self.config.reads.cursor_secret.encode() or development_secret(node.env)
        cursors = Cursors(secret)
        self.cache = self._fetch_cache()
        if self.control is not None and any(t.capabilities.live for t in self.templates.values()):
            self.live = LivePublisher(
                self.control.send,
                room=self.control.room(RECORD_CHANGED),
                pack_room=self.control.room(RECORDS_CHANGED),
            )
        calgon = self._calgon(cursors)
        self.dispatchers = {
            broker: Dispatcher(
                self.factory,
                node=node.name,
                env=node.env,
                max_message_bytes=self.config.amqp.max_message_bytes,
                max_batch_records=self.config.amqp.max_batch_records,
                hooks=self.hooks,
                reliability=self.config.reliability,
                events=self.events,
                trace=lineage.enabled,
                builtins=builtins,
                bindings=Bindings(settings.bindings),
                authenticator=self.ipl.authenticator,
                handlers=self.ipl.handlers,
                services=self,
                cursors=cursors,
                cache=self.cache,
                calgon=calgon,
                live=self.live,
            )
            for broker, settings in self.config.brokers.items()
        }
        try:
            await self._consume(connection)
        except CONNECTION_FAILURES as exc:
            self.ipl.fail("topology and brokers", f"RabbitMQ refused a declaration: {exc!r}")
        self.ipl.ok(
            "brokers", ", ".join(f"{b} x{s.instances}" for b, s in self.config.brokers.items())
        )
        for workers in self.ticket_workers.values():
            workers.start()
        self.retention = self._retention()
        if self.retention is not None:
            self.retention.start()

    async def _on_operator_command(self, event: ControlEvent) -> None:
        """Act on an operator command that names this node (:mod:`beds.broker.operator`)."""
        control = self.control
        if control is None or event.at < control.joined_at:
            return  # a replay of a command sent before this node started
        data = {k: v for k, v in event.data.items() if k not in ("by", "ref")}
        try:
            command = parse_command(data, "operator.command")
        except ValidationFailed:
            logger.warning("a malformed {} event was ignored", COMMAND_KIND)
            return
        if not command.concerns(self.config.node.name):
            return
        answer: dict[str, Any] = {
            "ref": event.data.get("ref"),
            "node": self.config.node.name,
            "command": command.command,
        }
        try:
            answer["brokers"] = await apply_command(command, self.pools)
        except ValueError as exc:
            answer["error"] = str(exc)
        else:
            if command.command == "drain":
                self.draining = True
            elif command.command == "resume" and not any(p.paused for p in self.pools.values()):
                self.draining = False
            logger.warning(
                "operator {} ({}): {} {}",
                event.data.get("by", "?"),
                command.command,
                command.broker,
                answer["brokers"],
            )
        with contextlib.suppress(Exception):  # the admin node then just misses this answer
            await control.publish(DONE_KIND, answer)

    def _calgon(self, cursors: Cursors) -> Calgon | None:
        """What answers submit and ticket, and the workers that run tickets on this node.

        Only with templates that declare long operations; one :class:`TicketWorkers` per lane
        the role serves (:func:`beds.calgon.lanes.node_lanes`): the default lane on a role with
        the ``calgon.broker`` broker, another on each ``type = "tickets"`` broker.
        """
        tickets = self.ipl.ticket_store
        if tickets is None or not any(t.long_operations for t in self.templates.values()):
            return None
        settings, node = self.config.calgon, self.config.node
        assert self.factory is not None
        self.ticket_workers = {
            lane: TicketWorkers(
                tickets,
                self.factory,
                settings,
                node=node.name,
                env=node.env,
                events=self.events if self.config.lineage.enabled else None,
                lane=lane,
                workers=count,
                retired=self.retention_retired,
            )
            for lane, count in node_lanes(self.config).items()
        }
        return Calgon(
            tickets,
            settings,
            cursors,
            self.config.amqp.max_message_bytes,
            wake=self._wake_workers if self.ticket_workers else None,
        )

    def _builtin_runners(self) -> dict[str, tuple[Template, NamasteCore]]:
        """``beds_schema`` (the migration ticket) on a node that runs tickets: migrate.py."""
        registry, hooks = self.registry, self.hooks
        if self.ipl.ticket_store is None or registry is None or hooks is None:
            return {}
        if not any(t.long_operations for t in self.templates.values()):
            return {}  # no Calgon here (_calgon): nothing would record its tickets
        factories = hooks.register_adapters().factories
        runner = MigrationRunner(self.config, registry, factories, self.adapters)
        return {SCHEMA_TEMPLATE: (schema_template(), runner)}

    def _wake_workers(self) -> None:
        """A ticket was recorded here: this node's workers look now (each claims its lane)."""
        for workers in self.ticket_workers.values():
            workers.wake()

    def _retention(self) -> RetentionScheduler | None:
        """The retention scheduler, on a node whose role has ``calgon.retention_broker``."""
        tickets, registry = self.ipl.ticket_store, self.registry
        swept = swept_templates(self.config, registry.templates) if registry is not None else {}
        if tickets is None or not swept:  # the IPL failed without a ticket store for them
            return None
        workers, node = self.ticket_workers.get(WAREHOUSE_LANE), self.config.node
        return RetentionScheduler(
            tickets,
            swept,
            self.config.calgon,
            node=node.name,
            env=node.env,
            events=self.events if self.config.lineage.enabled else None,
            wake=workers.wake if workers is not None else None,
        )

    def _fetch_cache(self) -> FetchCache | None:
        """The node's fetch cache, when a template caches and the control channel is on."""
        if not any(t.capabilities.cache for t in self.templates.values()):
            return None
        control = self.control
        if control is None:
            return None  # the IPL said so: without invalidations, fetches go to the store
        cache = FetchCache(self.templates, publish=control.publish, live=lambda: control.live)

        def invalidate(event: ControlEvent) -> None:
            template = event.data.get("template")
            if isinstance(template, str):
                cache.invalidate(template)

        control.subscribe(INVALIDATE, invalidate)
        return cache

    async def _consume(self, connection: AbstractConnection) -> None:
        """Declare the topology and start one pool per broker on ``connection``."""
        channel = await connection.channel()
        queues = await declare_topology(channel, self.config)
        await channel.close()
        if self.events is not None:
            await self.events.attach(connection)
        if self.control is not None:
            await self.control.attach(connection)
            if self.cache is not None:
                self.cache.clear()  # invalidations may have been missed while it was away
        for broker, settings in self.config.brokers.items():
            common: dict[str, Any] = {
                "queue": queues[broker],
                "dispatcher": self.dispatchers[broker],
                "dead_letter_exchange": self.config.amqp.dead_letter_exchange,
                "count_redeliveries": self.config.amqp.queue_type == "classic",
                "user": amqp_user(self.config.amqp.url),
                "observer": self.telemetry.observer(broker) if self.telemetry else None,
            }
            store, trusted = self.event_store, self.config.lineage.trusted_users
            pool: BrokerPool
            if settings.type == "syslog":  # IPL made sure syslog.target is set
                pool = SyslogPool(
                    broker, settings, syslog=self.config.syslog, trusted_users=trusted, **common
                )
            elif settings.type == "logs" and store is not None:
                pool = LogsPool(
                    broker,
                    settings,
                    store=store,
                    trusted_users=trusted,
                    retention_days=self.config.lineage.retention_days,
                    **common,
                )
            else:
                pool = BrokerPool(broker, settings, **common)
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
        addresses = self.config.amqp.addresses
        # The broker just lost is tried last: with a cluster, another node answers first.
        start = broker_index(lost, addresses) + 1 if lost is not None else 0
        if lost is not None:
            with contextlib.suppress(Exception):
                await lost.close()  # release our side of the socket
        # Declaring, binding and consuming wait on the broker's answers: a connection that dies
        # (or a queue leader being elected) in between must not leave the node waiting forever.
        setup_timeout = max(4 * self.config.amqp.connect_timeout, 2.0)
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
                connection = await connect_to(
                    self.config.amqp, name=f"beds-{self.config.node.name}", start=start
                )
                index = broker_index(connection, addresses)
                try:
                    async with asyncio.timeout(setup_timeout):
                        await self._consume(connection)
                except BaseException as exc:
                    start = index + 1  # set-up failed on this broker: the next one first
                    await asyncio.gather(
                        *(pool.stop(0) for pool in self.pools.values()), return_exceptions=True
                    )
                    self.pools.clear()
                    with contextlib.suppress(Exception):
                        await connection.close()
                    if isinstance(exc, TimeoutError):
                        raise BrokerUnavailable(
                            f"declaring the queues and consumers on {redact(addresses[index])} "
                            f"took longer than {setup_timeout:g} s"
                        ) from exc
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
        retention, self.retention = self.retention, None
        if retention is not None:
            await retention.stop()
        lanes, self.ticket_workers = self.ticket_workers, {}
        for workers in lanes.values():
            await workers.stop()  # gives running tickets back for another node to resume
        events, self.events = self.events, None
        if events is not None:
            await events.aclose()  # the last batch goes out before the connection closes
        live, self.live = self.live, None
        if live is not None:
            await live.drain(drain)  # the writes answered last still reach live views
        control, self.control = self.control, None
        if control is not None:
            await control.aclose()
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()
        await self.ipl.close_adapters()
        if telemetry is not None:
            await telemetry.stop()
        self._closed.set()
