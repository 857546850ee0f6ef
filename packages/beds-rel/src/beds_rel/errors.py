"""Translate asyncmy (MariaDB/MySQL) exceptions into BEDS request errors.

The adapter wraps every driver call in :func:`map_exceptions`, so no asyncmy exception escapes it:

=========================================================  ===========================
MariaDB / asyncmy condition (errno)                        BEDS error
=========================================================  ===========================
cannot connect, lost, gone away (2002, 2003, 2005, 2006,   ``StoreUnavailable``
2013…), too many connections (1040), access denied
(1044, 1045), shutdown (1053), killed (1927), TLS
required (3159), ``InterfaceError``, ``OSError``
lock wait timeout (1205), deadlock (1213)                  ``StoreBusy`` (transient)
a ``SIGNAL SQLSTATE '45409'`` (a locking procedure found   ``StaleVersion``
the row at another version)
duplicate key (1062, 1022, 1169, 1586), foreign key        ``Conflict``
(1216, 1217, 1451, 1452, 1557, 1761, 1762), a ``SIGNAL``
with SQLSTATE class ``23``
unknown database (1049), table or view (1146), procedure   ``DatabaseObjectMissing``
or function (1305), broken view (1356)                     (details: the object name)
anything else                                              ``StoreError``
=========================================================  ===========================

Messages are fixed per condition; the server's text goes into ``details`` (it is deterministic
for the same input and schema), while client-side texts (host names, OS errors) are left out.

Opening a connection can fail for reasons an operator fixes in the configuration:
:func:`connect_problem` puts those in words naming the keys (``stores.rel.tls``, the URL's key).
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING

from asyncmy import errors as my_errors

from beds.errors import (
    Conflict,
    DatabaseObjectMissing,
    RequestError,
    StaleVersion,
    StoreBusy,
    StoreError,
    StoreUnavailable,
)
from beds.transport.tls import handshake_problem

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from beds_rel.settings import RelSettings

__all__ = ("STALE_VERSION", "connect_problem", "connecting", "map_exceptions", "translate")

STALE_VERSION = "45409"
"""The SQLSTATE a locking procedure signals when the row exists at another version (docs/rel.md,
"Optimistic locking"); the adapter reads the current version and reports it."""

_UNAVAILABLE: dict[int, str] = {
    1040: "MariaDB has too many connections",
    1044: "MariaDB refused access to the configured database",
    1045: "MariaDB refused the configured credentials",
    1053: "MariaDB is shutting down",
    1927: "the MariaDB connection was killed",
    2002: "cannot connect to MariaDB",
    2003: "cannot connect to MariaDB",
    2005: "cannot connect to MariaDB: unknown host",
    2006: "lost the connection to MariaDB",
    2012: "cannot connect to MariaDB: handshake failed",
    2013: "lost the connection to MariaDB",
    2026: "cannot connect to MariaDB: TLS failed",
    3159: "MariaDB requires TLS (require_secure_transport): add [stores.rel.tls]",
}
_BUSY: dict[int, str] = {
    1205: "MariaDB gave up waiting for a lock",
    1213: "MariaDB chose this call as a deadlock victim",
}
_CONFLICT = frozenset({1022, 1062, 1169, 1216, 1217, 1451, 1452, 1557, 1586, 1761, 1762})
_SIGNAL = 1644
_MISSING: dict[int, re.Pattern[str]] = {
    1049: re.compile(r"Unknown database '([^']+)'"),
    1146: re.compile(r"Table '([^']+)' doesn't exist"),
    1305: re.compile(r"(?:PROCEDURE|FUNCTION) (\S+) does not exist"),
    1356: re.compile(r"View '([^']+)' references"),
}


def is_clean(exc: BaseException) -> bool:
    """Whether a connection is still in step with the server after ``exc`` (reusable)."""
    if isinstance(exc, RequestError):
        return True  # raised by our own code between two complete exchanges
    if not isinstance(exc, my_errors.MySQLError) or isinstance(exc, my_errors.InterfaceError):
        return False
    errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    return 1000 <= errno < 2000 or errno >= 3000  # server errors; 2xxx are client-side


def _errno_text(exc: my_errors.MySQLError) -> tuple[int, str]:
    args = exc.args
    errno = args[0] if args and isinstance(args[0], int) else 0
    text = str(args[1]) if len(args) > 1 else (str(args[0]) if args and not errno else "")
    return errno, text


def translate(exc: BaseException, *, objects: Sequence[str] = ()) -> RequestError | None:
    """Return the BEDS error for a driver exception, or ``None`` if it is not one.

    Args:
        exc: the exception asyncmy (or the socket layer under it) raised.
        objects: the database objects the failed call used; named when the server's message
            does not say which object is missing.
    """
    if isinstance(exc, my_errors.InterfaceError):
        return StoreUnavailable("the MariaDB connection is closed")
    if isinstance(exc, my_errors.MySQLError):
        errno, text = _errno_text(exc)
        if errno in _UNAVAILABLE:
            return StoreUnavailable(_UNAVAILABLE[errno], details=(f"MariaDB error {errno}",))
        if errno in _BUSY:
            return StoreBusy(_BUSY[errno], details=(f"MariaDB error {errno}",))
        detail = f"MariaDB error {errno}: {text}" if text else f"MariaDB error {errno}"
        sqlstate = str(getattr(exc, "sqlstate", None) or "")
        if errno == _SIGNAL and sqlstate == STALE_VERSION:
            return StaleVersion("the record changed since it was read")
        if errno in _CONFLICT or (errno == _SIGNAL and sqlstate.startswith("23")):
            return Conflict("the write conflicts with existing data", details=(detail,))
        pattern = _MISSING.get(errno)
        if pattern is not None:
            match = pattern.search(text)
            # The server qualifies names with the schema ("db.spp_create"); callers know the db.
            names = [match.group(1).rpartition(".")[2]] if match else list(objects)
            if errno == 1049 and names:
                message = f"the configured database {names[0]!r} does not exist"
            else:
                message = "a database object the call uses does not exist"
            return DatabaseObjectMissing(message, details=names)
        return StoreError("MariaDB rejected the call", details=(detail,))
    if isinstance(exc, OSError):
        # Includes TimeoutError and ConnectionError raised below asyncmy's own handling.
        return StoreUnavailable("cannot reach MariaDB", details=(type(exc).__name__,))
    return None


@contextlib.contextmanager
def map_exceptions(*, objects: Sequence[str] = ()) -> Iterator[None]:
    """Re-raise driver exceptions raised inside the block as BEDS errors (httpcore style).

    BEDS errors and anything that is not a driver exception (cancellation, bugs) pass through.

    Args:
        objects: the database objects the block calls, for ``DatabaseObjectMissing`` details.
    """
    try:
        yield
    except (my_errors.MySQLError, OSError) as exc:
        mapped = translate(exc, objects=objects)
        if mapped is None:  # pragma: no cover - every caught type maps
            raise
        raise mapped from exc


def connect_problem(
    exc: BaseException | None, *, tls: bool, url_key: str = "stores.rel.url"
) -> StoreUnavailable | None:
    """Why opening a connection failed, naming the keys to change, when the configuration is why.

    Covers a TLS handshake that failed (the server's certificate refused, or no TLS on the
    server) and a login the server refused, which may be a server that takes TLS connections
    only: MySQL says so (error 3159), but MariaDB answers "access denied" (1045) as for a wrong
    password, so a plaintext login refused says both.

    Args:
        exc: the driver exception (the ``__cause__`` of the mapped ``StoreUnavailable``).
        tls: whether the connection used TLS (``[stores.rel.tls]`` is present).
        url_key: the key of the URL connected to (``stores.rel.secondaries[0]``).

    Returns:
        The error to raise instead, or ``None`` when the plain translation says it already.
    """
    if exc is None:
        return None
    errno = _errno_text(exc)[0] if isinstance(exc, my_errors.MySQLError) else 0
    reason = handshake_problem(exc)
    if reason is not None:
        return StoreUnavailable(
            f"cannot connect to the MariaDB server of {url_key} over TLS ([stores.rel.tls]): "
            f"{reason.rstrip('.')}; {_tls_hint(reason)}",
            details=(f"MariaDB error {errno}",) if errno else (),
        )
    if errno == 3159:
        return StoreUnavailable(
            f"the server of {url_key} requires TLS: add [stores.rel.tls]",
            details=("MariaDB error 3159",),
        )
    if errno == 1045 and not tls:
        return StoreUnavailable(
            f"MariaDB refused the login of {url_key} over a plaintext connection: check its user "
            "and password, or, if the server requires TLS (require_secure_transport), add "
            "[stores.rel.tls]",
            details=("MariaDB error 1045",),
        )
    return None


@contextlib.contextmanager
def connecting(settings: RelSettings, *, url_key: str = "stores.rel.url") -> Iterator[None]:
    """:func:`map_exceptions` around opening a connection to the server of ``settings``.

    A cause the configuration can fix (TLS, a server that requires TLS) is said in the words of
    :func:`connect_problem`, naming ``url_key`` and ``stores.rel.tls``.
    """
    try:
        with map_exceptions(objects=(settings.database,)):
            yield
    except StoreUnavailable as exc:
        cause = exc.__cause__
        better = connect_problem(cause, tls=settings.tls is not None, url_key=url_key)
        if better is None:
            raise
        raise better from cause


def _tls_hint(reason: str) -> str:
    if "mismatch" in reason:  # "Hostname mismatch", "IP address mismatch"
        return (
            "the host of the URL is not a name in the server's certificate: use one it holds, or "
            "set stores.rel.tls.verify_identity = false for an IP address it lacks"
        )
    if "expired" in reason or "not yet valid" in reason:
        return "the server needs a valid certificate"
    if "certificate was refused" in reason:
        return "stores.rel.tls.ca_file must hold the CA that signed the server's certificate"
    return "does the server have TLS on (have_ssl)?"
