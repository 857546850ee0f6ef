"""Every exception BEDS raises, and the error-code catalogue.

Split by who must act: an operator (config, plugins, templates, transport) or the caller of a
request (``RequestError``, which crosses the wire in ``Response.error``)::

    BedsError                         base of everything BEDS raises
    ├── ConfigError                   bad or missing config; names the file and the key path
    ├── PluginError                   plugin load, validation or duplicate registration
    ├── TemplateError                 invalid template declaration
    ├── TransportError                AMQP side; never sent as a reply
    │   ├── BrokerUnavailable         (also ConnectionError) RabbitMQ cannot be reached
    │   ├── PublishError              unroutable or refused publish
    │   └── ReplyTimeout              (also TimeoutError) the caller gave up waiting
    └── RequestError                  sent back in Response.error; has CODE and STATUS
        ├── MalformedRequest          BEDS-400   undecodable bytes, wrong envelope shape
        ├── Unauthenticated           BEDS-401   credential missing, invalid, expired or revoked
        ├── Unauthorized              BEDS-403   principal may not do this operation
        │   └── UntrustedOrigin       BEDS-403O  the sender's AMQP user may not send this
        ├── NotFound                  BEDS-404   no record with that key
        ├── UnknownTemplate           BEDS-404T  no template of that name on this node
        ├── UnsupportedOperation      BEDS-405   the template does not declare the operation
        ├── Conflict                  BEDS-409   unique key or optimistic-lock violation
        │   ├── IdempotencyKeyReused  BEDS-409K  the key was used for a different request
        │   ├── StaleVersion          BEDS-409V  the record changed since it was read (locking)
        │   ├── WriteInDoubt          BEDS-409W  the key's first write has no outcome yet
        │   └── TicketFinished        BEDS-409F  cancel of a ticket that is finished
        ├── TicketExpired             BEDS-410   the ticket finished longer ago than its TTL
        ├── PayloadTooLarge           BEDS-413   message body over the configured limit
        ├── ValidationFailed          BEDS-422   payload does not match the template
        ├── TooManyAttempts           BEDS-429   failed logins throttled; retry after some seconds
        ├── InternalError             BEDS-500   a handler failed unexpectedly (a bug)
        │   ├── TicketAbandoned       BEDS-500A  a ticket's node stopped max_attempts times
        │   └── ReplyUndeliverable    BEDS-500R  a write ran, its reply could not be delivered
        ├── NotConfigured             BEDS-501   the node lacks a configuration key the work needs
        ├── DeadlineExceeded          BEDS-504   the request's deadline passed
        │   └── HandlerStopped        BEDS-504H  the handler ran past budget + grace; stopped
        └── StoreError                BEDS-502   the database rejected the call
            ├── DatabaseObjectMissing BEDS-502D  a declared procedure, view, collection… is absent
            ├── StoreBusy             BEDS-503B  lock wait timeout or deadlock (transient)
            └── StoreUnavailable      BEDS-503   the database cannot be reached (transient)

Messages are deterministic (no ids, addresses or timestamps) so that the same bad input always
produces the same reply. Context goes in attributes and ``details``. Every error pickles with its
message, details and attributes (a process pool or a multiprocessing queue can carry it).

Why this module is long: the error tree and its catalogue are one table by design: every code
is declared once, here, so codes stay unique and the catalogue (docs/errors.md) is complete.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from beds.envelopes import ErrorBody

__all__ = (
    "BedsError",
    "BrokerUnavailable",
    "ConfigError",
    "Conflict",
    "DatabaseObjectMissing",
    "DeadlineExceeded",
    "HandlerStopped",
    "IdempotencyKeyReused",
    "InternalError",
    "MalformedRequest",
    "NotConfigured",
    "NotFound",
    "PayloadTooLarge",
    "PluginError",
    "PublishError",
    "ReplyTimeout",
    "ReplyUndeliverable",
    "RequestError",
    "StaleVersion",
    "StoreBusy",
    "StoreError",
    "StoreUnavailable",
    "TemplateError",
    "TicketAbandoned",
    "TicketExpired",
    "TicketFinished",
    "TooManyAttempts",
    "TransportError",
    "Unauthenticated",
    "Unauthorized",
    "UnknownTemplate",
    "UnsupportedOperation",
    "UntrustedOrigin",
    "ValidationFailed",
    "WriteInDoubt",
    "error_catalogue",
)


def _unpickle(cls: type[BedsError], args: tuple[Any, ...]) -> BedsError:
    """Rebuild a pickled error without calling its ``__init__`` (its state follows)."""
    return cls.__new__(cls, *args)


class BedsError(Exception):
    """Base class of every exception BEDS raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        # An exception pickles as ``cls(*self.args)``: with keyword-only attributes (``file``,
        # ``template``, ``details``…) and a formatted message, that call fails or loses them.
        # Rebuild the instance as it is instead: its args, then its attributes.
        return _unpickle, (type(self), self.args), self.__dict__ or None


