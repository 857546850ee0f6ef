"""``json`` fields: any JSON value is accepted as it was sent; anything else is refused."""

from __future__ import annotations

import decimal
import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beds.envelopes import Operation
from beds.errors import TemplateError, ValidationFailed
from beds.templates import FieldType, Template, parse_template, validate_fetch, validate_write
from beds.values import MAX_JSON_DEPTH, json_problem

TEMPLATE = """
name = "thing"
store = "memory"
tla = "thg"
key = ["id"]
[fields.id]
type = "int"
generated = true
[fields.meta]
type = "json"
[fields.extra]
type = "json"
required = false
nullable = true
[operations.create]
params = ["meta", "extra"]
returns = ["id"]
[operations.update]
params = ["id", "meta", "extra"]
[queries.by_meta]
params = ["meta"]
"""


@pytest.fixture(scope="module")
def thing() -> Template:
    return parse_template(TEMPLATE, source="thing.toml")


def problems(template: Template, payload: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationFailed) as info:
        validate_write(template, Operation.CREATE, payload)
    return list(info.value.details)


# What orjson reads from a request body: integers of 64 bits, finite floats, any text.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def test_the_field_type_is_json(thing: Template) -> None:
    assert thing.fields["meta"].type is FieldType.JSON
    assert FieldType("json") is FieldType.JSON


@settings(max_examples=200)
@given(value=JSON_VALUES)
def test_any_json_value_is_accepted_unchanged(thing: Template, value: Any) -> None:
    if value is None:  # a null json field is a null field: refused unless nullable
        assert problems(thing, {"meta": value}) == ["$.payload.meta: must not be null"]
        return
    record = validate_write(thing, Operation.CREATE, {"meta": value, "extra": value})
    assert record == {"meta": value, "extra": value}
    assert record["meta"] is value
    # What was accepted goes back on the wire as it came.
    assert orjson.loads(orjson.dumps(record["meta"])) == value


@settings(max_examples=100)
@given(value=JSON_VALUES)
def test_a_json_param_takes_any_json_value_too(thing: Template, value: Any) -> None:
    if value is None:
        return
    query = validate_fetch(thing, {"query": "by_meta", "params": {"meta": value}})
    assert query.params == {"meta": value}


NOT_JSON: list[tuple[Any, str]] = [
    ({1, 2}, "must be a JSON value, got set"),
    ((1, 2), "must be a JSON value, got tuple"),
    (b"bytes", "must be a JSON value, got bytes"),
    (decimal.Decimal("1.5"), "must be a JSON value, got Decimal"),
    (object(), "must be a JSON value, got object"),
    (math.nan, "must hold finite numbers (no NaN or Infinity)"),
    ([1, [math.inf]], "must hold finite numbers (no NaN or Infinity)"),
    ({"a": {"b": -math.inf}}, "must hold finite numbers (no NaN or Infinity)"),
    (2**63, "must hold integers of at most 64 bits (signed)"),
    ({"big": -(2**63) - 1}, "must hold integers of at most 64 bits (signed)"),
    ({1: "a"}, "must have objects with string keys"),
    ({"a": [{None: 1}]}, "must have objects with string keys"),
    ({"a": [1, {2, 3}]}, "must be a JSON value, got set"),
]


@pytest.mark.parametrize(("value", "why"), NOT_JSON)
def test_what_is_not_json_is_refused(thing: Template, value: Any, why: str) -> None:
    assert problems(thing, {"meta": value}) == [f"$.payload.meta: {why}"]


@given(
    value=st.recursive(
        st.sets(st.integers(), max_size=2) | st.binary(max_size=3) | st.complex_numbers(),
        lambda inner: (
            st.lists(inner, min_size=1, max_size=3)
            | st.dictionaries(st.text(max_size=3), inner, min_size=1, max_size=3)
        ),
        max_leaves=6,
    )
)
def test_a_value_holding_anything_that_is_not_json_is_refused(thing: Template, value: Any) -> None:
    [problem] = problems(thing, {"meta": value})
    assert problem.startswith("$.payload.meta: must be a JSON value, got ")


def nested(levels: int) -> Any:
    value: Any = "leaf"
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


def test_nesting_is_bounded_without_recursion(thing: Template) -> None:
    assert validate_write(thing, Operation.CREATE, {"meta": nested(MAX_JSON_DEPTH)})
    assert problems(thing, {"meta": nested(MAX_JSON_DEPTH + 1)}) == [
        f"$.payload.meta: must nest arrays and objects at most {MAX_JSON_DEPTH} levels deep"
    ]
    # Far deeper than the interpreter's recursion limit: refused, not a RecursionError.
    assert json_problem(nested(100_000)) is not None


def test_the_first_problem_is_reported_in_a_fixed_order() -> None:
    value = {"a": math.nan, "b": {1, 2}, "c": 2**64}
    assert json_problem(value) == "must hold finite numbers (no NaN or Infinity)"
    assert json_problem([{1, 2}, math.nan]) == "must be a JSON value, got set"


def test_a_null_is_accepted_where_the_field_is_nullable(thing: Template) -> None:
    record = validate_write(thing, Operation.CREATE, {"meta": {"a": 1}})
    assert record == {"meta": {"a": 1}, "extra": None}
    record = validate_write(thing, Operation.CREATE, {"meta": [None], "extra": None})
    assert record == {"meta": [None], "extra": None}


def test_json_fields_neither_range_nor_order(thing: Template) -> None:
    ranged = (
        TEMPLATE
        + '[queries.q]\nparams = ["m"]\n[queries.q.where]\nm = {field = "meta", op = "gt"}\n'
    )
    with pytest.raises(
        TemplateError, match=r"queries\.q\.where\.m\.op gt cannot compare json values"
    ):
        parse_template(ranged, source="thing.toml")
    ordered = TEMPLATE + '[queries.q]\nparams = []\norder_by = ["meta", "id"]\n'
    with pytest.raises(TemplateError, match=r"queries\.q\.order_by names 'meta'"):
        parse_template(ordered, source="thing.toml")
