"""NamasteCore: the CRUD interface every store adapter implements.

The node builds one adapter per connection at start-up (a store's default connection and each
named database it uses: ``rel``, ``rel.warehouse``) and keeps them in a dict, so a message
costs one dictionary look-up and no plugin-manager call. Adapters translate every driver
exception into a :class:`~beds.errors.RequestError` subclass at this boundary
(``StoreUnavailable``, ``Conflict``, ``NotFound``, ``DatabaseObjectMissing``, ``StoreError``); no
driver exception escapes them.

Why this module is long: it is the whole contract an adapter author reads (the protocol, the
call context, the optional features and the promises an adapter may make, such as
:func:`report_created`); split, the promises would be read apart from what they promise.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from beds.config.stores import DATABASES, connection_name, connection_table, split_connection
from beds.envelopes import Consistency
from beds.errors import ConfigError

if TYPE_CHECKING:
    # Never structured by cattrs, so these stay type-only (and avoid an import cycle).
    from beds.auth.principal import Principal  # noqa: TC004
    from beds.config.model import Config
    from beds.errors import RequestError
    from beds.templates.model import QuerySpec, Template  # noqa: TC004

__all__ = (
    "FEATURES",
    "BatchStore",
    "CallContext",
    "JournalStore",
    "NamasteCore",
    "Query",
    "Record",
    "SchemaFile",
    "StoreSettings",
    "report_created",
    "report_created_items",
    "watch_created",
    "watch_created_items",
)

FEATURES = {
    "locking": "optimistic locking: create sets the version field to 1; update and delete "
    "change the record only at the version sent (and increment it), else raise StaleVersion "
    "with details ('current_version: N',), or NotFound when no record has the key",
    "journal": "with ctx.journal, every write appends its journal entry (JournalStore), "
    "atomically with the write where the store can",
    "pagination": "fetch honours Query.spec.order_by and Query.after (keyset pagination)",
    "filters": "fetch honours each param's condition (spec.condition: eq, gt, gte, lt, lte, in)",
    "long_operations": "run_step runs one step of a declared long operation (CALGON; "
    "beds.calgon.tickets.LongOperationRunner)",
    "batch": "create_many/update_many/delete_many/fetch_many serve a batch in as few round "
    "trips as the store allows (BatchStore)",
}
"""The features an adapter may declare, and what each promises."""

Record = dict[str, Any]
"""One record as it crosses the wire: field name → JSON-safe value (see :mod:`beds.values`)."""

_created: contextvars.ContextVar[dict[str, dict[int, Record]] | None] = contextvars.ContextVar(
    "beds_created", default=None
)


@contextlib.contextmanager
def watch_created(template: str) -> Iterator[Callable[[], Record | None]]:
    """Collect the record a create of ``template`` run inside the block reports it stored.

    Inside ``with watch_created(name) as created:``, ``created()`` is the record the adapter
    passed to :func:`report_created` for that template (the last, if a retry reported again),
    or ``None`` when it reported none. The audit uses it as the record "after" a create instead
    of reading it back (:mod:`beds.dispatch.audit`).
    """
    with watch_created_items(template) as items:
        yield lambda: items().get(0)


@contextlib.contextmanager
def watch_created_items(template: str) -> Iterator[Callable[[], dict[int, Record]]]:
    """:func:`watch_created` for a ``create_many``: the reported records by item index."""
    reported: dict[str, dict[int, Record]] = {}
    token = _created.set(reported)
    try:
        yield lambda: reported.get(template, {})
    finally:
        _created.reset(token)


def report_created(template: str, record: Callable[[], Record]) -> None:
    """An adapter's promise: ``record()`` is what a create of ``template`` stored.

    An adapter calls this, from the task that runs its ``create``, once the create applied (or
    a repeat recovered it), only when it can give the record exactly as a ``fetch`` of the
    template's key query would read it right after the write: the key query's projection, the
    stored values (as the store keeps them: precision, time zone) in wire form. ``record`` is
    called only when an audited write watches (:func:`watch_created`), so the promise costs
    nothing otherwise. An adapter that does not call it has its created records read back.
    """
    report_created_items(template, lambda: {0: record()})


def report_created_items(template: str, records: Callable[[], Mapping[int, Record]]) -> None:
    """:func:`report_created` for a ``create_many``: what each created item stored, by index.

    Items it leaves out (failed, or not known) are read back.
    """
    reported = _created.get()
    if reported is not None:
        reported.setdefault(template, {}).update(records())


@attrs.frozen(kw_only=True)
class CallContext:
    """What an adapter may need to know about the request it serves."""

    event_id: str
    principal: str | None = None
    """The authenticated principal's id (``None``: anonymous)."""
    identity: Principal | None = None
    """The authenticated principal: id, handle and roles (:mod:`beds.auth`)."""
    deadline: float | None = None
    """Unix time after which the result is of no use."""
    idempotency_key: str | None = None
    """Set on writes that must run at most once (see :class:`NamasteCore`, "Idempotent writes")."""
    fingerprint: str = ""
    """With a key: a digest of the template, operation and payload. A repeat of the key with
    another fingerprint is a different request (``IdempotencyKeyReused``)."""
    idempotency_ttl: float = 86400.0
    """With a key: seconds the adapter remembers it (``reliability.idempotency_ttl``)."""
    idempotency_lease: float = 30.0
    """With a key: seconds this attempt may hold the key without an outcome. The broker stops
    every handler by then (``handler_budget + settle_grace``), so a key held longer belongs to
    an attempt that is gone, and another attempt may take it over."""
    attempt: str = ""
    """With a key: unique per handling of a request (retries inside one handling share it)."""
    origin: str = ""
    """The AMQP user that published the request (vouched for by RabbitMQ)."""
    journal: bool = False
    """A write of a journaled template: the adapter appends its journal entry (``JournalStore``)."""
    consistency: Consistency = Consistency.PRIMARY
    """``fetch_many``: where to read (``secondary``: a replica where the store has one). Reading
    the primary instead is always correct."""


