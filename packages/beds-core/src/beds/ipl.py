"""IPL, the initial program load: a node's start-up checks, in order, and their checklist.

Configuration (already loaded) → the production policy (no connection yet) → RabbitMQ →
plugins, adapters and templates → templates open to anonymous writes → token keys (auth) →
stores (one adapter per connection: a store's default one, and each named database a template
uses, in name order; required; each one's recorded schema migrations; then their optional parts
such as REL secondaries) →
shared filesystem (if configured) → template database objects → brokers without bindings and
tickets brokers' lanes → where events go (a logs broker; syslog's receiver).

Why this module is long: it is the checklist, one short method per check, kept together so that
:meth:`Ipl.run` reads as the order of the start-up sequence.

:class:`beds.node.BedsNode` runs these steps (with telemetry first when serving, and the
brokers after them); ``BedsNode.check()`` runs them without serving.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pluggy
from loguru import logger

from beds.auth import Authenticator, OidcVerifier, Revocations, SessionTokens, TokenKeys
from beds.calgon.lanes import lane_templates, node_lanes
from beds.calgon.retention import swept_templates
from beds.calgon.tickets import WAREHOUSE_LANE, TicketStore
from beds.config.stores import DATABASES, connection_table, split_connection
from beds.errors import BedsError, ConfigError, PluginError, RequestError, TemplateError
from beds.lineage import EventStore
from beds.migrations import MigrationStore, files_for, migration_version, plan_migrations
from beds.namaste import NamasteCore, StoreSettings
from beds.nodeinfo import Check, StartupError
from beds.plugins import Hooks, make_plugin_manager
from beds.policy import findings
from beds.provision.needs import TemplateUse, request_patterns, served_templates
from beds.transport.amqp import broker_index, connect_to, redact

if TYPE_CHECKING:
    from aiormq.abc import AbstractConnection

    from beds.config.model import Config
    from beds.envelopes import Operation
    from beds.handlers import Handler
    from beds.registry import AdapterRegistry, TemplateRegistry
    from beds.templates.model import Template

__all__ = ("Ipl",)


class Ipl:
    """One node's start-up steps and what they found.

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
        """The checklist so far, in order."""
        self.adapters: dict[str, NamasteCore] = {}
        """One adapter per connection (:attr:`beds.templates.model.Template.connection`): a
        store's default one by the store's name (``rel``), a named database's as
        ``rel.warehouse``."""
        self.templates: dict[str, Template] = {}
        """The templates this node serves: registered and prepared by their adapter."""
        self.registry: TemplateRegistry | None = None
        self.hooks: Hooks | None = None
        self.handlers: dict[tuple[str, Operation], Handler] = {}
        """Template handlers of the served templates (:mod:`beds.handlers`)."""
        self.authenticator: Authenticator | None = None
        """Turns request credentials into principals (after :meth:`load_auth`)."""

    def ok(self, name: str, detail: str = "") -> None:
        """A check passed."""
        self.checks.append(Check(name=name, status="ok", detail=detail))
        logger.info("IPL {}: ok{}", name, f" ({detail})" if detail else "")

    def fail(self, name: str, error: BaseException | str) -> NoReturn:
        """A required check failed: raise ``StartupError`` with the checklist so far."""
        detail = _describe(error)
        cause = error if isinstance(error, BaseException) else None
        self.checks.append(Check(name=name, status="failed", detail=detail, error=cause))
        logger.error("IPL {}: {}", name, detail)
        raise StartupError(f"start-up failed at {name}: {detail}", self.checks)

    def problem(self, name: str, error: BaseException | str) -> None:
        """A non-required check failed: fatal in production, a warning in development."""
        if self.config.production:
            self.fail(name, error)
        detail = _describe(error)
        self.checks.append(Check(name=name, status="warning", detail=detail))
        logger.warning("IPL {}: {} (development: continuing)", name, detail)

    def load_plugins(self, *, every_store: bool = True) -> None:
        """IPL: plugins, adapters (built, not connected) and templates (parsed and prepared).

        Args:
            every_store: build the adapter of every store a template uses (``beds schema
                apply``), not only of those this role's templates and logs brokers use (IPL).
        """
        try:
            pm = self._pm or make_plugin_manager(
                disabled=self.config.plugins.disabled, strict=self.config.production
            )
            pm.check_pending()  # plugins registered by hand are validated too
            self.hooks = hooks = Hooks(pm)
            factories = hooks.register_adapters()
            self.registry = registry = hooks.register_templates()
            handlers = hooks.register_handlers()
        except (PluginError, TemplateError, pluggy.PluginValidationError) as exc:
            self.fail("plugins", exc)
        self.ok("plugins", f"{len(registry.templates)} templates")
        # Only the templates the role's bindings route (beds.provision.needs): the node calls no
        # other object, so its least-privilege accounts need to see no other, nor another store.
        served = served_templates(
            registry.templates,
            request_patterns(self.config.roles[self.config.node.role]),
            {name for name, _ in handlers.handlers},
        )
        # And those whose tickets this role's tickets brokers run (the warehouse lane's
        # sweeps): prepared to run their long operations, never routed a request.
        for name, template in lane_templates(self.config, registry.templates).items():
            served.setdefault(name, TemplateUse(template=template, operations=frozenset()))
        every = (
            registry.templates.values() if every_store else [u.template for u in served.values()]
        )
        connections = {t.connection for t in every if self._declared(t)}
        if self.keeps_events:
            connections.add(self.config.lineage.store)
        # The segundo role's retention scheduler records tickets of every registered template
        # with retention (beds.calgon.retention), whatever this role serves.
        keeps_tickets = bool(swept_templates(self.config, registry.templates)) or any(
            template.long_operations for template in every
        )
        if keeps_tickets:
            connections.add(self.config.calgon.store)
        for connection in sorted(connections):
            self._build_adapter(connection, factories)
        if keeps_tickets and self.ticket_store is None:
            self.fail(
                "ticket store",
                f"templates with long operations need tickets, kept in store "
                f"{self.config.calgon.store!r} (key calgon.store), whose adapter cannot keep them",
            )
        if self.keeps_events and self.event_store is None:
            self.fail(
                "lineage store",
                f"this role's logs brokers keep events in store {self.config.lineage.store!r} "
                "(key lineage.store), whose adapter cannot store events",
            )
        for name, use in served.items():
            template = use.template
            adapter = self.adapters.get(template.connection)
            if adapter is None:  # no plugin, or an undeclared database: said above
                continue
            missing = sorted(template.needs() - adapter.features)
            if missing:
                self.problem(
                    f"template {name}",
                    f"needs {', '.join(missing)}, which store {template.store!r} does not offer "
                    "(docs/templates.md, Capabilities); it is not served",
                )
                continue
            try:
                adapter.prepare(template)
            except TemplateError as exc:
                self.problem(f"template {name}", exc)
                continue
            if template.capabilities.live and not self.config.control.enabled:
                self.problem(
                    f"template {name}",
                    "declares live = true, whose record.changed events travel on the control "
                    "channel, which is off (control.enabled = false); it is not served",
                )
                continue
            self.templates[name] = template
        cached = sorted(n for n, t in self.templates.items() if t.capabilities.cache)
        if cached and not self.config.control.enabled:
            self.problem(
                "fetch cache",
                f"{', '.join(cached)} cache fetches, which needs the control channel to "
                "invalidate them on every node (control.enabled = false): their fetches go to "
                "the store",
            )
        self.handlers = handlers.for_templates(self.templates)

    def _declared(self, template: Template) -> bool:
        """Whether the template's database is configured; a problem when it is not.

        Such a template is not served (its adapter is not built for it).
        """
        if connection_table(self.config.stores, template.connection) is not None:
            return True
        key = f"stores.{template.store}.{DATABASES}"
        self.problem(
            f"template {template.name}",
            f"uses database {template.database!r} of store {template.store!r}, which the "
            f"configuration does not declare (add [{key}.{template.database}], key {key}); "
            "it is not served",
        )
        return False

    def _build_adapter(self, connection: str, factories: AdapterRegistry) -> None:
        """Build one connection's adapter from its settings (a store's, or a named database's)."""
        store = split_connection(connection)[0]
        factory = factories.factories.get(store)
        if factory is None:
            self.problem(f"adapter {connection}", f"no installed plugin provides store {store!r}")
            return
        try:
            self.adapters[connection] = factory(StoreSettings.of(self.config, connection))
        except BedsError as exc:
            self.fail(f"adapter {connection}", exc)

    def check_templates_installed(self) -> None:
        """A node without templates serves no request: a warning in development, else fatal."""
        if self.registry is not None and not self.registry.templates:
            self.problem(
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
    def ticket_store(self) -> TicketStore | None:
        """The adapter of ``calgon.store``, if it keeps CALGON tickets."""
        adapter: object = self.adapters.get(self.config.calgon.store)
        return adapter if isinstance(adapter, TicketStore) else None

    @property
    def keeps_events(self) -> bool:
        """Whether this node stores lineage events (its role has a ``logs`` broker)."""
        return any(settings.type == "logs" for settings in self.config.brokers.values())

    async def connect_amqp(self) -> AbstractConnection:
        """IPL: RabbitMQ answers (required)."""
        try:
            connection = await connect_to(self.config.amqp, name=f"beds-{self.config.node.name}")
        except BedsError as exc:  # a TLS file that cannot be used, too
            self.fail("rabbitmq", exc)
        addresses = self.config.amqp.addresses
        self.ok("rabbitmq", redact(addresses[broker_index(connection, addresses)]))
        return connection

    async def start_stores(self) -> None:
        """IPL: every connection that serves templates starts (required), then its optional parts.

        One adapter per connection: a store's default one (``store rel``) and each named
        database a served template uses (``store rel.warehouse``).
        """
        # Every store that serves templates is required: its templates cannot be served without it.
        for connection, adapter in sorted(self.adapters.items()):
            try:
                await adapter.start()
            except BedsError as exc:
                self.fail(f"store {connection}", exc)
            self.ok(f"store {connection}")
            await self.check_migrations(connection, adapter)
            # Optional parts of a store (REL secondaries): a warning in development.
            for name, problem in await adapter.optional_checks():
                if problem is None:
                    self.ok(name)
                else:
                    self.problem(name, problem)

    async def check_migrations(self, connection: str, adapter: NamasteCore) -> None:
        """IPL: every package's required schema version is recorded on the connection.

        A connection behind is a problem: fatal in production, a warning in development (whose
        databases ``beds schema apply`` brings up to date), and a warning on a node that has
        the connection's ``migration_url``, which must start to run the migration ticket.
        :mod:`beds.migrations`.
        """
        files = [] if self.registry is None else files_for(self.registry, connection)
        files = [file for file in files if migration_version(file.name) is not None]
        if not files or not isinstance(adapter, MigrationStore):
            return
        name = f"schema {connection}"
        try:
            applied = await adapter.read_migrations()
        except RequestError as exc:
            self.problem(name, exc)
            return
        statuses = plan_migrations(files, applied or [])
        behind = [said for status in statuses if (said := status.problem()) is not None]
        if behind and adapter.migration_store() is not None:
            # This node holds the DBA account: it must start, or nothing could run the ticket
            # that brings the schema up (`beds schema migrate`).
            detail = "; ".join(behind) + " (this node has migration_url: it runs the ticket)"
            self.checks.append(Check(name=name, status="warning", detail=detail))
            logger.warning("IPL {}: {}", name, detail)
            return
        if behind:
            self.problem(name, "; ".join(behind))
            return
        self.ok(name, ", ".join(f"{s.package} {s.installed}" for s in statuses))

    def check_shared_path(self) -> None:
        """IPL: the shared filesystem, if configured, is a folder this node can write to."""
        path = self.config.node.shared_path
        if not path:
            return
        try:
            with tempfile.NamedTemporaryFile(dir=path, prefix=".beds-ipl-"):
                pass
        except OSError as exc:
            reason = exc.strerror or str(exc)
            self.problem(
                "shared filesystem", f"cannot write to {path}: {reason} (key node.shared_path)"
            )
            return
        self.ok("shared filesystem", path)

    def check_bindings(self) -> None:
        """IPL: a broker without bindings consumes a queue nothing routes to; tickets brokers.

        An idle broker is said on its checklist line, not warned (a deployment may declare a
        broker before its templates exist). A ``tickets`` broker's line says which lane it runs
        (:mod:`beds.calgon.lanes`). A node that schedules retention sweeps when no role runs
        the warehouse lane is a problem: its sweeps would wait for ever.
        """
        role = self.config.node.role
        for broker, settings in self.config.brokers.items():
            if settings.bindings:
                continue
            detail = (
                f"idle: no bindings, so its queue receives nothing (bind routing keys in "
                f"[roles.{role}.brokers.{broker}] bindings)"
            )
            self.ok(f"broker {broker}", detail)
        for broker, settings in self.config.ticket_brokers.items():
            workers = "1 worker" if settings.instances == 1 else f"{settings.instances} workers"
            self.ok(f"broker {broker}", f"runs {settings.lane} tickets ({workers})")
        sweeps = self.registry is not None and swept_templates(self.config, self.registry.templates)
        if sweeps and not any(
            WAREHOUSE_LANE in node_lanes(self.config, other) for other in self.config.roles
        ):
            self.problem(
                "retention sweeps",
                f"this node records the sweeps of {', '.join(sweeps)} on the {WAREHOUSE_LANE} "
                f'lane, which no role runs: declare a broker with type = "tickets" and '
                f'lane = "{WAREHOUSE_LANE}" (the seed [roles.segundo.brokers.whBroker])',
            )

    def check_events_destination(self) -> None:
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
        self.problem(
            "events",
            f'no role has a logs broker (type = "logs"), so nothing stores {what}; add one '
            "(the seed admin role's adminLogsBroker) or set lineage.enabled = false",
        )

    def check_syslog(self) -> None:
        """IPL: this role's ``syslog`` brokers have a receiver (``syslog.target``); fatal if not.

        Said on the checklist when they do: where events go, and from which level.
        """
        brokers = [b for b, s in self.config.brokers.items() if s.type == "syslog"]
        if not brokers:
            return
        settings = self.config.syslog
        if not settings.target:
            self.fail(
                "syslog",
                f"{', '.join(brokers)} forward events to syslog, but syslog.target is empty: "
                'set it, such as target = "udp://127.0.0.1:514" in [syslog]',
            )
        self.ok("syslog", f"{settings.target}, {settings.level} and more severe")

    async def verify_templates(self) -> None:
        """IPL: every template's database objects exist (development: a warning).

        Each template is verified by its own connection's adapter, so in its own database.
        """
        for name, template in sorted(self.templates.items()):
            where = f"database {template.connection}" if template.database else ""
            try:
                await self.adapters[template.connection].verify(template)
            except RequestError as exc:
                # Development keeps serving: calls then fail with DatabaseObjectMissing by name.
                self.problem(f"template {name} objects", _in(exc, where))
                continue
            self.ok(f"template {name} objects", where)
        tickets = self.ticket_store
        sweeps = self.registry is not None and swept_templates(self.config, self.registry.templates)
        if tickets is not None and (
            sweeps or any(t.long_operations for t in self.templates.values())
        ):
            try:
                await tickets.verify_tickets()
            except RequestError as exc:
                self.problem("ticket store objects", exc)
            else:
                self.ok("ticket store objects", f"store {self.config.calgon.store}")

    def load_auth(self) -> None:
        """IPL: the keys that verify credentials (BEDS session tokens; an OIDC provider's)."""
        settings = self.config.auth
        base = Path(self.config.files[-1]).parent if self.config.files else None
        try:
            keys = TokenKeys.load(settings, production=self.config.production, base=base)
            oidc = (
                OidcVerifier(settings.oidc, leeway=settings.leeway, base=base)
                if settings.oidc.issuer
                else None
            )
        except ConfigError as exc:
            self.fail("auth", exc)
        sessions = SessionTokens(
            keys,
            issuer=settings.issuer,
            audience=self.config.node.env,
            ttl=settings.token_ttl,
            leeway=settings.leeway,
        )
        hooks = self.hooks
        plugins = (
            hooks.authenticate
            if hooks is not None and hooks.implemented("beds_authenticate")
            else None
        )
        self.authenticator = Authenticator(sessions, Revocations(), oidc=oidc, plugins=plugins)
        detail = f"{len(keys.verify)} token key{'' if len(keys.verify) == 1 else 's'}"
        if keys.signing is not None:
            detail += f", signs with {keys.signing_kid}"
        if oidc is not None:
            detail += f", OIDC issuer {oidc.issuer}"
        if plugins is not None:
            detail += ", plugin authenticators"
        self.ok("auth", detail)
        self._check_revocation_reach(settings.token_life)

    def _check_revocation_reach(self, token_life: float) -> None:
        """IPL: revocations reach this node within a token's life.

        They travel on the control channel, and a node that starts late replays
        ``control.replay_seconds`` of it: that must cover a token's whole life.
        """
        control = self.config.control
        if not control.enabled:
            self.problem(
                "auth revocations",
                "the control channel is off ([control] enabled = false), so a revoked token "
                f"works on this node until it expires (up to {token_life:g} s)",
            )
        elif control.replay_seconds < token_life:
            self.problem(
                "auth revocations",
                f"control.replay_seconds ({control.replay_seconds:g}) is shorter than a token's "
                f"life (auth.token_ttl + auth.leeway = {token_life:g} s): a node that starts late "
                "would not learn every revocation that still matters",
            )

    def check_policy(self) -> None:
        """IPL, before any connection: the production policy (:mod:`beds.policy`).

        Production refuses to start on any finding; development logs them as one warning.
        """
        found = findings(self.config)
        if not found:
            return
        said = "; ".join(f"{finding.key} {finding.problem}" for finding in found)
        if self.config.production:
            self.fail("policy", said)
        logger.warning("production would refuse this configuration: {}", said)

    def check_open_templates(self) -> None:
        """IPL: a template whose writes anyone may make is a mistake unless said on purpose.

        Production refuses to start with one that ``auth.open_templates`` does not name;
        development warns.
        """
        allowed = set(self.config.auth.open_templates)
        for name, template in sorted(self.templates.items()):
            writes = [op for op in template.access.open_writes if op in template.operations]
            if writes and name not in allowed:
                self.problem(
                    f"template {name} access",
                    f"anyone may {', '.join(op.value for op in writes)} (declare [access] "
                    f"roles, or name it in auth.open_templates)",
                )

    def begin(self) -> None:
        """Start a new checklist; its first line is the configuration, already loaded."""
        self.checks = [
            Check(name="config", status="ok", detail=", ".join(self.config.files) or "defaults")
        ]

    async def run(self) -> AbstractConnection:
        """RabbitMQ → plugins/templates → stores → shared path → objects → bindings → events.

        Returns:
            the open RabbitMQ connection the node serves on.

        Raises:
            StartupError: a fatal check failed (the connection is closed again).
        """
        self.check_policy()
        connection = await self.connect_amqp()
        try:
            self.load_plugins(every_store=False)
            self.check_templates_installed()
            self.check_open_templates()
            self.load_auth()
            await self.start_stores()
            self.check_shared_path()
            await self.verify_templates()
            self.check_bindings()
            self.check_events_destination()
            self.check_syslog()
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        return connection

    async def close_adapters(self) -> None:
        """Close every adapter; a failure is logged, never raised."""
        for adapter in self.adapters.values():
            try:
                await adapter.aclose()
            except Exception:
                logger.opt(exception=True).warning("closing adapter {} failed", adapter.store)


def _in(error: RequestError, where: str) -> RequestError | str:
    """A verify failure, said with its named database (the default one needs no naming)."""
    return f"{_describe(error)} (in {where})" if where else error


def _describe(error: BaseException | str) -> str:
    detail = str(error)
    if isinstance(error, RequestError) and error.details:
        detail = f"{detail}: {', '.join(error.details)}"
    return detail
