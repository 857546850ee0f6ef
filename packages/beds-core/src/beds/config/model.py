"""Typed node configuration (attrs), structured from the merged TOML layers by the loader.

Why this module is long: every configuration key is declared here, one attrs class per table,
with its default and its one-line meaning, so the whole configuration reads in one place (and
the docs test checks each key against docs/configuration.md).
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import attrs

__all__ = (
    "CONFIG_SCHEMA_VERSION",
    "DEFAULT_LANE",
    "LANES",
    "MAX_AMQP_URLS",
    "MAX_BATCH_RECORDS",
    "NAME",
    "WAREHOUSE_LANE",
    "AmqpSettings",
    "BrokerSettings",
    "CalgonSettings",
    "Config",
    "ControlSettings",
    "FieldValueError",
    "LineageSettings",
    "LogSettings",
    "NodeSettings",
    "PluginSettings",
    "ReliabilitySettings",
    "RoleSettings",
    "SyslogSettings",
    "TelemetrySettings",
    "syslog_endpoint",
)

CONFIG_SCHEMA_VERSION = 1
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
"""Node and environment names (``node.name``, ``node.env``)."""
# CALGON ticket lanes (beds.calgon.lanes): declared here, where brokers name them.
DEFAULT_LANE = "default"
"""The lane of every ticket but the retention sweeps': ``calgon.broker`` nodes run it."""
WAREHOUSE_LANE = "warehouse"
"""The lane of the retention sweeps: ``type = "tickets"`` brokers with this lane run it."""
LANES = (DEFAULT_LANE, WAREHOUSE_LANE)
"""Every lane a ticket is recorded on (a worker of any other lane would never get one)."""
_BINDING = re.compile(r"^[A-Za-z0-9_*#-]+(\.[A-Za-z0-9_*#-]+)*$")


class FieldValueError(ValueError):
    """A config value failed its validator; ``field`` lets the loader name the key path."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def _name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not NAME.fullmatch(value):
        raise FieldValueError(
            attribute.name,
            f"must start with a letter and hold only letters, digits, '_' or '-', got {value!r}",
        )


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise FieldValueError(attribute.name, f"must be greater than 0, got {value}")


MAX_BATCH_RECORDS = 10_000
"""The largest ``amqp.max_batch_records`` (and template ``[batch] max_records``) allowed."""


def _at_least(minimum: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if value < minimum:
            raise FieldValueError(attribute.name, f"must be at least {minimum}, got {value}")

    return check


def _at_most(maximum: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if value > maximum:
            raise FieldValueError(attribute.name, f"must be at most {maximum}, got {value}")

    return check


def _bindings(
    instance: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
) -> None:
    for key in value:
        if not _BINDING.match(key):
            raise FieldValueError(
                attribute.name, f"{key!r} is not a routing-key pattern such as '*.read'"
            )


def _lane(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value and value not in LANES:
        raise FieldValueError(
            attribute.name, f"must be one of {', '.join(map(repr, LANES))}, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class NodeSettings:
    """Who this node is."""

    role: str = "appServer"
    """Which role's brokers to run (a key of ``[roles]``)."""
    name: str = attrs.field(default="node", validator=_name)
    """This node's name, the first part of every event id it makes."""
    env: str = attrs.field(default="dev", validator=_name)
    """Environment (``BEDS_ENV``): dev, qa, prod…; part of queue names and event ids."""
    mode: Literal["development", "production"] = "development"
    """production: every start-up check is fatal; development: optional ones only warn."""
    drain_seconds: float = 10.0
    """On shutdown, how long in-flight requests may take to finish."""
    shared_path: str = ""
    """A folder nodes share (exports, warehouse files); checked writable at start-up when set."""
    workers: int = attrs.field(default=1, validator=_at_least(0))
    """Node processes ``beds run`` runs (:mod:`beds.supervisor`); 0: one in development, one per
    core in production."""


