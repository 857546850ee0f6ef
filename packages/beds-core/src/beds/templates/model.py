"""Typed template declarations: what a data domain's TOML file declares.

A template is store-agnostic here. The store-specific parts (which procedure, view or collection
an operation uses) stay in ``binding`` and ``store_options`` mappings that the store's adapter
validates when the template is registered (``NamasteCore.prepare``).

Why this module is long: it is the one typed picture of a declaration (fields, operations,
queries, capabilities, long operations, access rules and the template that holds them), so an
adapter or a tool reads every part of it in one place; the parsing lives in the modules beside it.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from beds.config.stores import connection_name
from beds.envelopes import Consistency, Operation
from beds.errors import TemplateError

if TYPE_CHECKING:
    from beds.auth.principal import Principal

__all__ = (
    "ANYONE",
    "AUTHENTICATED",
    "HISTORY_QUERY",
    "AccessRules",
    "BatchSettings",
    "Capabilities",
    "Consistency",
    "FieldSpec",
    "FieldType",
    "Filter",
    "FilterOp",
    "LongOperation",
    "LongParam",
    "OperationSpec",
    "OrderKey",
    "QuerySpec",
    "Retention",
    "Template",
)

HISTORY_QUERY = "history"
"""The query a journaled template answers from its journal (reserved on such templates)."""

_OBJECT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class FieldType(enum.StrEnum):
    """Wire types a field may have."""

    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    DATETIME = "datetime"
    """ISO 8601 text on the wire; timezone-aware, or naive meaning UTC."""
    DECIMAL = "decimal"
    """Decimal text on the wire, for exact numbers (money)."""
    JSON = "json"
    """Any JSON value (object, array, string, number, boolean), kept as it was sent: REL binds
    it as JSON text and parses it back, REC stores it as a document."""


@attrs.frozen(kw_only=True)
class FieldSpec:
    """One field of a template's records."""

    name: str
    type: FieldType
    required: bool = True
    """Must be present on create (ignored for generated fields)."""
    nullable: bool = False
    generated: bool = False
    """Assigned by the store (ids, timestamps); a request may not set it on create."""
    max_length: int | None = None
    min_length: int | None = None
    pattern: re.Pattern[str] | None = None
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""
    secret: bool = False
    """Never published beyond the caller (a password hash, a token): a template with a secret
    field cannot declare ``live = true``, and live events never carry one."""


@attrs.frozen(kw_only=True)
class OperationSpec:
    """A write operation (create, update, delete) and the named database object behind it."""

    operation: Operation
    params: tuple[str, ...]
    """Fields the request may carry, in the order the store object takes them."""
    returns: tuple[str, ...] = ()
    """Fields returned to the caller (create: generated values)."""
    principal: str | None = None
    """A param the authenticated principal's handle is bound to: the store object receives who
    asks, and a request cannot choose it (anonymous requests are refused)."""
    binding: Mapping[str, Any] = attrs.field(factory=dict)
    """Store-specific declaration: for example ``{"procedure": "spp_create"}``."""


class FilterOp(enum.StrEnum):
    """How a query param compares with its field."""

    EQ = "eq"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    IN = "in"
    """The param is a list; the field equals one of its values."""


@attrs.frozen(kw_only=True)
class Filter:
    """One condition of a query: ``field op param``."""

    param: str
    field: str
    op: FilterOp = FilterOp.EQ


@attrs.frozen(kw_only=True)
class OrderKey:
    """One key of a query's declared order."""

    field: str
    descending: bool = False


@attrs.frozen(kw_only=True)
class QuerySpec:
    """A named, parameterised fetch."""

    name: str
    params: tuple[str, ...]
    """Fields the query takes; all are required."""
    where: Mapping[str, Filter] = attrs.field(factory=dict)
    """Param → its condition. A param not named here is ``field == param`` (same name), as
    before ``where`` existed; an adapter that binds params to a procedure passes them as they
    are."""
    order_by: tuple[OrderKey, ...] = ()
    """The declared order; it ends with the template's key fields, so it is total and the
    query can be paged with cursors (``payload.cursor``). Empty: the store's order, one page."""
    max_limit: int = 100
    """Most records one fetch returns; a request may ask for fewer."""
    internal: bool = False
    """Only the domain's own handlers may run it (:mod:`beds.handlers`); a request naming it
    is answered as if it did not exist. For what must never reach a caller, such as a
    password hash."""
    principal: str | None = None
    """A param the authenticated principal's handle is bound to (see ``OperationSpec``)."""
    binding: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def pageable(self) -> bool:
        """Whether fetches may page through the results with cursors."""
        return bool(self.order_by)

    def condition(self, param: str) -> Filter:
        """The condition ``param`` stands for."""
        return self.where.get(param) or Filter(param=param, field=param)


