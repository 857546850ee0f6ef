"""The one rule that turns database values into JSON-safe wire values."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beds.values import to_wire, to_wire_record

PLUS_TWO = dt.timezone(dt.timedelta(hours=2))


class Colour(enum.Enum):
    RED = 1


class Score(float):
    """A float subclass, as some drivers return (orjson refuses to write them)."""


class Level(enum.IntEnum):
    HIGH = 3


class Opaque:
    def __str__(self) -> str:
        return "opaque!"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (False, False),
        (0, 0),
        (-(2**63), -(2**63)),
        (2**64 - 1, 2**64 - 1),
        (2**64, "18446744073709551616"),
        (-(2**63) - 1, "-9223372036854775809"),
        (1.25, 1.25),
        ("tëxt", "tëxt"),
        (dt.datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05Z"),
        (dt.datetime(2024, 1, 2, 3, 4, 5, 123), "2024-01-02T03:04:05.000123Z"),
        (dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "2024-01-02T03:04:05Z"),
        (dt.datetime(2024, 1, 2, 1, 4, 5, tzinfo=PLUS_TWO), "2024-01-01T23:04:05Z"),
        (dt.date(2024, 2, 29), "2024-02-29"),
        (dt.time(3, 4, 5), "03:04:05"),
        (Decimal("12.50"), "12.50"),
        (Decimal("-0.000000000000000000000000001"), "-1E-27"),
        (Decimal("123456789012345678901234567890.123"), "123456789012345678901234567890.123"),
        (b"\x00\xffbeds", "AP9iZWRz"),
        (bytearray(b"ab"), "YWI="),
        (memoryview(b"ab"), "YWI="),
        (uuid.UUID("12345678-1234-5678-1234-567812345678"), "12345678-1234-5678-1234-567812345678"),
        (Colour.RED, "Colour.RED"),
        (Opaque(), "opaque!"),
        (dt.timedelta(seconds=90), "0:01:30"),
        ([1, (2, b"x")], [1, [2, "eA=="]]),
        ({"a": {"b": Decimal("1.0")}, 5: None}, {"a": {"b": "1.0"}, "5": None}),
        (frozenset({Decimal("2")}), ["2"]),
    ],
    ids=repr,
)
def test_conversion_rule(value: Any, expected: Any) -> None:
    converted = to_wire(value)
    assert converted == expected
    assert type(converted) is type(expected)
    orjson.dumps(converted)


def test_subclasses_of_plain_types() -> None:
    score = to_wire(Score(2.5))
    assert score == 2.5
    assert type(score) is float
    assert orjson.dumps(to_wire({"level": Level.HIGH, "score": Score(1)})) == (
        b'{"level":3,"score":1.0}'
    )


def test_datetime_near_the_end_of_time_keeps_its_offset() -> None:
    early = dt.datetime(1, 1, 1, 0, 30, tzinfo=PLUS_TWO)  # 22:30 on 31 December of year 0
    assert to_wire(early) == "0001-01-01T00:30:00+02:00"


def test_to_wire_record() -> None:
    record = {"id": uuid.UUID(int=1), "at": dt.datetime(2024, 1, 1), "n": 3}
    assert to_wire_record(record) == {
        "id": "00000000-0000-0000-0000-000000000001",
        "at": "2024-01-01T00:00:00Z",
        "n": 3,
    }


# -- properties ----------------------------------------------------------------------------------

offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))
)
timezones: st.SearchStrategy[dt.tzinfo | None] = st.none() | st.just(dt.UTC) | offsets
database_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.floats().map(Score),
    st.text(),
    st.binary(),
    st.datetimes(timezones=timezones),
    st.dates(),
    st.times(timezones=timezones),
    st.decimals(),
    st.uuids(),
    st.sampled_from([Colour.RED, Level.HIGH, Opaque(), dt.timedelta(days=1)]),
)
database_values = st.recursive(
    database_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.frozensets(st.integers() | st.text(), max_size=4),
        st.dictionaries(st.text() | st.integers(), children, max_size=4),
    ),
    max_leaves=12,
)


def only_json_types(value: Any) -> bool:
    """JSON types only; str and int subclasses (StrEnum, IntEnum) are written as such by orjson."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and only_json_types(v) for k, v in value.items())
    if isinstance(value, list):
        return all(only_json_types(v) for v in value)
    return value is None or type(value) is float or isinstance(value, str | int)


@given(database_values)
@settings(deadline=None)
def test_output_is_always_json(value: Any) -> None:
    wire = to_wire(value)
    encoded = orjson.dumps(wire)
    assert only_json_types(wire)
    # The wire form is a fixed point: converting it again changes nothing.
    assert orjson.dumps(to_wire(wire)) == encoded


@given(
    st.builds(
        lambda naive, tz: naive.replace(tzinfo=tz),
        st.datetimes(min_value=dt.datetime(2, 1, 1), max_value=dt.datetime(9998, 12, 31)),
        timezones,
    )
)
def test_datetimes_are_utc_with_z_and_parse_back(value: dt.datetime) -> None:
    wire = to_wire(value)
    assert wire.endswith("Z")
    parsed = dt.datetime.fromisoformat(wire)
    expected = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    assert parsed == expected


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_decimals_keep_every_digit(value: Decimal) -> None:
    assert Decimal(to_wire(value)) == value
    assert to_wire(value) == str(value)


@given(st.datetimes())
def test_a_naive_datetime_is_written_as_the_same_instant_in_utc(value: dt.datetime) -> None:
    as_utc = value.replace(tzinfo=dt.UTC).isoformat().replace("+00:00", "Z")
    assert to_wire(value) == as_utc == to_wire(value.replace(tzinfo=dt.UTC))


@given(st.dictionaries(st.text(max_size=8), database_values, max_size=6))
@settings(deadline=None)
def test_a_record_is_converted_value_by_value_as_to_wire_does(record: dict[str, Any]) -> None:
    converted = to_wire_record(record)
    assert orjson.dumps(converted) == orjson.dumps({k: to_wire(v) for k, v in record.items()})