class ConfigError(BedsError):
    """Configuration is missing or invalid.

    Attributes:
        file: the file that holds the bad value (``None`` for environment variables or defaults).
        key: the dotted key path, for example ``brokers.rBroker.instances``.
    """

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        where = ", ".join(part for part in (file and f"file {file}", key and f"key {key}") if part)
        super().__init__(f"{message} ({where})" if where else message)


class PluginError(BedsError):
    """A plugin failed to load, validate, or registered something twice."""


class TemplateError(BedsError):
    """A template declaration is invalid.

    Attributes:
        template: the template's name, or the resource it came from when the name is unknown.
    """

    def __init__(self, message: str, *, template: str) -> None:
        self.template = template
        super().__init__(f"template {template!r}: {message}")


class TransportError(BedsError):
    """Something went wrong on the AMQP side. Never sent as a reply."""


class BrokerUnavailable(TransportError, ConnectionError):
    """RabbitMQ cannot be reached or the connection was lost."""


class PublishError(TransportError):
    """A publish was returned as unroutable or refused by RabbitMQ."""


class ReplyTimeout(TransportError, TimeoutError):
    """No reply arrived before the caller's timeout."""


class RequestError(BedsError):
    """An error answered to the caller in ``Response.error``.

    Subclasses define ``CODE`` (stable catalogue code) and ``STATUS`` (HTTP-like status).

    Attributes:
        details: field-level messages in a stable order.
    """

    CODE: ClassVar[str] = "BEDS-500"
    STATUS: ClassVar[int] = 500
    TRANSIENT: ClassVar[bool] = False
    """Whether the same request may succeed if tried again shortly (the broker retries it)."""
    _by_code: ClassVar[dict[str, type[RequestError]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass without its own CODE (a plugin's finer distinction) shares its parent's.
        if "CODE" not in cls.__dict__:
            return
        if cls.CODE in RequestError._by_code:
            raise TypeError(f"duplicate error code {cls.CODE}")
        RequestError._by_code[cls.CODE] = cls

    def __init__(self, message: str, *, details: Iterable[str] = ()) -> None:
        self.message = message
        self.details = tuple(details)
        super().__init__(message)

    def to_error(self) -> ErrorBody:
        """Return the wire form of this error."""
        from beds.envelopes import ErrorBody

        return ErrorBody(code=self.CODE, message=self.message, details=self.details)

    @classmethod
    def from_error(cls, body: ErrorBody) -> RequestError:
        """Rebuild the exception a reply carries; unknown codes become a plain RequestError."""
        kind = RequestError._by_code.get(body.code)
        if kind is None:
            error = RequestError(body.message, details=body.details)
            error.CODE = body.code  # type: ignore[misc]  # keep the unknown code visible
            return error
        return kind(body.message, details=body.details)


class MalformedRequest(RequestError):
    """The message is not a valid request envelope (not JSON, wrong shape, no reply address)."""

    CODE = "BEDS-400"
    STATUS = 400


class Unauthenticated(RequestError):
    """The request's credential is missing where one is needed, or not valid.

    One code for a wrong password, an unknown handle, and a credential that is malformed,
    forged, expired, not yet valid, revoked or for another audience: the caller learns that it
    is not authenticated, never which check failed (the node log says).
    """

    CODE = "BEDS-401"
    STATUS = 401


class Unauthorized(RequestError):
    """The request's principal may not perform this operation on this template."""

    CODE = "BEDS-403"
    STATUS = 403


class UntrustedOrigin(Unauthorized):
    """The sender's AMQP user (the origin RabbitMQ vouches for) may not send this.

    A template's ``access.origins``, or an internal event kind's trusted users, do not name it.
    """

    CODE = "BEDS-403O"


class TooManyAttempts(RequestError):
    """Too many failed attempts (logins) from this handle or origin; try again later.

    ``retry_after`` (seconds) is also in ``details``.
    """

    CODE = "BEDS-429"
    STATUS = 429

    def __init__(
        self, message: str, *, details: tuple[str, ...] = (), retry_after: float | None = None
    ) -> None:
        if retry_after is not None:
            details = (*details, f"retry after {max(1, round(retry_after))} s")
        super().__init__(message, details=details)
        self.retry_after = retry_after
        """Seconds to wait before trying again (``None`` when rebuilt from a reply)."""


class NotFound(RequestError):
    """No record matches the key."""

    CODE = "BEDS-404"
    STATUS = 404


class UnknownTemplate(RequestError):
    """No template of that name is installed on the node."""

    CODE = "BEDS-404T"
    STATUS = 404


class UnsupportedOperation(RequestError):
    """The template does not declare this operation."""

    CODE = "BEDS-405"
    STATUS = 405


class Conflict(RequestError):
    """A unique key violation (an optimistic-lock one is :class:`StaleVersion`)."""

    CODE = "BEDS-409"
    STATUS = 409


class IdempotencyKeyReused(Conflict):
    """The idempotency key was first used for another request: this one is not executed.

    "Another request" means another template, operation or payload; the earlier outcome stands.
    """

    CODE = "BEDS-409K"
    STATUS = 409


class StaleVersion(Conflict):
    """The record changed since the sender read it (optimistic locking): nothing was written.

    ``details`` holds ``current_version: N``; read the record again and decide.
    """

    CODE = "BEDS-409V"
    STATUS = 409


class WriteInDoubt(Conflict):
    """The first write with this idempotency key is still running, so this one is not run.

    The first attempt holds the key with a live lease (at most ``handler_budget +
    settle_grace``); ``details`` says when to ask again. Once the lease lapses, a repeat gets
    the first write's outcome or runs it once.
    """

    CODE = "BEDS-409W"
    STATUS = 409


class TicketFinished(Conflict):
    """The ticket is finished (succeeded, failed or cancelled), so it cannot be cancelled."""

    CODE = "BEDS-409F"
    STATUS = 409


class TicketExpired(RequestError):
    """The ticket finished longer ago than ``calgon.ticket_ttl``: its result is gone."""

    CODE = "BEDS-410"
    STATUS = 410


class PayloadTooLarge(RequestError):
    """The message body is larger than the configured limit."""

    CODE = "BEDS-413"
    STATUS = 413


class ValidationFailed(RequestError):
    """The payload does not match the template's declaration."""

    CODE = "BEDS-422"
    STATUS = 422


class InternalError(RequestError):
    """A handler failed unexpectedly. This is a bug in BEDS or a plugin; the log has the trace."""

    CODE = "BEDS-500"
    STATUS = 500


class TicketAbandoned(InternalError):
    """A ticket's node stopped ``calgon.max_attempts`` times while running it: it is failed.

    Each time its lease lapsed and another attempt took it over; it is not tried again.
    """

    CODE = "BEDS-500A"
    STATUS = 500


class ReplyUndeliverable(InternalError):
    """A write ran, and its reply could not be delivered (the caller's queue refused or vanished).

    Never a reply (there is nobody to send it to): the code of the dead letter that keeps the
    write's outcome for an operator, with the reply in its ``x-beds-reply`` header.
    ``beds dlq replay`` does not replay such a letter: the write ran already.
    """

    CODE = "BEDS-500R"
    STATUS = 500


class NotConfigured(RequestError):
    """The node lacks a configuration key the request's work needs; ``details`` name the key.

    Such as a schema migration ticket on a node whose store has no ``migration_url`` (the
    DBA's connection, docs/calgon.md). An operator sets the key; sending again changes nothing.
    """

    CODE = "BEDS-501"
    STATUS = 501


class DeadlineExceeded(RequestError):
    """The request's deadline passed before it could be executed."""

    CODE = "BEDS-504"
    STATUS = 504


class HandlerStopped(DeadlineExceeded):
    """The handler ran past ``reliability.handler_budget + settle_grace`` and was stopped.

    The broker dead-letters the request, answers the caller with this code, acknowledges the
    delivery and cancels the handler. A write may have run: send it again with the same
    idempotency key to learn its outcome.
    """

    CODE = "BEDS-504H"
    STATUS = 504


class StoreError(RequestError):
    """The database rejected the call."""

    CODE = "BEDS-502"
    STATUS = 502


class DatabaseObjectMissing(StoreError):
    """A declared database object (procedure, view, function, collection, index) does not exist.

    Attributes:
        objects: the missing objects' names.
    """

    CODE = "BEDS-502D"
    STATUS = 502

    def __init__(self, message: str, *, details: Iterable[str] = ()) -> None:
        super().__init__(message, details=details)
        self.objects = self.details


class StoreUnavailable(StoreError):
    """The database cannot be reached. Transient: the broker retries it with back-off."""

    CODE = "BEDS-503"
    STATUS = 503
    TRANSIENT = True


class StoreBusy(StoreError):
    """The database gave up on a lock (lock wait timeout, deadlock). Transient: retried."""

    CODE = "BEDS-503B"
    STATUS = 503
    TRANSIENT = True


def error_catalogue() -> Mapping[str, type[RequestError]]:
    """Return every error code with its exception class, sorted by code."""
    return dict(sorted(RequestError._by_code.items()))


for _cls in (
    BedsError,
    ConfigError,
    PluginError,
    TemplateError,
    TransportError,
    BrokerUnavailable,
    PublishError,
    ReplyTimeout,
    RequestError,
    *RequestError._by_code.values(),
):
    _cls.__module__ = "beds"
