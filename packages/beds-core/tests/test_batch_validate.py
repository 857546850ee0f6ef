"""Per-item validation of batches: the same answer as the single operation, item by item."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beds.envelopes import Operation
from beds.errors import UnsupportedOperation, ValidationFailed
from beds.templates import Template, validate_write
from beds.templates.validate_many import validate_keys, validate_many

WRITES = (Operation.CREATE, Operation.UPDATE, Operation.DELETE)

names = st.sampled_from(
    ["id", "title", "count", "active", "ratio", "due", "price", "created_at", "body", "author",
     "parent_id", "handle", "display_name", "titel", "x"]
)  # fmt: skip
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["abc", "zz", "2024-01-02T03:04:05", "12.50", "ann", "a" * 300, "ABC"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
payloads = st.dictionaries(names, values, max_size=7)
items = st.one_of(payloads, values)


def single(template: Template, operation: Operation, item: Any) -> Any:
    """What the single operation answers for one payload (the error instead of raising it)."""
    if not isinstance(item, dict):
        return ValidationFailed(
            f"payload does not match template {template.name!r}", details=("not an object",)
        )
    try:
        return validate_write(template, operation, item)
    except ValidationFailed as error:
        return error


@given(st.sampled_from(WRITES), st.lists(items, min_size=1, max_size=6))
@settings(deadline=None, max_examples=300)
def test_each_item_gets_what_the_single_operation_answers_with_its_own_path(
    demo_template: Template,
    spew_templates: dict[str, Template],
    operation: Operation,
    batch: list[Any],
) -> None:
    for template in (demo_template, *spew_templates.values()):
        if operation not in template.operations:
            with pytest.raises(UnsupportedOperation):
                validate_many(template, operation, batch)
            continue
        results = validate_many(template, operation, batch)
        assert len(results) == len(batch)
        for index, (item, result) in enumerate(zip(batch, results, strict=True)):
            expected = single(template, operation, item)
            if isinstance(expected, dict):
                assert result == expected
                assert list(result) == list(expected)  # the store binds in param order
                continue
            assert isinstance(result, ValidationFailed), (template.name, item, result)
            assert result.message == expected.message
            if isinstance(item, dict):
                path = f"$.records[{index}]"
                assert list(result.details) == [
                    detail.replace("$.payload", path, 1) for detail in expected.details
                ]
            else:
                assert result.details[0].startswith(f"$.records[{index}]: must be an object")


def test_converted_values_come_out_as_the_single_operation_converts_them(
    demo_template: Template,
) -> None:
    record = {"title": "abc", "count": 3, "active": True, "due": "2024-01-02T03:04:05"}
    [checked] = validate_many(demo_template, Operation.CREATE, [{**record, "price": "1.50"}])
    assert isinstance(checked, dict)
    assert checked["due"] == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert checked["price"] == Decimal("1.50")


def test_keys_are_checked_against_the_key_querys_fields(demo_template: Template) -> None:
    spec = demo_template.key_query()
    assert spec is not None
    results = validate_keys(
        demo_template, spec, [{"id": 4}, {"id": "4"}, {"idd": 4}, {}, [4], {"id": 1, "x": 2}]
    )
    assert results[0] == {"id": 4}
    details = [list(r.details) for r in results[1:] if isinstance(r, ValidationFailed)]
    assert details == [
        ["$.keys[1].id: must be an integer, got string"],
        ["$.keys[2].id: is required", "$.keys[2].idd: is not a key field; did you mean 'id'?"],
        ["$.keys[3].id: is required"],
        ["$.keys[4]: must be an object, got array"],
        ["$.keys[5].x: is not a key field"],
    ]


def test_a_plan_made_for_one_template_is_not_used_for_another(
    demo_template: Template, spew_templates: dict[str, Template]
) -> None:
    post = spew_templates["spew_post"]
    assert isinstance(validate_many(demo_template, Operation.DELETE, [{"id": 1}])[0], dict)
    [refused] = validate_many(post, Operation.DELETE, [{"id": 1, "title": "abc"}])
    assert isinstance(refused, ValidationFailed)
    assert refused.details == ("$.records[0].title: is not a field of this operation",)