@attrs.frozen(kw_only=True)
class Capabilities:
    """What a template asks of BEDS beyond CRUD (docs/templates.md, "Capabilities").

    Every toggle does what it says, or the template is refused when it is loaded.
    """

    audit: bool = False
    """Every write publishes an audit record (who, what, before, after) to the logs exchange."""
    journal: bool = False
    """Every write appends an immutable history entry, read back with the ``history`` query."""
    locking: bool = False
    """Optimistic locking: updates and deletes send the record's ``version_field``; a stale one
    is refused (``BEDS-409V``) and nothing is written."""
    version_field: str = "version"
    """The int field holding a locked record's version (the store sets and increments it)."""
    cache: bool = False
    """Fetch results are cached on each node, and invalidated on every node by writes."""
    cache_ttl: float = 30.0
    """Seconds a cached fetch result is kept at most."""
    cache_size: int = 1000
    """Most fetch results cached per node for this template."""
    consistency: Consistency = Consistency.PRIMARY
    """Where fetches read unless the request says otherwise (``payload.consistency``)."""
    retention_days: int | None = None
    """Records older than this are retired (moved or deleted) by sweeps (``[retention]``)."""
    live: bool = False
    """Every successful write publishes ``record.changed`` on the control channel
    (:mod:`beds.dispatch.live`), for live views such as an HTTP edge's event stream."""


@attrs.frozen(kw_only=True)
class BatchSettings:
    """The template's ``[batch]`` table: how its batch operations (``create_many``…) run.

    Batch operations exist whenever the single operation does (``fetch_many`` needs a key
    query); this table only tunes them (docs/templates.md, "Batches").
    """

    max_records: int | None = None
    """Most records (or keys) one batch may carry (1 to 10,000); the node's
    ``amqp.max_batch_records`` still caps it. ``None``: the node's limit."""
    atomic: bool = False
    """All or nothing: any failing item fails the whole request and nothing is written (the
    store needs the ``batch`` feature)."""

    def limit(self, node_limit: int) -> int:
        """The most items one batch of this template may carry on a node with ``node_limit``."""
        mine = self.max_records
        return node_limit if mine is None or mine > node_limit else mine


@attrs.frozen(kw_only=True)
class LongParam:
    """A param of a long operation: a typed value with a default (so ``{}`` can be enough)."""

    field: FieldSpec
    default: Any = None
    """Used when the request omits the param (``None`` with ``required``: it must be sent)."""


@attrs.frozen(kw_only=True)
class LongOperation:
    """A long operation (CALGON): submitted for a ticket, run in steps in the background.

    The store object behind it (``binding``: a REL procedure, a REC aggregation pipeline) is
    run once per step, ``step`` = 0 … ``steps`` - 1 (``steps = 0``: until a step returns no
    record, for batched work of unknown size), each seeing ``step`` and ``steps`` beside
    the params, so the DBA splits the work (for example by a hash of the key); the ticket's
    progress is the share of steps done, and a ticket taken over by another node resumes at
    the first step not done. The records of every step, in step order, are the result.
    """

    name: str
    params: Mapping[str, LongParam] = attrs.field(factory=dict)
    steps: int = 1
    step_timeout: float = 300.0
    """Seconds one step may run before it fails (the ticket is retried or failed by policy)."""
    description: str = ""
    binding: Mapping[str, Any] = attrs.field(factory=dict)
    """The store-specific keys (``procedure``, ``pipeline``…), checked by the adapter."""


@attrs.frozen(kw_only=True)
class Retention:
    """``retention_days`` and its ``[retention]`` table (:mod:`beds.templates.retention`).

    Records whose ``field`` is older than ``days`` are retired in batches of ``batch_size`` by
    the ``retention`` long operation the loader adds, which the segundo role's scheduler
    submits (:mod:`beds.calgon.retention`).
    """

    days: int
    field: str
    """The declared ``datetime`` field that is the record's age."""
    batch_size: int = 1000
    """Most records one step (one transaction in REL) retires."""
    binding: Mapping[str, Any] = attrs.field(factory=dict)
    """The store's keys (REL ``procedure``; REC ``cool_collection``), checked by the adapter."""


ANYONE = "*"
"""In an access list: anyone, anonymous callers included."""
AUTHENTICATED = "authenticated"
"""In an access list: any authenticated principal, whatever its roles."""