@attrs.frozen(kw_only=True)
class Query:
    """A validated fetch: a declared query, its parameter values, a row limit and a position.

    An adapter answers the records that meet the query's conditions (``spec.condition`` of each
    param; ``in`` params are lists), in ``spec.order_by`` when it declares one, strictly after
    ``after`` in that order when given (keyset pagination: the values of the order's fields,
    compared field by field in each field's direction), at most ``limit`` of them. ``consistency``
    says where to read: ``secondary`` from a replica when the store has one (else the primary).
    """

    spec: QuerySpec
    params: Mapping[str, Any]
    limit: int
    after: tuple[Any, ...] | None = None
    """The last record of the previous page, as the values of ``spec.order_by``'s fields."""
    consistency: Consistency = Consistency.PRIMARY
    """``primary`` or ``secondary`` (``cached`` is served by the node before the adapter)."""


@attrs.frozen(kw_only=True)
class SchemaFile:
    """One DBA schema file shipped by a template package (``schema/<store>/<name>``)."""

    name: str
    text: str
    distribution: str = ""


@attrs.frozen(kw_only=True)
class StoreSettings:
    """A connection's configuration table, for the adapter to validate.

    The store's own table (``[stores.<store>]``, its default connection) or one of its named
    databases (``[stores.<store>.databases.<name>]``, the store's table updated with the named
    one's keys; :mod:`beds.config.stores`). An adapter names its errors' key paths from
    :attr:`key`.
    """

    store: str
    options: Mapping[str, Any]
    file: str | None = None
    """The config file that set the table, for error messages."""
    production: bool = False
    database: str = ""
    """The named connection's name; ``""``: the store's default connection."""

    @property
    def key(self) -> str:
        """The table's key path: ``stores.<store>`` or ``stores.<store>.databases.<name>``."""
        if self.database:
            return f"stores.{self.store}.{DATABASES}.{self.database}"
        return f"stores.{self.store}"

    @property
    def connection(self) -> str:
        """``<store>`` or ``<store>.<database>``, as the node keys its adapters."""
        return connection_name(self.store, self.database)

    @classmethod
    def of(cls, config: Config, connection: str) -> StoreSettings:
        """The settings of one connection of ``config`` (``rel``, ``rel.warehouse``).

        Raises:
            ConfigError: the store's configuration does not declare the named connection.
        """
        store, database = split_connection(connection)
        options = connection_table(config.stores, connection)
        if options is None:
            key = f"stores.{store}.{DATABASES}"
            raise ConfigError(
                f"{key}: declares no database {database!r} (add [{key}.{database}])",
                file=config.store_files.get(store),
                key=key,
            )
        return cls(
            store=store,
            database=database,
            options=options,
            file=config.store_files.get(connection),
            production=config.production,
        )


