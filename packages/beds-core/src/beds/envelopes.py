"""Versioned request and response envelopes (wire contract v1).

Envelopes hold data only; encoding, size limits and error mapping live in :mod:`beds.codec`.
The wire format is documented in ``docs/wire-contract.md``.
"""

from __future__ import annotations

import enum
import re
from typing import Any, Literal

import attrs

__all__ = (
    "BATCH_OPERATIONS",
    "READ_OPERATIONS",
    "WRITE_OPERATIONS",
    "Consistency",
    "EnvelopeLimitError",
    "ErrorBody",
    "Operation",
    "Request",
    "RequestMeta",
    "Response",
    "ResponseMeta",
    "text_problem",
)

MAX_DEPTH = 64
"""Deepest event lineage accepted; a deeper tree is a loop."""
MAX_IDEMPOTENCY_KEY = 200
"""Longest idempotency key accepted, in characters (adapters store keys of this size)."""
MAX_META_BYTES = 255
"""Longest ``meta`` text, in UTF-8 bytes: an AMQP short string (the event id becomes the reply's
``message_id``; the others reach lineage events, headers and logs)."""
TEMPLATE_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
"""What a template's name may be (``lower_snake_case``, as template declarations require)."""
DEADLINE_RANGE = (0.0, 1e11)
"""Unix times a ``meta.deadline`` may hold (exclusive): after 1970, before the year 5138."""


class Operation(enum.StrEnum):
    """What a request asks for."""

    CREATE = "create"
    FETCH = "fetch"
    UPDATE = "update"
    DELETE = "delete"
    SUBMIT = "submit"
    """CALGON: start a long operation and get a ticket back."""
    TICKET = "ticket"
    """CALGON: poll a ticket."""
    PING = "ping"
    """Answered by the broker itself, without any store: liveness and transport benchmarks."""
    CREATE_MANY = "create_many"
    """A batch of creates: ``{"records": [record, ...]}``, one result per record."""
    FETCH_MANY = "fetch_many"
    """A batch of key look-ups: ``{"keys": [key, ...]}``, through the template's key query."""
    UPDATE_MANY = "update_many"
    """A batch of updates: ``{"records": [record, ...]}``."""
    DELETE_MANY = "delete_many"
    """A batch of deletes: ``{"records": [key, ...]}``."""


READ_OPERATIONS = frozenset(
    {Operation.FETCH, Operation.FETCH_MANY, Operation.TICKET, Operation.PING}
)
WRITE_OPERATIONS = frozenset({Operation.CREATE, Operation.UPDATE, Operation.DELETE})
"""The single-record writes (a batch's single operation is one of them: ``BATCH_OPERATIONS``)."""
BATCH_OPERATIONS: dict[Operation, Operation] = {
    Operation.CREATE_MANY: Operation.CREATE,
    Operation.FETCH_MANY: Operation.FETCH,
    Operation.UPDATE_MANY: Operation.UPDATE,
    Operation.DELETE_MANY: Operation.DELETE,
}
"""Each batch operation and the single operation it runs per item (docs/wire-contract.md,
"Batches"): its access rule, validation and store binding are the single operation's."""


class EnvelopeLimitError(ValueError):
    """Envelope fields outside their limits (docs/wire-contract.md, "Limits").

    ``problems`` pairs each field's name with the rule it breaks, in field order; the codec turns
    each pair into one ``BEDS-400`` detail, ``"must <rule> @ $.meta.<field>"``.
    """

    def __init__(self, envelope: str, problems: tuple[tuple[str, str], ...]) -> None:
        super().__init__(" ".join(f"{envelope}.{field} should {rule}." for field, rule in problems))
        self.envelope = envelope
        self.problems = problems

    def __reduce__(
        self,
    ) -> tuple[type[EnvelopeLimitError], tuple[str, tuple[tuple[str, str], ...]]]:
        return (type(self), (self.envelope, self.problems))


_META_TEXT = ("event_id", "parent_id", "correlation_id", "causation_id", "origin", "principal")
"""The ``meta`` fields held to ``text_problem``'s rules (``principal`` may also be null)."""


def text_problem(value: str) -> str | None:
    """Why ``value`` is not printable text of at most ``MAX_META_BYTES`` UTF-8 bytes, or None.

    Lone surrogates (only possible from Python: JSON with them does not parse) count 3 bytes and
    are not printable.
    """
    size = len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_META_BYTES:
        return f"be at most {MAX_META_BYTES} bytes in UTF-8, got {size}"
    if not value.isprintable():
        index, char = next((i, c) for i, c in enumerate(value) if not c.isprintable())
        return (
            "be printable text (no control or format characters), "
            f"got U+{ord(char):04X} at index {index}"
        )
    return None


def _key_problem(value: str) -> str | None:
    if not 0 < len(value) <= MAX_IDEMPOTENCY_KEY:
        return f"be 1 to {MAX_IDEMPOTENCY_KEY} characters, got {len(value)}"
    problem = text_problem(value)
    if problem is None and value.strip(" ") != value:
        return "not start or end with a space"
    return problem


