"""Driver exceptions become BEDS errors with fixed messages; none escapes map_exceptions."""

from __future__ import annotations

import asyncio

import pytest
from asyncmy import errors as my
from hypothesis import given
from hypothesis import strategies as st

from beds.errors import (
    Conflict,
    DatabaseObjectMissing,
    NotFound,
    RequestError,
    StaleVersion,
    StoreError,
    StoreUnavailable,
)
from beds_rel.errors import map_exceptions, translate

REFUSED = "Can't connect to MySQL server on '10.1.2.3' ([Errno 111] Connect call failed)"


@pytest.mark.parametrize(
    ("exc", "kind", "message", "details"),
    [
        (
            my.OperationalError(2003, REFUSED),
            StoreUnavailable,
            "cannot connect to MariaDB",
            ("MariaDB error 2003",),
        ),
        (
            my.OperationalError(2013, "Lost connection to MySQL server during query"),
            StoreUnavailable,
            "lost the connection to MariaDB",
            ("MariaDB error 2013",),
        ),
        (
            my.OperationalError(2006, "MySQL server has gone away"),
            StoreUnavailable,
            "lost the connection to MariaDB",
            ("MariaDB error 2006",),
        ),
        (
            my.OperationalError(1045, "Access denied for user 'app'@'10.0.0.9'"),
            StoreUnavailable,
            "MariaDB refused the configured credentials",
            ("MariaDB error 1045",),
        ),
        (my.InterfaceError(0, ""), StoreUnavailable, "the MariaDB connection is closed", ()),
        (
            ConnectionResetError(104, "Connection reset by peer"),
            StoreUnavailable,
            "cannot reach MariaDB",
            ("ConnectionResetError",),
        ),
        (TimeoutError(), StoreUnavailable, "cannot reach MariaDB", ("TimeoutError",)),
        (
            my.IntegrityError(1062, "Duplicate entry 'bob' for key 'spx_name_uq'"),
            Conflict,
            "the write conflicts with existing data",
            ("MariaDB error 1062: Duplicate entry 'bob' for key 'spx_name_uq'",),
        ),
        (
            my.IntegrityError(1452, "Cannot add or update a child row: a foreign key fails"),
            Conflict,
            "the write conflicts with existing data",
            ("MariaDB error 1452: Cannot add or update a child row: a foreign key fails",),
        ),
        (
            my.ProgrammingError(1146, "Table 'beds_x.spp_posts_v' doesn't exist"),
            DatabaseObjectMissing,
            "a database object the call uses does not exist",
            ("spp_posts_v",),
        ),
        (
            my.OperationalError(1305, "PROCEDURE beds_x.spp_create does not exist"),
            DatabaseObjectMissing,
            "a database object the call uses does not exist",
            ("spp_create",),
        ),
        (
            my.OperationalError(1305, "FUNCTION beds_x.spp_count_by_author does not exist"),
            DatabaseObjectMissing,
            "a database object the call uses does not exist",
            ("spp_count_by_author",),
        ),
        (
            my.OperationalError(1049, "Unknown database 'spew'"),
            DatabaseObjectMissing,
            "the configured database 'spew' does not exist",
            ("spew",),
        ),
        (
            my.ProgrammingError(1064, "You have an error in your SQL syntax near 'x'"),
            StoreError,
            "MariaDB rejected the call",
            ("MariaDB error 1064: You have an error in your SQL syntax near 'x'",),
        ),
        (
            my.DataError(1406, "Data too long for column 'body' at row 1"),
            StoreError,
            "MariaDB rejected the call",
            ("MariaDB error 1406: Data too long for column 'body' at row 1",),
        ),
        (
            my.OperationalError(1644, "author is banned"),
            StoreError,
            "MariaDB rejected the call",
            ("MariaDB error 1644: author is banned",),
        ),
        (my.InternalError("Packet sequence number wrong"), StoreError, "MariaDB rejected", None),
    ],
)
def test_translate(
    exc: BaseException,
    kind: type[RequestError],
    message: str,
    details: tuple[str, ...] | None,
) -> None:
    mapped = translate(exc)
    assert type(mapped) is kind
    assert mapped.message.startswith(message)
    if details is not None:
        assert mapped.details == details


def test_missing_object_falls_back_to_the_called_object() -> None:
    mapped = translate(my.OperationalError(1305, "something else"), objects=("spp_create",))
    assert isinstance(mapped, DatabaseObjectMissing)
    assert mapped.objects == ("spp_create",)


def test_a_signal_with_sqlstate_23_is_a_conflict() -> None:
    exc = my.OperationalError(1644, "handle taken")
    exc.sqlstate = "23000"
    assert isinstance(translate(exc), Conflict)


def test_a_signal_with_sqlstate_45409_is_a_stale_version() -> None:
    exc = my.OperationalError(1644, "spew_note: stale version")
    exc.sqlstate = "45409"
    mapped = translate(exc)
    assert isinstance(mapped, StaleVersion)
    assert mapped.CODE == "BEDS-409V"
    other = my.OperationalError(1644, "refused")
    other.sqlstate = "45000"
    assert type(translate(other)) is StoreError


def test_client_side_text_never_reaches_the_message() -> None:
    mapped = translate(my.OperationalError(2003, REFUSED))
    assert mapped is not None
    assert "10.1.2.3" not in str(mapped) + " ".join(mapped.details)


def test_other_exceptions_are_not_translated() -> None:
    assert translate(ValueError("x")) is None


def test_map_exceptions_chains_the_driver_error() -> None:
    original = my.OperationalError(2013, "Lost connection")
    with pytest.raises(StoreUnavailable) as info, map_exceptions():
        raise original
    assert info.value.__cause__ is original


@pytest.mark.parametrize("exc", [NotFound("no record"), asyncio.CancelledError(), KeyError("bug")])
def test_map_exceptions_passes_other_errors_through(exc: BaseException) -> None:
    with pytest.raises(type(exc)), map_exceptions():
        raise exc


_classes = st.sampled_from(
    [
        my.MySQLError,
        my.Warning,
        my.Error,
        my.InterfaceError,
        my.DatabaseError,
        my.DataError,
        my.OperationalError,
        my.IntegrityError,
        my.InternalError,
        my.ProgrammingError,
        my.NotSupportedError,
    ]
)
_errnos = st.one_of(
    st.sampled_from([0, 1049, 1062, 1146, 1305, 1356, 1452, 1644, 2003, 2013]),
    st.integers(-1, 5000),
)
_args = st.one_of(
    st.tuples(_errnos, st.text(max_size=40)),
    st.tuples(st.text(max_size=40)),
    st.just(()),
)


@given(kind=_classes, args=_args)
def test_every_driver_error_maps_to_a_request_error(
    kind: type[my.MySQLError], args: tuple[object, ...]
) -> None:
    exc = kind(*args)
    first = translate(exc)
    assert isinstance(first, StoreError | Conflict)
    again = translate(kind(*args))
    assert again is not None
    assert (type(again), again.message, again.details) == (
        type(first),
        first.message,
        first.details,
    )
    with pytest.raises(RequestError), map_exceptions():
        raise exc
