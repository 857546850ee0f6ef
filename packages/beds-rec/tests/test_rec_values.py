from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import bson
import pytest
from bson.decimal128 import Decimal128
from bson.objectid import ObjectId
from hypothesis import given
from hypothesis import strategies as st

from beds.errors import ValidationFailed
from beds_rec.values import CODEC_OPTIONS, from_bson, object_id, to_bson, to_record, utc_now

HEX24 = re.compile(r"[0-9a-f]{24}")


@given(st.binary(min_size=12, max_size=12))
def test_object_id_round_trips_through_its_text(raw: bytes) -> None:
    oid = ObjectId(raw)
    text = from_bson(oid)
    assert HEX24.fullmatch(text)
    assert object_id(text, path="$.payload.id", template="t") == oid
    assert object_id(text.upper(), path="$.payload.id", template="t") == oid


@given(st.one_of(st.text(), st.integers(), st.none(), st.binary(min_size=12, max_size=12)))
def test_anything_but_24_hex_characters_is_a_validation_failure(value: object) -> None:
    if isinstance(value, str) and re.fullmatch(r"[0-9A-Fa-f]{24}", value):
        return
    with pytest.raises(ValidationFailed) as caught:
        object_id(value, path="$.payload.params.id", template="spew_profile")
    assert caught.value.details == ("$.payload.params.id: must be 24 hexadecimal characters",)
    assert caught.value.message == "payload does not match template 'spew_profile'"


def test_to_record_applies_the_id_rule() -> None:
    oid = ObjectId()
    created = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    doc = {"_id": oid, "handle": "ada", "created_at": created, "price": Decimal128("1.50")}
    assert to_record(doc, ["id", "handle", "created_at", "price", "bio"], id_mapped=True) == {
        "id": str(oid),
        "handle": "ada",
        "created_at": "2026-01-02T03:04:05.678000Z",
        "price": "1.50",
        "bio": None,
    }
    # Without the mapping, "id" is an ordinary (here absent) field and _id never shows.
    assert to_record(doc, ["id", "handle"], id_mapped=False) == {"id": None, "handle": "ada"}


def test_from_bson_converts_nested_values() -> None:
    oid = ObjectId()
    assert from_bson({"a": [oid, {"b": Decimal128("2")}], "c": (1,)}) == {
        "a": [str(oid), {"b": Decimal("2")}],
        "c": [1],
    }


def fits_decimal128(value: Decimal) -> bool:
    _sign, digits, exponent = value.as_tuple()
    return isinstance(exponent, int) and len(digits) <= 34 and -6176 <= exponent <= 6111


@given(st.decimals(allow_nan=False, allow_infinity=False).filter(fits_decimal128))
def test_decimals_survive_bson(value: Decimal) -> None:
    stored = to_bson(value, path="$.payload.price", template="t")
    decoded = bson.decode(bson.encode({"v": stored}), codec_options=CODEC_OPTIONS)
    assert from_bson(decoded["v"]) == value


def test_a_decimal_too_long_for_decimal128_is_a_validation_failure() -> None:
    with pytest.raises(ValidationFailed) as caught:
        to_bson(Decimal("1." + "1" * 40), path="$.payload.price", template="t")
    assert caught.value.details == ("$.payload.price: must have at most 34 significant digits",)


def test_other_values_are_stored_unchanged() -> None:
    now = dt.datetime.now(dt.UTC)
    assert to_bson(now, path="p", template="t") is now
    assert to_bson("x", path="p", template="t") == "x"


def test_utc_now_has_bson_precision() -> None:
    now = utc_now()
    assert now.tzinfo is dt.UTC
    assert now.microsecond % 1000 == 0
    decoded = bson.decode(bson.encode({"t": now}), codec_options=CODEC_OPTIONS)
    assert decoded["t"] == now


def test_a_json_value_is_stored_as_it_is() -> None:
    value = {"tags": ["a", "b"], "geo": {"lat": 1.5, "n": None}, "ok": True}
    assert to_bson(value, path="$.payload.meta", template="t") is value
    assert to_bson([1, "x"], path="$.payload.meta", template="t") == [1, "x"]
    stored = bson.decode(bson.encode({"meta": value}), CODEC_OPTIONS)["meta"]
    assert to_record({"meta": stored}, ["meta"], id_mapped=False) == {"meta": value}


@pytest.mark.parametrize(
    "value",
    [
        {"$ne": None},  # would be an operator in an equality filter
        {"a": [{"$where": "1"}]},
        {"a.b": 1},
        {"nul\0": 1},
        [{"ok": {"$gt": 0}}],
    ],
)
def test_a_json_key_that_is_not_a_field_name_is_refused(value: object) -> None:
    with pytest.raises(ValidationFailed) as caught:
        to_bson(value, path="$.payload.params.meta", template="t")
    assert caught.value.details == (
        "$.payload.params.meta: must have object keys that are MongoDB field names (not "
        "starting with '$', without '.' or NUL)",
    )