def _amqp_url_problem(value: str) -> str | None:
    """What is wrong with an AMQP URL, in words that never quote it (it may hold a password)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - parses the port, which raises ValueError when it is bad
    except ValueError:
        # Neither the value nor the parser's words: both may quote the password.
        return "is not a valid URL (check its host and port)"
    if parts.scheme not in ("amqp", "amqps"):
        return f"must be an amqp:// or amqps:// URL, got scheme {parts.scheme!r}"
    return None


def _amqp_url(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    problem = _amqp_url_problem(value)
    if problem is not None:
        raise FieldValueError(attribute.name, problem)


MAX_AMQP_URLS = 16
"""The most broker URLs ``amqp.urls`` may list (a cluster has a handful of nodes)."""

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def _broker_identity(url: str) -> tuple[str, str, str]:
    """(user, vhost, scheme://host:port) of an AMQP URL already checked by ``_amqp_url``."""
    parts = urlsplit(url)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    return (
        unquote(parts.username or "guest"),
        vhost,
        f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}",
    )


def _amqp_urls(
    instance: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
) -> None:
    """Every URL amqp(s)://, one scheme, user and vhost for all, no broker twice, at most 16.

    Errors name ``urls[i]`` and quote no URL: URLs hold passwords.
    """
    if len(value) > MAX_AMQP_URLS:
        raise FieldValueError(
            attribute.name, f"lists {len(value)} URLs; at most {MAX_AMQP_URLS} are allowed"
        )
    seen: dict[str, int] = {}
    first: tuple[str, str, str] | None = None
    for index, url in enumerate(value):
        field = f"{attribute.name}[{index}]"
        if not isinstance(url, str):
            raise FieldValueError(field, f"must be a string, got {type(url).__name__}")
        problem = _amqp_url_problem(url)
        if problem is not None:
            raise FieldValueError(field, problem)
        user, vhost, broker = _broker_identity(url)
        scheme = broker.partition(":")[0]
        if first is None:
            first = (user, vhost, scheme)
        elif scheme != first[2]:
            # One [amqp.tls] serves every broker: all over TLS, or none.
            raise FieldValueError(
                field,
                f"is {scheme}://, but amqp.urls[0] is {first[2]}://: every broker URL "
                "must use the same scheme",
            )
        elif user != first[0]:
            raise FieldValueError(
                field,
                f"logs in as {user!r}, but amqp.urls[0] as {first[0]!r}: every broker "
                "URL must use the same user (one cluster, one account)",
            )
        elif vhost != first[1]:
            raise FieldValueError(
                field,
                f"names vhost {vhost!r}, but amqp.urls[0] names {first[1]!r}: every "
                "broker URL must name the same vhost",
            )
        if broker in seen:
            raise FieldValueError(
                field, f"names the same broker ({broker}) as amqp.urls[{seen[broker]}]"
            )
        seen[broker] = index


@attrs.frozen(kw_only=True)
class AmqpTlsSettings:
    """TLS of the RabbitMQ connection (with an ``amqps://`` URL)."""

    ca_file: str = ""
    """PEM file of the CAs that sign RabbitMQ's certificate; empty: the system's CAs."""
    cert_file: str = ""
    """PEM file of this node's client certificate, when RabbitMQ asks for one."""
    key_file: str = ""
    """PEM file of the client certificate's private key (empty: it is in ``cert_file``)."""


