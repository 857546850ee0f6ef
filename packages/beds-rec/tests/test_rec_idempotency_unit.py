"""REC idempotency helpers that need no server: the key field, validators, failure kinds."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.errors import (
    AutoReconnect,
    DuplicateKeyError,
    NetworkTimeout,
    ServerSelectionTimeoutError,
    WriteConcernError,
)

from beds.errors import Conflict, DeadlineExceeded, NotFound, StoreError, StoreUnavailable
from beds.namaste import CallContext
from beds_rec.idempotency import _not_applied, allow_key_field, forbids_key_field, key_value


def test_the_key_field_names_the_key_and_the_request() -> None:
    ctx = CallContext(event_id="e", idempotency_key="order-7", fingerprint="ab" * 32)
    assert key_value(ctx) == "order-7#" + "ab" * 8


STRICT: dict[str, Any] = {
    "$jsonSchema": {
        "bsonType": "object",
        "additionalProperties": False,
        "properties": {"_id": {}, "name": {"bsonType": "string"}},
    }
}


@pytest.mark.parametrize(
    ("validator", "forbids"),
    [
        (None, False),
        ({"name": {"$type": "string"}}, False),  # query operators constrain named fields only
        ({"$jsonSchema": {"bsonType": "object"}}, False),
        ({"$jsonSchema": {"additionalProperties": True}}, False),
        (STRICT, True),
        ({"$jsonSchema": {"additionalProperties": {"bsonType": "int"}}}, True),
        (
            {"$jsonSchema": {"additionalProperties": False, "properties": {"_beds_key": {}}}},
            False,
        ),
    ],
)
def test_which_validators_forbid_the_key_field(validator: Any, forbids: bool) -> None:
    assert forbids_key_field(validator) is forbids


def test_a_strict_validator_is_given_the_key_field_and_nothing_else_changes() -> None:
    allowed = allow_key_field(STRICT)
    assert allowed is not None
    schema = allowed["$jsonSchema"]
    assert schema["properties"] == {
        "_id": {},
        "name": {"bsonType": "string"},
        "_beds_key": {"bsonType": "string"},
    }
    assert schema["additionalProperties"] is False
    assert "_beds_key" not in STRICT["$jsonSchema"]["properties"]  # the original is untouched
    assert not forbids_key_field(allowed)
    lenient = {"$jsonSchema": {"bsonType": "object"}}
    assert allow_key_field(lenient) is lenient
    assert allow_key_field(None) is None


def caused(error: Exception, cause: BaseException | None) -> Exception:
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("exc", "released"),
    [
        (caused(Conflict("dup"), DuplicateKeyError("E11000")), True),
        (NotFound("nothing has this key"), True),
        (StoreError("validation"), True),
        (DeadlineExceeded("before the call"), True),
        (caused(StoreUnavailable("no server"), ServerSelectionTimeoutError("none")), True),
        (caused(StoreUnavailable("lost"), AutoReconnect("reset")), False),
        (caused(StoreUnavailable("slow"), NetworkTimeout("timed out")), False),
        (caused(DeadlineExceeded("mid-call"), NetworkTimeout("timed out")), False),
        (caused(StoreError("wc"), WriteConcernError("wtimeout", 64, {})), False),
        (RuntimeError("a bug"), False),
    ],
)
def test_only_a_write_that_certainly_changed_nothing_releases_its_key(
    exc: BaseException, released: bool
) -> None:
    assert _not_applied(exc) is released


def test_a_cancelled_write_keeps_its_key() -> None:
    import asyncio

    assert _not_applied(asyncio.CancelledError()) is False