def _meta_problems(meta: RequestMeta) -> tuple[tuple[str, str], ...]:
    """Every field of ``meta`` outside its limits, with the rule it breaks (the slow path)."""
    problems: list[tuple[str, str]] = []
    for name in _META_TEXT:
        value = getattr(meta, name)
        if value is not None and (problem := text_problem(value)) is not None:
            problems.append((name, problem))
    if not 0 <= meta.depth <= MAX_DEPTH:
        problems.append(("depth", f"be in range [0:{MAX_DEPTH}], got {meta.depth}"))
    key = meta.idempotency_key
    if key is not None and (problem := _key_problem(key)) is not None:
        problems.append(("idempotency_key", problem))
    low, high = DEADLINE_RANGE
    if meta.deadline is not None and not low < meta.deadline < high:
        problems.append(
            (
                "deadline",
                f"be a Unix time in seconds above {low:g} and below {high:g}, "
                f"got {meta.deadline!r}",
            )
        )
    return tuple(problems)


def _template(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not TEMPLATE_NAME.fullmatch(value):
        raise EnvelopeLimitError(
            "Request",
            (
                (
                    "template",
                    "be a template name: lower_snake_case, 1 to 63 of a-z, 0-9 and '_', "
                    "starting with a letter",
                ),
            ),
        )


class Consistency(enum.StrEnum):
    """Where a fetch reads from."""

    PRIMARY = "primary"
    """The primary database: sees every write already answered (read-after-write)."""
    SECONDARY = "secondary"
    """A replica where the store has them (MariaDB replicas, MongoDB ``readPreference``),
    falling back to the primary; may lag behind the latest writes."""
    CACHED = "cached"
    """The node's fetch cache (templates with ``cache = true``), then the primary."""


@attrs.frozen(kw_only=True)
class RequestMeta:
    """Who sent a request, why, and how long it may take.

    Every field has a limit (docs/wire-contract.md, "Limits"), checked when the object is built:
    the text fields (and ``principal`` when not null) are printable text of at most 255 bytes in
    UTF-8, an AMQP short string, because they reach reply properties, dead-letter headers,
    lineage events and logs.
    """

    event_id: str = ""
    """``"{node}.{env}.{guid}"``; assigned by the client (or the broker when empty)."""
    parent_id: str = ""
    """The event that caused this one; empty for a root event."""
    depth: int = 0
    """Levels below the root event."""
    correlation_id: str = ""
    """Matches the reply to the request; mirrors the AMQP property."""
    causation_id: str = ""
    """The message that directly caused this one (for chains of requests)."""
    origin: str = ""
    """Sending node or service."""
    idempotency_key: str | None = None
    """Writes with the same key are executed at most once (1 to 200 printable characters, at most
    255 bytes in UTF-8, no space at either end)."""
    deadline: float | None = None
    """Unix time (seconds, UTC) after which the request must not be executed."""
    principal: str | None = None
    """Who is asking; checked against the template's access rules."""

    def __attrs_post_init__(self) -> None:
        """Check every limit at once (one call on the decoder's hot path, not one per field).

        Raises:
            EnvelopeLimitError: naming every field outside its limits, in field order.
        """
        # The usual meta: short ASCII text, a small depth, a plain key, a deadline in range.
        # Printable and ASCII are per character, so one check of the joined text covers all six.
        text = "".join(
            (
                self.event_id,
                self.parent_id,
                self.correlation_id,
                self.causation_id,
                self.origin,
                self.principal or "",
            )
        )
        key = self.idempotency_key
        deadline = self.deadline
        if (
            len(text) <= MAX_META_BYTES
            and text.isascii()
            and text.isprintable()
            and 0 <= self.depth <= MAX_DEPTH
            and (
                key is None
                or (
                    0 < len(key) <= MAX_IDEMPOTENCY_KEY
                    and key.isascii()
                    and key.isprintable()
                    and key[0] != " " != key[-1]
                )
            )
            and (deadline is None or DEADLINE_RANGE[0] < deadline < DEADLINE_RANGE[1])
        ):
            return
        problems = _meta_problems(self)
        if problems:
            raise EnvelopeLimitError("RequestMeta", problems)


@attrs.frozen(kw_only=True)
class Request:
    """A data operation on one template."""

    version: Literal[1] = 1
    operation: Operation
    template: str = attrs.field(validator=_template)
    """Template name, for example ``"spew_post"`` (lower_snake_case, at most 63 characters)."""
    payload: dict[str, Any] = attrs.field(factory=dict)
    """A record (create, update), a key (delete) or a query (fetch): see docs/wire-contract.md."""
    meta: RequestMeta = attrs.field(factory=RequestMeta)


@attrs.frozen(kw_only=True)
class ErrorBody:
    """Why a request failed."""

    code: str
    """Catalogue code, for example ``"BEDS-404T"``."""
    message: str
    details: tuple[str, ...] = ()
    """Field-level messages, in a stable order."""


@attrs.frozen(kw_only=True)
class ResponseMeta:
    """Where and how a request was handled."""

    event_id: str = ""
    node: str = ""
    """The node that handled the request."""
    timings: dict[str, float] = attrs.field(factory=dict)
    """Milliseconds spent per phase, for example ``{"store": 1.8, "total": 2.3}``."""
    next: str | None = None
    """A fetch of a pageable query with more records: the cursor of the next page, sent back as
    ``payload.cursor``. Absent from the JSON when there is none."""
    cached: bool = False
    """The fetch was answered from the node's cache. Absent from the JSON when false."""


@attrs.frozen(kw_only=True)
class Response:
    """The answer to a request."""

    version: Literal[1] = 1
    ok: bool
    status: int
    """HTTP-like status: 200, 201, 4xx for the caller's mistakes, 5xx for ours."""
    data: Any = None
    error: ErrorBody | None = None
    meta: ResponseMeta = attrs.field(factory=ResponseMeta)
