"""Check the items of a batch against their template: one record after another, in a tight loop.

Each item gets what :func:`~beds.templates.validate.validate_write` (or a key query's params
check) would answer for it alone, with paths under ``$.records[i]`` (``$.keys[i]``), but a
valid item costs a quick check per field and builds no exception and no path text: the full
check runs only for an item the quick one does not pass, to say why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from beds.envelopes import Operation
from beds.errors import ValidationFailed
from beds.templates.model import FieldSpec, FieldType, OperationSpec, QuerySpec, Template
from beds.templates.validate import (
    _check_value,
    _check_write,
    _did_you_mean,
    _required,
    _version,
    validate_write,
)
from beds.values import json_type

if TYPE_CHECKING:
    from beds.namaste import Record

__all__ = ("validate_keys", "validate_many")

_BAD: Any = object()
"""What a quick check answers for a value it does not pass (the full check then says why)."""
Quick = Callable[[Any], Any]
"""A field's quick check: the value as the adapter takes it, or ``_BAD``."""


def _quick(spec: FieldSpec) -> Quick:
    """A check of one field's value that builds nothing for a valid value (see ``_BAD``)."""
    nullable = spec.nullable
    kind = spec.type
    if kind is FieldType.STR:
        low, high, pattern = spec.min_length or 0, spec.max_length, spec.pattern
        longest = high if high is not None else float("inf")
        match = pattern.fullmatch if pattern is not None else None

        def text(value: Any) -> Any:
            if (
                type(value) is str
                and low <= len(value) <= longest
                and (match is None or match(value) is not None)
            ):
                return value
            return None if value is None and nullable else _BAD

        return text
    if kind is FieldType.INT or kind is FieldType.FLOAT:
        kinds = (int,) if kind is FieldType.INT else (int, float)
        lowest = spec.minimum if spec.minimum is not None else float("-inf")
        highest = spec.maximum if spec.maximum is not None else float("inf")

        def number(value: Any) -> Any:
            if type(value) in kinds and lowest <= value <= highest:
                return value
            return None if value is None and nullable else _BAD

        return number
    if kind is FieldType.BOOL:
        return lambda value: value if type(value) is bool or (value is None and nullable) else _BAD

    def other(value: Any) -> Any:  # datetime, decimal, json: converted by the full check
        problems: list[str] = []
        checked = _check_value(spec, value, "", problems)
        return _BAD if problems else checked

    return other


@attrs.frozen
class _Plan:
    """How one template's records are checked for one operation (made once, then reused)."""

    template: Template
    allowed: frozenset[str]
    required: tuple[str, ...]
    checks: tuple[tuple[str, Quick], ...]
    fill: tuple[str, ...]
    """Params set to ``None`` when absent (create)."""
    changes: int
    """Update: the payload must hold more keys than this (the key and version)."""


_plans: dict[tuple[int, Operation], _Plan] = {}


def _plan(template: Template, operation: Operation, spec: OperationSpec) -> _Plan:
    found = _plans.get((id(template), operation))
    if found is not None and found.template is template:
        return found
    pinned = (*template.key, *_version(template))
    if operation is Operation.CREATE:
        allowed, required, fill, changes = spec.params, _required(template, spec), spec.params, -1
    elif operation is Operation.UPDATE:
        allowed, required, fill, changes = spec.params, pinned, (), len(pinned)
    else:
        allowed, required, fill, changes = pinned, pinned, (), -1
    plan = _Plan(
        template=template,
        allowed=frozenset(allowed),
        required=required,
        checks=tuple((name, _quick(template.fields[name])) for name in allowed),
        fill=fill,
        changes=changes,
    )
    _plans[(id(template), operation)] = plan  # the template is kept by the plan: ids stay valid
    return plan


def _fast(plan: _Plan, payload: dict[str, Any]) -> Record | None:
    """The record of a valid payload, or ``None`` when the full check must say what is wrong."""
    if not plan.allowed.issuperset(payload) or len(payload) <= plan.changes:
        return None
    for name in plan.required:
        if name not in payload:
            return None
    record: Record = {}
    for name, quick in plan.checks:
        if name in payload:
            value = quick(payload[name])
            if value is _BAD:
                return None
            record[name] = value
    for name in plan.fill:
        if name not in record:
            record[name] = None
    return record


def validate_many(
    template: Template, operation: Operation, items: Sequence[Any], path: str = "$.records"
) -> list[Record | ValidationFailed]:
    """Validate each item of a batch as ``validate_write`` validates one payload.

    Returns one entry per item, in order: the record for the adapter, or the item's
    ``ValidationFailed`` whose details name ``$.records[i].<field>``. A valid item builds no
    exception and no path text (a quick check per field; the full check only for a bad one).

    Raises:
        UnsupportedOperation: the template does not declare the operation.
    """
    spec = template.operations.get(operation)
    if spec is None:
        validate_write(template, operation, {})  # raises the single operation's refusal
        raise AssertionError("unreachable")  # pragma: no cover
    plan = _plan(template, operation, spec)
    results: list[Record | ValidationFailed] = []
    append = results.append
    for index, item in enumerate(items):
        record = _fast(plan, item) if type(item) is dict else None
        if record is not None:
            append(record)
            continue
        problems: list[str] = []
        where = f"{path}[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be an object, got {json_type(item)}")
        else:
            record = _check_write(template, operation, spec, item, where, problems)
        if problems:
            append(
                ValidationFailed(
                    f"payload does not match template {template.name!r}", details=sorted(problems)
                )
            )
        else:  # the quick checks are stricter only in what they convert: accept the full check's
            assert record is not None
            append(record)
    return results


def validate_keys(
    template: Template, spec: QuerySpec, keys: Sequence[Any], path: str = "$.keys"
) -> list[Record | ValidationFailed]:
    """Validate each key of a ``fetch_many`` as the params of the key query ``spec``.

    Returns one entry per key, in order: its params, or its ``ValidationFailed`` naming
    ``$.keys[i].<field>``.
    """
    params = spec.params
    wanted = frozenset(params)
    checks = tuple((name, _quick(template.fields[spec.condition(name).field])) for name in params)
    results: list[Record | ValidationFailed] = []
    for index, key in enumerate(keys):
        if type(key) is dict and len(key) == len(params) and wanted.issuperset(key):
            record: Record = {}
            for name, quick in checks:
                value = quick(key[name])
                if value is _BAD:
                    break
                record[name] = value
            else:
                results.append(record)
                continue
        results.append(_key_failure(template, spec, key, f"{path}[{index}]"))
    return results


def _key_failure(template: Template, spec: QuerySpec, key: Any, where: str) -> ValidationFailed:
    problems: list[str] = []
    if not isinstance(key, dict):
        problems.append(f"{where}: must be an object, got {json_type(key)}")
    else:
        for name in sorted(set(key) - set(spec.params)):
            problems.append(f"{where}.{name}: is not a key field{_did_you_mean(name, spec.params)}")
        for name in spec.params:
            if name not in key:
                problems.append(f"{where}.{name}: is required")
            else:
                field = template.fields[spec.condition(name).field]
                _check_value(field, key[name], f"{where}.{name}", problems)
    return ValidationFailed(
        f"payload does not match template {template.name!r}", details=sorted(problems)
    )
