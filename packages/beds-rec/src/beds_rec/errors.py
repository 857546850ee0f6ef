"""Translate pymongo and BSON exceptions into BEDS request errors at the adapter boundary.

=========================================  ================================================
driver exception                           BEDS error
=========================================  ================================================
``DuplicateKeyError``                      ``Conflict``; details name the key fields
``WriteError`` code 121 (validation)       ``StoreError``; details name the rejected fields
any timeout (``exc.timeout``) once the     ``DeadlineExceeded``
request's deadline has passed
``ConnectionFailure`` (``AutoReconnect``,  ``StoreUnavailable`` ("cannot be reached")
server selection)
other timeouts (network, execution)        ``StoreUnavailable`` ("did not answer in time")
other ``PyMongoError`` / ``BSONError``     ``StoreError``; details carry the server's
                                           error code name
=========================================  ================================================

Messages never quote the server's text, which holds ids, values and addresses.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pymongo
from bson.errors import BSONError
from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteError,
)

from beds.errors import (
    Conflict,
    DeadlineExceeded,
    RequestError,
    StoreError,
    StoreUnavailable,
)

__all__ = ("DOCUMENT_VALIDATION_FAILURE", "database_call", "map_exceptions", "translate")

DOCUMENT_VALIDATION_FAILURE = 121
_INDEX_NAME = re.compile(r"index: (\S+)")


@contextmanager
def map_exceptions(*, collection: str = "", deadline: float | None = None) -> Iterator[None]:
    """Re-raise any driver exception raised in the block as a BEDS :class:`RequestError`.

    Args:
        collection: the collection the block works on, named in messages.
        deadline: the request's deadline (Unix time), to tell an expired request from a slow
            or unreachable server.
    """
    try:
        yield
    except (PyMongoError, BSONError) as exc:
        raise translate(exc, collection=collection, deadline=deadline) from exc


@contextmanager
def database_call(*, collection: str, deadline: float | None) -> Iterator[None]:
    """Bound a request's database call by its deadline and translate driver exceptions.

    Raises:
        DeadlineExceeded: the deadline has already passed; the database is not called.
    """
    remaining = None if deadline is None else deadline - time.time()
    if remaining is not None and remaining <= 0:
        raise DeadlineExceeded("the request's deadline passed before the database call")
    # pymongo.timeout bounds every operation in the block, retries and server selection included.
    with map_exceptions(collection=collection, deadline=deadline), pymongo.timeout(remaining):
        yield


def translate(
    exc: PyMongoError | BSONError, *, collection: str = "", deadline: float | None = None
) -> RequestError:
    """Return the BEDS error for one driver exception (see the module docstring)."""
    where = f" on collection {collection!r}" if collection else ""
    if isinstance(exc, DuplicateKeyError):
        return Conflict(
            f"a record with the same unique key already exists{where}",
            details=[f"{name}: duplicate value" for name in _duplicate_key_fields(exc)],
        )
    if isinstance(exc, WriteError) and exc.code == DOCUMENT_VALIDATION_FAILURE:
        names = sorted(_rejected_properties(exc.details or {}))
        return StoreError(
            f"the document failed the collection's validator{where}",
            details=[f"{name}: rejected by the validator" for name in names]
            or ["document: rejected by the validator"],
        )
    timed_out = isinstance(exc, PyMongoError) and exc.timeout
    if timed_out and deadline is not None and time.time() >= deadline:
        return DeadlineExceeded("the request's deadline passed during the database call")
    if isinstance(exc, ServerSelectionTimeoutError) or (
        isinstance(exc, ConnectionFailure) and not timed_out
    ):
        return StoreUnavailable("the MongoDB server cannot be reached")
    if timed_out:
        return StoreUnavailable(f"the MongoDB server did not answer in time{where}")
    if isinstance(exc, OperationFailure):
        code_name = (exc.details or {}).get("codeName") or "UnknownError"
        return StoreError(
            f"the MongoDB server refused the operation{where}",
            details=[f"code: {exc.code} {code_name}"],
        )
    return StoreError(f"the MongoDB driver failed{where}", details=[f"error: {type(exc).__name__}"])


def _duplicate_key_fields(exc: DuplicateKeyError) -> list[str]:
    details: Mapping[str, Any] = exc.details or {}
    pattern = details.get("keyPattern")
    if isinstance(pattern, Mapping) and pattern:
        return [str(name) for name in pattern]
    # Servers that omit keyPattern still name the index in their message.
    found = _INDEX_NAME.search(str(details.get("errmsg", "")))
    return [f"index {found.group(1)}"] if found else ["key"]


def _rejected_properties(info: Mapping[str, Any]) -> set[str]:
    """Collect the property names a ``$jsonSchema`` failure report mentions."""
    names: set[str] = set()
    stack: list[Any] = [info.get("errInfo", {})]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            name = item.get("propertyName")
            if isinstance(name, str):
                names.add(name)
            missing = item.get("missingProperties")
            if isinstance(missing, list):
                names.update(str(prop) for prop in missing)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return names