@attrs.frozen(kw_only=True)
class AccessRules:
    """Which principals may do which operations, by role, and who owns a record.

    An operation's list names roles, ``"authenticated"`` (any authenticated principal) or
    ``"*"`` (anyone); an operation without a list is open to anyone. With ``owner``, that
    field holds the handle of the principal who created the record: create binds it, and only
    that principal (or one with ``admin_role``) may update or delete the record; an admin may
    also create a record naming another owner. With ``origins``, only requests published by
    those AMQP users are served, whoever their principal.
    """

    rules: Mapping[Operation, frozenset[str]] = attrs.field(factory=dict)
    owner: str | None = None
    """The field bound to the creating principal's handle."""
    admin_role: str = "admin"
    """A role that may create, update and delete records of any owner."""
    origins: frozenset[str] = frozenset()
    """AMQP users whose requests the template serves (the origin RabbitMQ vouches for with
    ``user_id``); empty: any. Checked before the rules by role (``BEDS-403O``)."""

    def allows(self, operation: Operation, principal: Principal | None) -> bool:
        """Return whether ``principal`` (``None``: anonymous) may perform ``operation``."""
        allowed = self.rules.get(operation)
        if allowed is None or ANYONE in allowed:
            return True
        if principal is None:
            return False
        return AUTHENTICATED in allowed or not allowed.isdisjoint(principal.roles)

    @property
    def open_writes(self) -> tuple[Operation, ...]:
        """The write operations without a rule, so open to anyone by omission.

        A rule of ``["*"]`` says on purpose that anyone may (sign-up, login): not listed.
        """
        writes = (Operation.CREATE, Operation.UPDATE, Operation.DELETE)
        return tuple(op for op in writes if op not in self.rules)


@attrs.frozen(kw_only=True)
class Template:
    """A data domain's declaration of one kind of record."""

    name: str
    store: str
    """Which adapter serves it: ``"rec"`` (MongoDB) or ``"rel"`` (MariaDB)."""
    database: str = ""
    """The store's named connection it uses (``[stores.<store>.databases.<name>]``); ``""``:
    the store's default connection."""
    tla: str
    """Three-letter abbreviation that prefixes every database object the template uses."""
    description: str = ""
    version: int = 1
    fields: Mapping[str, FieldSpec]
    key: tuple[str, ...]
    operations: Mapping[Operation, OperationSpec]
    queries: Mapping[str, QuerySpec]
    default_query: str | None = None
    long_operations: Mapping[str, LongOperation] = attrs.field(factory=dict)
    """Operations submitted for a ticket and run in the background (CALGON)."""
    retention: Retention | None = None
    """How old records are retired (``retention_days``); its sweep is ``long_operations``'s
    ``retention``."""
    capabilities: Capabilities = attrs.field(factory=Capabilities)
    access: AccessRules = attrs.field(factory=AccessRules)
    batch: BatchSettings = attrs.field(factory=BatchSettings)
    """The ``[batch]`` table: the batch operations' size limit and all-or-nothing flag."""
    store_options: Mapping[str, Any] = attrs.field(factory=dict)
    """The template's ``[<store>]`` table, for the adapter."""
    source: str = ""
    """Where the declaration came from (package resource or file path)."""
    distribution: str = ""
    """The installed distribution that shipped it."""

    @functools.cached_property
    def public_fields(self) -> frozenset[str]:
        """The fields that may be published beyond the caller (every field not ``secret``)."""
        return frozenset(name for name, spec in self.fields.items() if not spec.secret)

    @property
    def connection(self) -> str:
        """The connection whose adapter serves it: ``rel``, or ``rel.warehouse`` with a database."""
        return connection_name(self.store, self.database)

    def needs(self) -> frozenset[str]:
        """The adapter features serving this template takes (``beds.namaste.FEATURES``)."""
        caps = self.capabilities
        needed = {name for name in ("locking", "journal") if getattr(caps, name)}
        if any(query.pageable for query in self.queries.values()):
            needed.add("pagination")
        if any(query.where for query in self.queries.values()):
            needed.add("filters")
        if self.long_operations:
            needed.add("long_operations")
        if self.batch.atomic:
            needed.add("batch")  # all or nothing takes the store's own batch (one transaction)
        return frozenset(needed)

    def key_query(self) -> QuerySpec | None:
        """The query whose params are exactly the key, if the template declares one."""
        key = set(self.key)
        return next((spec for spec in self.queries.values() if set(spec.params) == key), None)

    def object_name(self, value: Any, *, key: str) -> str:
        """Check a declared database object name and return it.

        Adapters call this for every procedure, view, function, collection or index name they read
        from ``binding`` or ``store_options``, so names are plain identifiers namespaced by the TLA.

        Raises:
            TemplateError: the name is not an identifier or lacks the ``{tla}_`` prefix.
        """
        if not isinstance(value, str) or not _OBJECT_NAME.fullmatch(value):
            raise TemplateError(
                f"{key} must be an identifier (letters, digits, _; at most 64), got {value!r}",
                template=self.name,
            )
        if not value.lower().startswith(f"{self.tla}_"):
            raise TemplateError(
                f"{key} {value!r} must start with the template's TLA prefix {self.tla + '_'!r}",
                template=self.name,
            )
        return value