@attrs.frozen(kw_only=True)
class AmqpSettings:
    """The RabbitMQ connection and topology names."""

    url: str = attrs.field(default=DEFAULT_AMQP_URL, validator=_amqp_url)
    """AMQP URL with the vhost as its path; put the password in ``BEDS__AMQP__URL``. With
    ``urls`` set it is the first of them (give one key or the other, not both)."""
    urls: tuple[str, ...] = attrs.field(default=(), validator=_amqp_urls)
    """The URLs of a RabbitMQ cluster's nodes, tried in turn (one user and vhost for all); when
    set, ``url`` is ``urls[0]``. Put the passwords in ``BEDS__AMQP__URLS``."""
    events_exchange: str = "beds.events"
    logs_exchange: str = "beds.logs"
    dead_letter_exchange: str = "beds.dlx"
    control_exchange: str = "beds.control"
    """Where nodes publish control events to each other (docs/architecture.md)."""
    queue_type: Literal["classic", "quorum"] = "classic"
    max_message_bytes: int = attrs.field(default=1024 * 1024, validator=_at_least(256))
    max_batch_records: int = attrs.field(
        default=500, validator=[_at_least(1), _at_most(MAX_BATCH_RECORDS)]
    )
    """Most records (or keys) one batch request carries (``create_many``…); a template's
    ``[batch] max_records`` may lower it. More is refused with ``BEDS-400`` before anything
    runs (docs/wire-contract.md, "Batches")."""
    connect_timeout: float = 5.0
    tls: AmqpTlsSettings = attrs.field(factory=AmqpTlsSettings)

    @property
    def live_exchange(self) -> str:
        """Where live templates' writes are announced (``record.changed``...).

        Named after the control exchange, so that environments kept apart by it stay apart.
        """
        return f"{self.control_exchange}.live"

    def __attrs_post_init__(self) -> None:
        if not self.urls:
            return
        if self.url not in (DEFAULT_AMQP_URL, self.urls[0]):
            raise FieldValueError(
                "url", "and amqp.urls are both set: give the broker URLs in amqp.urls only"
            )
        # url reads as the first broker: its user and vhost are every broker's.
        object.__setattr__(self, "url", self.urls[0])

    @property
    def addresses(self) -> tuple[str, ...]:
        """The broker URLs to connect to, in order: ``urls``, else ``url`` alone."""
        return self.urls or (self.url,)


_QUEUE_NAME_MAX_BYTES = 255  # AMQP queue names are short strings


