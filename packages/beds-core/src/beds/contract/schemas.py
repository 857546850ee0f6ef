"""JSON Schemas of a template's records and operation payloads, from its declaration.

One builder for every published contract: the AsyncAPI document of the AMQP contract
(:mod:`beds.contract.asyncapi`) and an HTTP edge's OpenAPI document use the same schemas, so a
field means the same thing on every edge. The schemas use only keywords that JSON Schema
draft-07 (AsyncAPI 3.0's schema format) and 2020-12 (OpenAPI 3.1) read alike: ``type`` lists,
``enum``, ``const``, ``pattern``, lengths, bounds, ``items`` with one schema, ``required``,
``additionalProperties``.

They say what the node checks (:mod:`beds.templates.validate`), so a value a schema refuses is
one the node refuses with ``BEDS-422``:

- ``str``: ``minLength``/``maxLength`` (characters) and ``pattern``; the declared pattern is a
  full match, so it is anchored as ``^(?:pattern)$``;
- ``int`` is a JSON integer, ``float`` any number, both with ``minimum``/``maximum``;
- ``datetime`` is an ISO 8601 string (``format: date-time``; a value without an offset is UTC);
- ``decimal`` is a string of a decimal number, or an integer;
- ``json`` is any JSON value but ``null``;
- ``nullable`` adds ``"null"`` to the type.

Request payloads are closed (``additionalProperties: false``): the node refuses unknown keys.
Records in replies are open, because a template version may add fields (docs/wire-contract.md,
"Compatibility within v1"), and never list a ``secret`` field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from beds.envelopes import Consistency, Operation
from beds.templates.model import FieldType, FilterOp
from beds.values import to_wire

if TYPE_CHECKING:
    from collections.abc import Iterable

    from beds.templates.model import FieldSpec, LongOperation, QuerySpec, Template

__all__ = (
    "DECIMAL_PATTERN",
    "IN_MAX_VALUES",
    "fetch_payload_schema",
    "field_schema",
    "long_operation_params_schema",
    "query_params_schema",
    "record_schema",
    "returns_schema",
    "submit_payload_schema",
    "write_payload_schema",
)

DECIMAL_PATTERN: Final = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
"""A decimal number written as a string, as ``decimal`` fields take it (``"12.50"``)."""
IN_MAX_VALUES: Final = 100
"""Most values the list param of an ``in`` condition takes (:mod:`beds.templates.validate`)."""

_JSON_VALUE: Final = ["object", "array", "string", "number", "boolean"]


def _number(value: float) -> int | float:
    """``5.0`` as ``5``: declared bounds read from TOML may be floats of whole numbers."""
    return int(value) if float(value).is_integer() else value


def _anchored(pattern: str) -> str:
    """A Python full-match pattern as an anchored ECMA-262 one (what JSON Schema reads).

    Named groups are the one common construct spelled differently (``(?P<n>`` is ``(?<n>``).
    """
    return "^(?:" + pattern.replace("(?P<", "(?<").replace("(?P=", r"\k<") + ")$"


def field_schema(field: FieldSpec) -> dict[str, Any]:
    """The JSON Schema of one field's values on the wire.

    Args:
        field: the declared field (:class:`beds.templates.model.FieldSpec`).

    Returns:
        A new dict; callers may add keys to it.
    """
    kind = field.type
    types: list[str]
    schema: dict[str, Any] = {}
    if kind is FieldType.STR:
        types = ["string"]
        if field.min_length is not None:
            schema["minLength"] = field.min_length
        if field.max_length is not None:
            schema["maxLength"] = field.max_length
        if field.pattern is not None:
            schema["pattern"] = _anchored(field.pattern.pattern)
    elif kind in (FieldType.INT, FieldType.FLOAT):
        types = ["integer" if kind is FieldType.INT else "number"]
        if field.minimum is not None:
            schema["minimum"] = _number(field.minimum)
        if field.maximum is not None:
            schema["maximum"] = _number(field.maximum)
    elif kind is FieldType.BOOL:
        types = ["boolean"]
    elif kind is FieldType.DATETIME:
        types = ["string"]
        schema["format"] = "date-time"
    elif kind is FieldType.DECIMAL:
        # ``pattern`` applies to strings only, so the integer form stays accepted.
        types = ["string", "integer"]
        schema["pattern"] = DECIMAL_PATTERN
    else:  # FieldType.JSON
        types = list(_JSON_VALUE)
    if field.nullable:
        types.append("null")
    description = field.description
    if kind is FieldType.DATETIME:
        description = " ".join(
            filter(None, (description, "ISO 8601; without an offset, the time is UTC."))
        )
    head: dict[str, Any] = {"type": types[0] if len(types) == 1 else types}
    if description:
        head["description"] = description
    return {**head, **schema}


def record_schema(
    template: Template,
    fields: Iterable[str] | None = None,
    *,
    required: Iterable[str] = (),
    closed: bool = False,
) -> dict[str, Any]:
    """The JSON Schema of an object holding some of a template's fields.

    Args:
        template: the declaration.
        fields: the fields it may hold, in order; ``None``: every field but the ``secret``
            ones (a record as replies show it).
        required: the fields it must hold.
        closed: refuse keys not in ``fields`` (a request payload; the node refuses them).
    """
    names = (
        [name for name, spec in template.fields.items() if not spec.secret]
        if fields is None
        else list(fields)
    )
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {name: field_schema(template.fields[name]) for name in names},
    }
    must = [name for name in required if name in names]
    if must:
        schema["required"] = must
    if closed:
        schema["additionalProperties"] = False
    return schema


def _bound_note(schema: dict[str, Any], what: str) -> None:
    schema["description"] = " ".join(
        filter(None, (schema.get("description"), f"Bound by the node to {what}."))
    )


def write_payload_schema(template: Template, operation: Operation) -> dict[str, Any]:
    """The payload of a create, update or delete request (docs/wire-contract.md, "Payloads").

    create: the operation's params; a required, non-nullable field must be sent, except the
    param bound to the caller (``principal``, or the owner field), which may be left out.
    update: the key (and the version field under locking) plus at least one other param.
    delete: exactly the key (and the version field under locking).

    Raises:
        KeyError: the template does not declare ``operation``.
    """
    spec = template.operations[operation]
    caps = template.capabilities
    pinned = [*template.key, *([caps.version_field] if caps.locking else [])]
    bound = {name for name in (spec.principal, template.access.owner) if name}
    if operation is Operation.CREATE:
        fields = list(spec.params)
        required = [
            name
            for name in fields
            if template.fields[name].required
            and not template.fields[name].nullable
            and name not in bound
        ]
    elif operation is Operation.UPDATE:
        fields = list(dict.fromkeys([*pinned, *spec.params]))
        required = pinned
    elif operation is Operation.DELETE:
        fields, required = pinned, pinned
    else:
        raise KeyError(operation)
    schema = record_schema(template, fields, required=required, closed=True)
    if operation is Operation.UPDATE:
        schema["minProperties"] = len(required) + 1
    for name in sorted(bound & set(fields)):
        who = "the caller's handle" if name == spec.principal else "its creator's handle (owner)"
        _bound_note(schema["properties"][name], who)
    return schema


def returns_schema(template: Template, operation: Operation) -> dict[str, Any]:
    """The ``data`` of a successful create or update: the operation's ``returns`` fields."""
    spec = template.operations[operation]
    names = [n for n in spec.returns if n in template.fields and not template.fields[n].secret]
    return record_schema(template, names)


def query_params_schema(template: Template, query: QuerySpec) -> dict[str, Any]:
    """A query's ``params``: each param typed by the field its condition compares.

    Every param is required, except the one bound to the caller (``principal``). An ``in``
    condition takes a list of 1 to :data:`IN_MAX_VALUES` values.
    """
    properties: dict[str, Any] = {}
    for name in query.params:
        condition = query.condition(name)
        schema = field_schema(template.fields[condition.field])
        if condition.op is FilterOp.IN:
            schema = {
                "type": "array",
                "items": schema,
                "minItems": 1,
                "maxItems": IN_MAX_VALUES,
            }
        if condition.op is not FilterOp.EQ or condition.field != name:
            schema["description"] = " ".join(
                filter(None, (schema.get("description"), f"{condition.field} {condition.op}"))
            )
        if name == query.principal:
            _bound_note(schema, "the caller's handle")
        properties[name] = schema
    required = [name for name in query.params if name != query.principal]
    result: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        result["required"] = required
    return result


def fetch_payload_schema(template: Template, query: QuerySpec) -> dict[str, Any]:
    """The payload of a fetch with ``query``: ``{query, params, limit, cursor, consistency}``.

    ``query`` may be left out for the template's default query; ``cursor`` exists only for a
    pageable query; ``cached`` consistency only for a template that caches.
    """
    consistency = [c.value for c in Consistency]
    if not template.capabilities.cache:
        consistency.remove(Consistency.CACHED.value)
    properties: dict[str, Any] = {
        "query": {"const": query.name},
        "params": query_params_schema(template, query),
        "limit": {
            "type": "integer",
            "minimum": 1,
            "maximum": query.max_limit,
            "description": f"Most records to return (default {query.max_limit}).",
        },
    }
    if query.pageable:
        properties["cursor"] = {
            "type": ["string", "null"],
            "description": "The previous page's meta.next.",
        }
    properties["consistency"] = {"enum": consistency}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    required = []
    if query.name != template.default_query:
        required.append("query")
    if query.params and any(name != query.principal for name in query.params):
        required.append("params")
    if required:
        schema["required"] = required
    return schema


def long_operation_params_schema(operation: LongOperation) -> dict[str, Any]:
    """The ``params`` of a submit of ``operation``; a param with a default may be left out."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in operation.params.items():
        schema = field_schema(param.field)
        if param.default is not None:
            schema["default"] = to_wire(param.default)
        elif param.field.required:
            required.append(name)
        properties[name] = schema
    result: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        result["required"] = required
    return result


def submit_payload_schema(operation: LongOperation) -> dict[str, Any]:
    """The payload of a submit: ``{"operation": NAME, "params": {...}}``."""
    params = long_operation_params_schema(operation)
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"operation": {"const": operation.name}, "params": params},
        "required": ["operation"],
        "additionalProperties": False,
    }
    if "required" in params:
        schema["required"] = ["operation", "params"]
    if operation.description:
        schema["description"] = operation.description
    return schema
