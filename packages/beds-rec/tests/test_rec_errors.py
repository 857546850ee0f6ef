from __future__ import annotations

import time
from typing import Any

import pytest
from bson.errors import InvalidDocument
from hypothesis import given
from hypothesis import strategies as st
from pymongo.errors import (
    AutoReconnect,
    CollectionInvalid,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    NetworkTimeout,
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
from beds_rec.errors import map_exceptions, translate

DUPLICATE = {
    "index": 0,
    "code": 11000,
    "errmsg": (
        "E11000 duplicate key error collection: db.spf_profiles index: spf_handle_uq "
        'dup key: { handle: "ada" }'
    ),
    "keyPattern": {"handle": 1},
    "keyValue": {"handle": "ada"},
}

VALIDATION = {
    "index": 0,
    "code": 121,
    "errmsg": "Document failed validation",
    "errInfo": {
        "failingDocumentId": "6b042b6ba01fc4cea1aa7515",
        "details": {
            "operatorName": "$jsonSchema",
            "schemaRulesNotSatisfied": [
                {
                    "operatorName": "properties",
                    "propertiesNotSatisfied": [
                        {"propertyName": "handle", "details": [{"consideredValue": 3}]},
                        {"propertyName": "bio", "details": []},
                    ],
                },
                {"operatorName": "required", "missingProperties": ["created_at"]},
            ],
        },
    },
}


def raised(exc: BaseException, **kwargs: Any) -> RequestError:
    with pytest.raises(RequestError) as caught, map_exceptions(**kwargs):
        raise exc
    assert caught.value.__cause__ is exc
    return caught.value


def test_duplicate_key_is_a_conflict_naming_the_key_fields() -> None:
    error = raised(DuplicateKeyError("E11000 ...", 11000, DUPLICATE), collection="spf_profiles")
    assert isinstance(error, Conflict)
    assert (
        error.message
        == "a record with the same unique key already exists on collection 'spf_profiles'"
    )
    assert error.details == ("handle: duplicate value",)
    assert "ada" not in str(error.to_error())


def test_duplicate_key_without_key_pattern_names_the_index() -> None:
    details = {k: v for k, v in DUPLICATE.items() if k not in ("keyPattern", "keyValue")}
    error = raised(DuplicateKeyError("E11000", 11000, details))
    assert error.details == ("index spf_handle_uq: duplicate value",)
    assert raised(DuplicateKeyError("E11000", 11000, None)).details == ("key: duplicate value",)


def test_document_validation_is_a_store_error_naming_the_fields() -> None:
    error = raised(WriteError("Document failed validation", 121, VALIDATION), collection="c")
    assert type(error) is StoreError
    assert error.message == "the document failed the collection's validator on collection 'c'"
    assert error.details == (
        "bio: rejected by the validator",
        "created_at: rejected by the validator",
        "handle: rejected by the validator",
    )
    bare = raised(WriteError("Document failed validation", 121, {"code": 121}))
    assert bare.details == ("document: rejected by the validator",)


REACH = "the MongoDB server cannot be reached"
SLOW = "the MongoDB server did not answer in time"


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (AutoReconnect("connection reset by 10.0.0.1:27017"), REACH),
        (ConnectionFailure("refused"), REACH),
        (ServerSelectionTimeoutError("127.0.0.1:9 connection refused, Timeout: 0.2s"), REACH),
        (NetworkTimeout("timed out"), SLOW),
        (ExecutionTimeout("operation exceeded time limit", 50, {"code": 50}), SLOW),
    ],
)
def test_unreachable_or_slow_servers_are_unavailable(exc: PyMongoError, message: str) -> None:
    error = raised(exc)
    assert type(error) is StoreUnavailable
    assert error.message == message


def test_a_timeout_after_the_deadline_is_deadline_exceeded() -> None:
    past = time.time() - 1
    assert type(raised(NetworkTimeout("timed out"), deadline=past)) is DeadlineExceeded
    future = time.time() + 60
    assert type(raised(NetworkTimeout("timed out"), deadline=future)) is StoreUnavailable
    # A refused connection is not a timeout, whatever the deadline.
    assert type(raised(AutoReconnect("refused"), deadline=past)) is StoreUnavailable


def test_other_server_errors_carry_the_code_name() -> None:
    exc = OperationFailure(
        "not authorized on db to execute", 13, {"code": 13, "codeName": "Unauthorized"}
    )
    error = raised(exc, collection="c")
    assert type(error) is StoreError
    assert error.message == "the MongoDB server refused the operation on collection 'c'"
    assert error.details == ("code: 13 Unauthorized",)


def test_driver_errors_name_only_their_type() -> None:
    error = raised(CollectionInvalid("collection x already exists"))
    assert type(error) is StoreError
    assert error.details == ("error: CollectionInvalid",)
    assert raised(InvalidDocument("cannot encode object: <object at 0x7f>")).details == (
        "error: InvalidDocument",
    )


def test_other_exceptions_pass_through() -> None:
    with pytest.raises(KeyError), map_exceptions():
        raise KeyError("x")


@given(
    code=st.one_of(st.none(), st.integers(min_value=-(2**31), max_value=2**31)),
    message=st.text(),
    code_name=st.one_of(st.none(), st.text()),
)
def test_any_operation_failure_maps_to_a_deterministic_store_error(
    code: int | None, message: str, code_name: str | None
) -> None:
    details = {"code": code, "codeName": code_name, "errmsg": message}
    first = translate(OperationFailure(message, code, details), collection="c")
    second = translate(OperationFailure(message, code, details), collection="c")
    assert isinstance(first, StoreError)
    assert first.to_error() == second.to_error()
    assert first.message in {
        "the MongoDB server refused the operation on collection 'c'",
        "the MongoDB server did not answer in time on collection 'c'",
    }