def _queue(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    size = len(value.encode("utf-8"))
    if size > _QUEUE_NAME_MAX_BYTES:
        raise FieldValueError(
            attribute.name,
            f"must be at most {_QUEUE_NAME_MAX_BYTES} bytes in UTF-8 (an AMQP queue name), "
            f"got {size}",
        )
    if value.startswith("amq."):
        raise FieldValueError(
            attribute.name, f"must not start with 'amq.' (RabbitMQ reserves it), got {value!r}"
        )


@attrs.frozen(kw_only=True)
class BrokerSettings:
    """One broker type: its queue's bindings and how many tasks consume it.

    A ``tickets`` broker consumes no queue: it names a ticket lane whose CALGON tickets the
    node runs, ``instances`` at once (:mod:`beds.calgon.worker`).
    """

    type: Literal["requests", "logs", "syslog", "tickets"] = "requests"
    """``requests``: a queue on the events exchange, answered by the dispatcher. ``logs``: a queue
    on the logs exchange whose lineage events the node stores (``[lineage] store``). ``syslog``:
    a queue on the logs exchange whose events the node forwards to ``[syslog] target``.
    ``tickets``: no queue; ``instances`` workers run the tickets of ``lane``."""
    instances: int = attrs.field(default=1, validator=_at_least(1))
    """Tasks handling messages concurrently: the node's throttle for this broker (``tickets``:
    tickets of its lane run at once)."""
    lane: str = attrs.field(default="", validator=_lane)
    """``tickets`` brokers only (and required there): the ticket lane their workers serve, such
    as ``"warehouse"`` (retention sweeps; :mod:`beds.calgon.lanes`)."""
    bindings: tuple[str, ...] = attrs.field(default=(), validator=_bindings)
    """Routing-key patterns bound on the events exchange, for example ``"*.read"``."""
    prefetch: int = attrs.field(default=0, validator=_at_least(0))
    """Unacknowledged messages RabbitMQ may send ahead; 0 means twice ``instances``."""
    queue: str = attrs.field(default="", validator=_queue)
    """The queue's name; empty means ``beds.{env}.{role}.{broker}`` (``Config.queue_name``)."""

    def __attrs_post_init__(self) -> None:
        if self.type != "tickets":
            if self.lane:
                raise FieldValueError("lane", 'is only for brokers of type = "tickets"')
            return
        if not self.lane:
            raise FieldValueError(
                "lane", 'a type = "tickets" broker names the lane it runs, such as "warehouse"'
            )
        # A tickets broker consumes no queue: a key about its queue would be silently ignored.
        queue_keys = (
            ("bindings", self.bindings),
            ("queue", self.queue),
            ("prefetch", self.prefetch),
        )
        for key, value in queue_keys:
            if value:
                raise FieldValueError(
                    key, 'is not allowed on a type = "tickets" broker, which consumes no queue'
                )

    @property
    def consumes(self) -> bool:
        """Whether the broker consumes a queue (every type but ``tickets``)."""
        return self.type != "tickets"


@attrs.frozen(kw_only=True)
class RoleSettings:
    """The brokers a node of this role runs."""

    brokers: dict[str, BrokerSettings] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ReliabilitySettings:
    """How brokers treat failures (docs/architecture.md, "Ack policy")."""

    retry_attempts: int = attrs.field(default=4, validator=_at_least(1))
    """Tries of a transiently failing request (store unreachable, lock timeout), first included."""
    retry_initial_delay: float = 0.05
    """Seconds before the first retry; the delay doubles (with jitter) up to ``retry_max_delay``."""
    retry_max_delay: float = 2.0
    max_deliveries: int = attrs.field(default=5, validator=_at_least(1))
    """Deliveries of one message without an outcome (its handler died) before it is poison and
    dead-lettered. Quorum queues enforce it as ``x-delivery-limit``."""
    handler_budget: float = attrs.field(default=5.0, validator=_positive)
    """Seconds a handler may run before it is reported as over budget."""
    settle_grace: float = attrs.field(default=25.0, validator=_positive)
    """Seconds past ``handler_budget`` after which the broker settles the delivery itself
    (dead letter, caller told) and stops the handler: no delivery stays unsettled longer. An
    idempotency key held by an attempt is given up after the same time."""
    idempotency_ttl: float = attrs.field(default=86400.0, validator=_positive)
    """Seconds an idempotency key is remembered; a repeat after that runs the write again."""


@attrs.frozen(kw_only=True)
class LogSettings:
    """Where and how the node logs."""

    level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    format: Literal["console", "json"] = "console"


def _port(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= 65535:
        raise FieldValueError(attribute.name, f"must be a TCP port from 0 to 65535, got {value}")


def _host(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.strip():
        raise FieldValueError(attribute.name, "must be a host name or address, got ''")


@attrs.frozen(kw_only=True)
class TelemetrySettings:
    """The node's HTTP endpoints for probes and Prometheus (docs/telemetry.md)."""

    enabled: bool = True
    """Serve ``/health``, ``/ready``, ``/metrics`` and ``/status`` over HTTP."""
    host: str = attrs.field(default="127.0.0.1", validator=_host)
    """Address to listen on; ``0.0.0.0`` for every interface (for example in a container)."""
    port: int = attrs.field(default=9464, validator=_port)
    """TCP port; 0 picks a free port, which the node logs (``BedsNode.telemetry_url``)."""
    queue_poll_seconds: float = attrs.field(default=15.0, validator=_positive)
    """Seconds between two reads of the queue depths and the dead-letter queue's head."""


@attrs.frozen(kw_only=True)
class LineageSettings:
    """Event lineage (docs/architecture.md, "Event lineage")."""

    enabled: bool = True
    """Publish every request's events (request, database call, log records) to the logs
    exchange. Audit records are published whatever this says."""
    store: str = "rec"
    """The store whose adapter keeps events on nodes with a ``logs`` broker (``msLogs``)."""
    log_level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """The least severe log record made during a request that becomes one of its events."""
    batch_size: int = attrs.field(default=500, validator=_at_least(1))
    """Most events per message on the logs exchange."""
    flush_interval: float = attrs.field(default=0.05, validator=_positive)
    """Seconds between two batches while events wait."""
    trusted_users: tuple[str, ...] = ()
    """AMQP users whose lineage and audit batches a logs broker stores (``user_id``); others are
    dead-lettered (``BEDS-403O``). Empty: any user RabbitMQ vouched for (production refuses)."""
    retention_days: int = attrs.field(default=30, validator=_at_least(0))
    """Days a logs broker keeps lineage and audit events: older ones are purged in the
    background every ten minutes, in batches (:mod:`beds.broker.logs`). 0 keeps them forever."""


@attrs.frozen(kw_only=True)
class ControlSettings:
    """The control-event channel between nodes (docs/architecture.md, "Control events")."""

    enabled: bool = True
    """Join the environment's control stream: publish heartbeats, receive events."""
    heartbeat_seconds: float = attrs.field(default=10.0, validator=_positive)
    """Seconds between two ``node.status`` events of this node."""
    replay_seconds: float = attrs.field(default=1200.0, validator=_positive)
    """How far back a starting node reads the stream (events still relevant to it); longer than
    a token's life (``auth.token_ttl``), so a late node learns every revocation that matters."""
    retention_seconds: float = attrs.field(default=3600.0, validator=_positive)
    """How long the streams keep events (``x-max-age``; set when a stream is first made)."""
    live_replay_seconds: float = attrs.field(default=60.0, validator=_positive)
    """How far back a reader of live updates (``record.changed``, an HTTP edge) starts in the
    live stream: long enough to bridge a restart, short so that a start after heavy writing does
    not read them all again. Nodes without a live reader never read that stream."""
    trusted_users: tuple[str, ...] = ()
    """AMQP users whose events are accepted (``user_id``); empty: any user RabbitMQ vouched for
    (production refuses)."""
    trusted_by_kind: dict[str, tuple[str, ...]] = attrs.field(factory=dict)
    """Per event kind (``auth.revoke``), the AMQP users whose events of that kind are accepted,
    in place of ``trusted_users``."""

    def trusts(self, kind: str, user: str) -> bool:
        """Whether an event of ``kind`` published by AMQP ``user`` is believed."""
        trusted = self.trusted_by_kind.get(kind, self.trusted_users)
        return bool(user) and (not trusted or user in trusted)


@attrs.frozen(kw_only=True)
class CalgonSettings:
    """Long operations and their tickets (docs/calgon.md)."""

    store: str = "rel"
    """The store whose adapter keeps tickets (its ``beds_ticket_*`` objects)."""
    broker: str = "mBroker"
    """Nodes whose role has a broker of this name run tickets of the ``default`` lane (the seed
    ``appServer``); other lanes run on ``type = "tickets"`` brokers."""
    workers: int = attrs.field(default=2, validator=_at_least(0))
    """Default-lane tickets one node runs at once (0: it runs none, but still answers
    submits)."""
    lease_seconds: float = attrs.field(default=30.0, validator=_positive)
    """How long a running ticket stays its node's without a renewal; a node renews it a few
    times per lease, so another node takes a ticket over this long after its node died."""
    poll_seconds: float = attrs.field(default=1.0, validator=_positive)
    """How often an idle worker looks for tickets other nodes recorded."""
    max_attempts: int = attrs.field(default=3, validator=_at_least(1))
    """Claims of one ticket before it is failed (``BEDS-500A``) instead of tried again."""
    ticket_ttl: float = attrs.field(default=604_800.0, validator=_positive)
    """Seconds a finished ticket and its result are kept (then ``BEDS-410``)."""
    page_size: int = attrs.field(default=500, validator=_at_least(1))
    """Most result records one ``ticket`` reply carries (the rest are paged with cursors)."""
    retention_broker: str = "whBroker"
    """Nodes whose role has a broker of this name submit the retention sweeps (the seed
    ``segundo``; :mod:`beds.calgon.retention`). The sweeps run on the ``warehouse`` lane: a
    ``type = "tickets"`` broker with ``lane = "warehouse"`` (the seed ``whBroker`` is both)."""
    retention_interval: float = attrs.field(default=3600.0, validator=_positive)
    """Seconds between two retention sweeps of a template (one ticket per interval)."""


_SYSLOG_SCHEMES = ("udp", "tcp")
_APP_NAME = re.compile(r"^[!-~]{1,48}$")
"""RFC 5424's APP-NAME: 1 to 48 printable US-ASCII characters, no space."""


def _syslog_target(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value and syslog_endpoint(value) is None:
        # Not the value: a mistaken one might hold a password.
        raise FieldValueError(
            attribute.name,
            "must be udp://host:port or tcp://host:port, with no user, path or query (or empty: "
            "no syslog)",
        )


def syslog_endpoint(target: str) -> tuple[Literal["udp", "tcp"], str, int] | None:
    """A syslog target's transport, host and port (``None``: not such a URL, or empty)."""
    try:
        parts = urlsplit(target)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme, parts.hostname
    if scheme not in _SYSLOG_SCHEMES or not host or not port:
        return None
    if parts.username is not None or parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    return ("udp" if scheme == "udp" else "tcp"), host, port


def _app_name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _APP_NAME.fullmatch(value):
        raise FieldValueError(
            attribute.name,
            f"must be 1 to 48 printable ASCII characters without spaces (RFC 5424 APP-NAME), "
            f"got {value!r}",
        )


SyslogLevel = Literal["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]
"""RFC 5424 severities, most severe first."""
SyslogFacility = Literal[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
    "local7",
]  # fmt: skip
"""RFC 5424 facilities by their usual names (``beds.broker.rfc5424`` has their numbers)."""


@attrs.frozen(kw_only=True)
class SyslogSettings:
    """Where ``syslog`` brokers forward events (docs/telemetry.md, "Syslog")."""

    target: str = attrs.field(default="", validator=_syslog_target)
    """``udp://host:port`` or ``tcp://host:port`` (RFC 5424 messages; TCP with octet counting);
    empty: no syslog, and a role with a ``syslog`` broker does not start."""
    level: SyslogLevel = "warning"
    """The least severe event forwarded (``beds.broker.rfc5424.severity_of`` maps events)."""
    facility: SyslogFacility = "local0"
    """The facility of every message (its PRI)."""
    app_name: str = attrs.field(default="beds", validator=_app_name)
    """APP-NAME of every message."""
    max_message_bytes: int = attrs.field(default=2048, validator=[_at_least(480), _at_most(65000)])
    """Most bytes of one message; a longer one has its text cut (RFC 5424: receivers must take
    480, should take 2048; a UDP datagram holds under 65507)."""


@attrs.frozen(kw_only=True)
class ReadSettings:
    """Fetches (docs/templates.md, "Pagination")."""

    cursor_secret: str = attrs.field(default="", repr=False)
    """Signs page cursors, so a changed one is refused; every node of an environment needs the
    same. A secret: set it with ``BEDS__READS__CURSOR_SECRET`` or its ``_FILE``. Empty: a
    development node derives one from the environment's name (production refuses)."""


@attrs.frozen(kw_only=True)
class OidcSettings:
    """An external identity provider whose access tokens a node accepts (Keycloak, Auth0…)."""

    issuer: str = ""
    """The ``iss`` claim tokens must carry; empty: OIDC tokens are not accepted."""
    audience: str = ""
    """The ``aud`` claim tokens must carry (required with ``issuer``)."""
    jwks_file: str = ""
    """The provider's JSON Web Key Set, as a file (relative to the config file)."""
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    """Signature algorithms accepted; never ``none`` and never an HMAC one."""
    roles_claim: str = "roles"
    """The claim holding the principal's roles (a list of names)."""
    handle_claim: str = "preferred_username"
    """The claim naming the principal (falls back to ``sub``)."""


@attrs.frozen(kw_only=True)
class PasswordSettings:
    """argon2id parameters for password hashes (beds-identity).

    A hash made with other parameters is replaced at the user's next login.
    """

    time_cost: int = attrs.field(default=3, validator=_at_least(1))
    memory_kib: int = attrs.field(default=65536, validator=_at_least(8))
    parallelism: int = attrs.field(default=4, validator=_at_least(1))
    min_length: int = attrs.field(default=8, validator=_at_least(1))
    """Shortest password accepted at sign-up and password change."""


@attrs.frozen(kw_only=True)
class ThrottleSettings:
    """Failed logins allowed per handle and per origin, on each node (beds-identity)."""

    attempts: int = attrs.field(default=5, validator=_at_least(1))
    """Failures within ``window`` after which logins are refused (BEDS-429)."""
    window: float = attrs.field(default=900.0, validator=_positive)
    """Seconds a failure counts."""


@attrs.frozen(kw_only=True)
class AuthSettings:
    """Authenticated principals (docs/security.md)."""

    keys_dir: str = ""
    """Folder of the token keys: ``{kid}.pub.pem`` verify BEDS session tokens, and
    ``{signing_key_id}.pem`` (private, only where tokens are issued) signs them. Empty: in
    development ``.beds/auth`` with a key made on first use; production requires it."""
    signing_key_id: str = "dev"
    """The ``kid`` of the key that signs new tokens; older kids still verify (rotation)."""
    token_ttl: float = attrs.field(default=900.0, validator=_positive)
    """Seconds a session token is valid; a revoked one is refused within ``revocation_bound``."""
    session_ttl: float = attrs.field(default=86400.0 * 14, validator=_positive)
    """Seconds a login session lasts (``beds login`` renews tokens within it)."""
    issuer: str = "beds"
    """``iss`` of BEDS session tokens; ``aud`` is the environment's name."""
    leeway: float = attrs.field(default=5.0, validator=_at_least(0))
    """Seconds of clock difference tolerated on ``exp``/``nbf``/``iat``."""
    open_templates: tuple[str, ...] = ()
    """Templates whose writes anyone may make, said on purpose: production refuses to start
    with any other template that has a write without access rules."""
    oidc: OidcSettings = attrs.field(factory=OidcSettings)
    passwords: PasswordSettings = attrs.field(factory=PasswordSettings)
    throttle: ThrottleSettings = attrs.field(factory=ThrottleSettings)

    @property
    def token_life(self) -> float:
        """Seconds a token may be accepted after it was issued: ``token_ttl + leeway``.

        How long a revocation must be remembered.
        """
        return self.token_ttl + self.leeway


@attrs.frozen(kw_only=True)
class PluginSettings:
    """Plugin selection."""

    disabled: tuple[str, ...] = ()
    """Entry-point names not to load (also ``BEDS_DISABLED_PLUGINS``)."""


@attrs.frozen(kw_only=True)
class Config:
    """A node's whole configuration."""

    schema_version: int = CONFIG_SCHEMA_VERSION
    node: NodeSettings = attrs.field(factory=NodeSettings)
    amqp: AmqpSettings = attrs.field(factory=AmqpSettings)
    log: LogSettings = attrs.field(factory=LogSettings)
    reliability: ReliabilitySettings = attrs.field(factory=ReliabilitySettings)
    plugins: PluginSettings = attrs.field(factory=PluginSettings)
    telemetry: TelemetrySettings = attrs.field(factory=TelemetrySettings)
    lineage: LineageSettings = attrs.field(factory=LineageSettings)
    control: ControlSettings = attrs.field(factory=ControlSettings)
    reads: ReadSettings = attrs.field(factory=ReadSettings)
    calgon: CalgonSettings = attrs.field(factory=CalgonSettings)
    syslog: SyslogSettings = attrs.field(factory=SyslogSettings)
    auth: AuthSettings = attrs.field(factory=AuthSettings)
    roles: dict[str, RoleSettings] = attrs.field(factory=dict)
    stores: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    """One table per store adapter, validated by that adapter; its ``databases`` sub-table
    holds named connections (:mod:`beds.config.stores`)."""
    http: dict[str, Any] = attrs.field(factory=dict)
    """The ``[http]`` table of the HTTP edge, validated by beds-http (``beds_http.settings``)
    when it runs; a node without beds-http ignores it."""
    files: tuple[str, ...] = ()
    """The files this configuration was read from, in merge order."""
    store_files: dict[str, str] = attrs.field(factory=dict)
    """Which file last set each connection's table (``rel``, ``rel.warehouse``), for the
    adapters' error messages."""

    @property
    def production(self) -> bool:
        """Whether every start-up failure is fatal."""
        return self.node.mode == "production"

    @property
    def brokers(self) -> dict[str, BrokerSettings]:
        """The brokers of this node's role that consume a queue (``tickets`` brokers do not)."""
        return {b: s for b, s in self.roles[self.node.role].brokers.items() if s.consumes}

    @property
    def ticket_brokers(self) -> dict[str, BrokerSettings]:
        """The ``tickets`` brokers of this node's role: ticket lanes its workers run."""
        return {b: s for b, s in self.roles[self.node.role].brokers.items() if not s.consumes}

    def queue_name(self, broker: str, role: str | None = None) -> str:
        """The durable queue a broker type consumes, shared by every node of the role.

        The broker's ``queue`` key when set, else ``beds.{env}.{role}.{broker}``; ``role`` is
        this node's unless given.
        """
        role = role or self.node.role
        return self.roles[role].brokers[broker].queue or f"beds.{self.node.env}.{role}.{broker}"
