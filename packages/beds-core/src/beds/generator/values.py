"""Example values of a field: what the generated docs show and the generated tests send.

A value is checked exactly as a broker checks a payload (``beds.templates.validate``), so an
example the generator writes is always accepted. Candidates are fixed lists, tried in order:
the same field always gets the same example.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from beds.templates.model import FieldSpec, FieldType
from beds.templates.validate import check_value

if TYPE_CHECKING:
    from beds.generator.model import Field

__all__ = ("example_problem", "example_value", "field_spec", "other_value")

_STRINGS = ("example", "ann", "a", "abc", "x1", "a_b", "1", "ABC", "a-b", "a.b@example.org")


def field_spec(field: Field) -> FieldSpec:
    """The template field a description field becomes."""
    return FieldSpec(
        name=field.name,
        type=FieldType(field.type),
        required=field.required,
        nullable=field.nullable,
        generated=field.generated,
        max_length=field.max_length,
        min_length=field.min_length,
        pattern=re.compile(field.pattern) if field.pattern is not None else None,
        minimum=field.minimum,
        maximum=field.maximum,
        description=field.description,
    )


def example_problem(field: Field, value: Any) -> str | None:
    """Why ``value`` is not a valid value of ``field`` (``None``: it is)."""
    problems: list[str] = []
    check_value(field_spec(field), value, "example", problems)
    if value is None:
        return "must not be null"
    return problems[0].removeprefix("example: ") if problems else None


def _candidates(field: Field) -> list[Any]:
    if field.type == "str":
        low = field.min_length or 0
        high = field.max_length
        padded = ["x" * max(low, 1), "a" * max(low, 1)]
        out = [*_STRINGS, *padded]
        if high is not None:
            out.append("x" * min(high, max(low, 1)))
        return out
    if field.type == "int":
        numbers: list[Any] = [1, 0, 2, 10, 100]
        if field.minimum is not None:
            numbers.insert(0, int(field.minimum))
        return numbers
    if field.type == "float":
        floats: list[Any] = [1.5, 0.0, 1.0, 10.0]
        if field.minimum is not None:
            floats.insert(0, float(field.minimum))
        return floats
    fixed: dict[str, list[Any]] = {
        "bool": [True],
        "datetime": ["2026-01-02T03:04:05Z"],
        "decimal": ["12.50"],
        "json": [{"example": [1, 2]}],
    }
    return fixed[field.type]


def example_value(field: Field) -> Any:
    """The field's example: its own, else the first candidate that fits (``None``: none)."""
    if field.example is not None:
        return field.example
    for candidate in _candidates(field):
        if example_problem(field, candidate) is None:
            return candidate
    return None


def other_value(field: Field) -> Any:
    """A valid value different from the example (what an update sends), or the example."""
    first = example_value(field)
    for candidate in _candidates(field):
        if candidate != first and example_problem(field, candidate) is None:
            return candidate
    if field.type == "str" and isinstance(first, str):
        for char in "yzb0":
            changed = first[:-1] + char if first else char
            if changed != first and example_problem(field, changed) is None:
                return changed
    if field.type == "bool":
        return not first
    return first