@runtime_checkable
class JournalStore(Protocol):
    """An adapter that keeps journals (feature ``journal``): what a journaled template's writes did.

    An entry is ``{"event_id", "operation", "key", "before", "after", "principal", "origin",
    "at"}``: the request's event id (unique: a write run again for the same event adds no
    second entry), the record before and after the write (``None`` where there is none), the
    principal's handle, the vouched origin and when (ISO 8601, UTC). Entries are never changed.
    """

    async def read_journal(
        self, template: Template, key: Record, *, limit: int, after: tuple[Any, ...] | None
    ) -> list[Record]:
        """The entries of the record with ``key``, oldest first, at most ``limit``.

        Ordered by ``at`` then ``event_id``, strictly after ``after`` (those two values).
        """


@runtime_checkable
class BatchStore(Protocol):
    """An adapter that serves batches itself (feature ``batch``; docs/wire-contract.md, "Batches").

    Inputs are validated by the node, in request order (each record what ``validate_write``
    returns for the single operation; keys validated keys); each method returns one entry per
    input, in the same order. A per-item store failure is that item's ``RequestError`` (the
    subclass the single call would raise: ``Conflict``, ``NotFound``, ``StaleVersion``…); only a
    failure of the whole batch (store unavailable, a missing object, the deadline) is raised.

    - ``template.batch.atomic``: all or nothing. If any item fails nothing is written, and the
      per-item list is returned with the failures (items that would have succeeded are returned
      as records; the node ignores them).
    - Otherwise the good items are written even when some fail.
    - ``ctx.idempotency_key``: the whole batch runs at most once per key, as a single write
      does; a repeat with the same ``ctx.fingerprint`` returns the first call's list
      (:func:`beds.idempotency.encode_outcomes` / :func:`~beds.idempotency.decode_outcomes`).
    - ``ctx.journal``: one entry per written item, event id ``f"{ctx.event_id}/{index}"``.
    - Locked templates: each update or delete item carries its version; a stale one is that
      item's ``StaleVersion``.

    An adapter without the feature is still served batches: the node calls its single-record
    methods one by one (:mod:`beds.dispatch.batch`).
    """

    async def create_many(
        self, template: Template, records: Sequence[Record], ctx: CallContext
    ) -> list[Record | RequestError]:
        """Create each record; return each one's ``returns`` fields, or its error."""

    async def update_many(
        self, template: Template, records: Sequence[Record], ctx: CallContext
    ) -> list[Record | RequestError]:
        """Update each record by its key; ``NotFound`` for a key without a record."""

    async def delete_many(
        self, template: Template, keys: Sequence[Record], ctx: CallContext
    ) -> list[Record | RequestError]:
        """Delete each key's record (``{"deleted": 1}``); ``NotFound`` for a missing one."""

    async def fetch_many(
        self, template: Template, keys: Sequence[Record], ctx: CallContext
    ) -> list[Record | None]:
        """Each key's record as the template's key query answers it; ``None``: no such record.

        Read where ``ctx.consistency`` says (the primary is always correct).
        """


