"""Parse a template's ``[queries.*]`` tables: params, conditions, declared order, limits.

A query's params are matched by equality with the fields of the same name, unless its
``where`` table says otherwise::

    [queries.recent]
    params = ["author", "since"]
    order_by = ["-created_at", "id"]      # "-" for descending; ends with the key: pageable
    [queries.recent.where]
    since = { field = "created_at", op = "gte" }

``op`` is one of ``eq``, ``gt``, ``gte``, ``lt``, ``lte`` and ``in`` (the param is then a list of
the field's values). Conditions never come from the request: only the values do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from beds.templates.model import FieldSpec, FieldType, Filter, FilterOp, OrderKey, QuerySpec
from beds.templates.reader import Reader, binding, check_fields, principal_param

__all__ = ("parse_queries",)

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_KNOWN = frozenset(
    {"params", "max_limit", "description", "internal", "principal", "where", "order_by"}
)
_ORDERED = frozenset({FieldType.STR, FieldType.INT, FieldType.FLOAT, FieldType.DATETIME})
"""Field types a range condition or a cursor can compare (booleans and decimals cannot: a
decimal is text on the wire, and its text order is not its numeric order)."""


def parse_queries(
    r: Reader, raw_queries: Mapping[str, Any], fields: Mapping[str, FieldSpec], key: tuple[str, ...]
) -> dict[str, QuerySpec]:
    """Parse every ``[queries.NAME]`` table.

    Raises:
        TemplateError: naming the query's key path.
    """
    queries: dict[str, QuerySpec] = {}
    for query_name, raw in raw_queries.items():
        path = f"queries.{query_name}"
        if not _NAME.fullmatch(query_name):
            raise r.fail(path, "name must be lower_snake_case")
        if not isinstance(raw, Mapping):
            raise r.fail(path, "must be a table")
        params = r.names(raw, "params", f"{path}.params")
        where = _where(r, raw, params, fields, path)
        check_fields(r, tuple(p for p in params if p not in where), fields, f"{path}.params")
        max_limit = r.positive(raw, "max_limit", f"{path}.max_limit")
        if max_limit == 0:
            raise r.fail(f"{path}.max_limit", "must be at least 1")
        internal = raw.get("internal", False)
        if not isinstance(internal, bool):
            raise r.fail(f"{path}.internal", "must be true or false")
        queries[query_name] = QuerySpec(
            name=query_name,
            params=params,
            where=where,
            order_by=_order_by(r, raw, fields, key, path),
            max_limit=100 if max_limit is None else max_limit,
            internal=internal,
            principal=principal_param(r, raw, params, fields, path),
            binding=binding(raw, _KNOWN),
        )
    return queries


def _where(
    r: Reader,
    raw: Mapping[str, Any],
    params: tuple[str, ...],
    fields: Mapping[str, FieldSpec],
    path: str,
) -> dict[str, Filter]:
    where: dict[str, Filter] = {}
    for param, condition in r.table(raw, "where", f"{path}.where").items():
        at = f"{path}.where.{param}"
        if param not in params:
            raise r.fail(at, "is not one of the query's params")
        if not isinstance(condition, Mapping) or set(condition) - {"field", "op"}:
            raise r.fail(at, "must be a table with 'field' and 'op'")
        field = r.string(condition, "field", f"{at}.field", param)
        if field not in fields:
            raise r.fail(f"{at}.field", f"names {field!r}, which is not a declared field")
        op_name = r.string(condition, "op", f"{at}.op", "eq")
        try:
            op = FilterOp(op_name)
        except ValueError:
            choices = ", ".join(op.value for op in FilterOp)
            raise r.fail(f"{at}.op", f"must be one of {choices}, got {op_name!r}") from None
        ranged = op in (FilterOp.GT, FilterOp.GTE, FilterOp.LT, FilterOp.LTE)
        if ranged and fields[field].type not in _ORDERED:
            raise r.fail(f"{at}.op", f"{op.value} cannot compare {fields[field].type} values")
        where[param] = Filter(param=param, field=field, op=op)
    return where


def _order_by(
    r: Reader,
    raw: Mapping[str, Any],
    fields: Mapping[str, FieldSpec],
    key: tuple[str, ...],
    path: str,
) -> tuple[OrderKey, ...]:
    at = f"{path}.order_by"
    written = r.names(raw, "order_by", at)
    if not written:
        return ()
    order = tuple(
        OrderKey(field=n.removeprefix("-"), descending=n.startswith("-")) for n in written
    )
    check_fields(r, tuple(o.field for o in order), fields, at)
    for item in order:
        spec = fields[item.field]
        if spec.type not in _ORDERED or spec.nullable:
            raise r.fail(
                at,
                f"names {item.field!r}: a cursor needs a field that is never null and whose "
                f"values compare ({', '.join(sorted(_ORDERED))})",
            )
    if not set(key) <= {o.field for o in order}:
        raise r.fail(
            at,
            f"must include the key fields {list(key)}, so that the order is total and every "
            "record appears on exactly one page",
        )
    return order