@runtime_checkable
class NamasteCore(Protocol):
    """The CRUD interface every store adapter implements.

    Capabilities: every adapter declares them, the node reads them directly (no ``getattr``).
    An adapter that subclasses ``NamasteCore`` explicitly inherits the defaults below
    (``idempotent_writes = False``, no optional checks); a structural one defines both.

    Idempotent writes: an adapter whose ``idempotent_writes`` is ``True`` honours
    ``ctx.idempotency_key`` in ``create``, ``update`` and ``delete``: the write runs at most once
    per key within ``ctx.idempotency_ttl``, across retries, redeliveries and node restarts; a
    repeat with the same ``ctx.fingerprint`` returns the first call's result without running
    again, one with another fingerprint raises ``IdempotencyKeyReused``, and one whose first call
    has no recorded outcome and may still be running (its ``ctx.idempotency_lease`` is live)
    raises ``WriteInDoubt``; once that lease lapsed, a repeat finds out whether the lost call's
    write applied and answers from it, or runs the write once. A write that certainly changed
    nothing leaves no record, so a repeat runs it again. The node refuses a key for an adapter
    whose ``idempotent_writes`` is ``False`` (``UnsupportedOperation``) rather than ignore it.

    Audited creates: an adapter may report the record a create stored
    (:func:`report_created`), sparing the audit its read after the write; one that does not is
    read back through the template's key query.

    Life cycle: the factory registered by the plugin builds the adapter from its
    :class:`StoreSettings`; ``prepare`` is called for each of the store's templates (synchronous,
    no I/O); ``start`` opens connections, then ``optional_checks`` reports on the store's
    optional parts; ``verify`` checks each template's declared objects; the CRUD methods serve
    requests; ``aclose`` releases everything.
    """

    store: str
    """The store name templates use to select this adapter, for example ``"rel"``."""

    idempotent_writes: bool = False
    """Whether writes honour ``ctx.idempotency_key`` (see "Idempotent writes" above). ``False``
    (the default): the node refuses a keyed write for this store before calling the adapter."""

    features: frozenset[str] = frozenset()
    """What the adapter does for a template's declarations beyond CRUD (:data:`FEATURES`); a
    template that needs a feature its store lacks is refused when the node starts, never served
    without it (:meth:`beds.templates.model.Template.needs`)."""

    def prepare(self, template: Template) -> None:
        """Validate the template's store-specific declarations (``binding``, ``store_options``).

        Raises:
            TemplateError: a declaration the adapter cannot serve.
        """

    async def start(self) -> None:
        """Open connection pools. Raises ``StoreUnavailable`` when the database is unreachable."""

    async def optional_checks(self) -> list[tuple[str, str | None]]:
        """Check the store's optional parts after ``start`` (REL: its secondaries).

        Returns:
            One ``(check name, problem)`` pair per part, ``problem`` ``None`` when the part
            answers. The node reports a problem as a warning in development (and goes on) and
            as a failed check in production. The default: ``[]``, a store without optional
            parts.
        """
        return []

    async def verify(self, template: Template) -> None:
        """Check that every database object the template declares exists.

        Raises:
            DatabaseObjectMissing: ``details`` lists each missing object by name.
        """

    async def create(self, template: Template, record: Record, ctx: CallContext) -> Record:
        """Create a record and return the template's ``returns`` fields for it."""

    async def fetch(self, template: Template, query: Query, ctx: CallContext) -> list[Record]:
        """Run a declared query and return at most ``query.limit`` records."""

    async def update(self, template: Template, record: Record, ctx: CallContext) -> Record:
        """Update the record with ``record``'s key; raise ``NotFound`` when there is none."""

    async def delete(self, template: Template, key: Record, ctx: CallContext) -> Record:
        """Delete the record with this key; return ``{"deleted": n}``; ``NotFound`` when n is 0."""

    async def apply_schema(self, files: Sequence[SchemaFile]) -> list[str]:
        """Install DBA schema files (development only) and return the names applied.

        Called by ``beds schema apply`` without ``start()``: the adapter opens (and closes) what it
        needs, creating the configured database when the store has such a notion.
        """

    async def aclose(self) -> None:
        """Close connections; safe to call twice."""
