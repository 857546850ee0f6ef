"""A declared query's MongoDB filter and sort: equality, conditions and the keyset of a cursor.

Every operator and field name comes from the template; the request supplies values only:

* a param listed in the ``[rec]`` binding's ``filter`` is matched by equality (``{field: v}``);
* a param with a condition in the query's ``where`` becomes ``{field: {"$gt": v}}`` (``$eq``,
  ``$gt``, ``$gte``, ``$lt``, ``$lte``, ``$in``; the values of ``in`` each converted as the
  field's values are, so a list of ``id`` texts becomes ``ObjectId`` values);
* a cursor's position (``Query.after``, the last record's ``order_by`` values) becomes the
  keyset condition: ``$or`` over the order's keys, key *i* compared strictly in its direction
  with equality on the keys before it (``a > x``, or ``a == x and b < y`` when ``b`` descends),
  ANDed with the rest. With the same sort, the next page starts strictly after that record.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from beds.templates.model import FilterOp

if TYPE_CHECKING:
    from collections.abc import Mapping

    from beds.namaste import Query
    from beds_rec.bindings import QueryPlan, TemplatePlan

__all__ = ("find_filter", "find_sort")

_OPERATORS = {
    FilterOp.EQ: "$eq",
    FilterOp.GT: "$gt",
    FilterOp.GTE: "$gte",
    FilterOp.LT: "$lt",
    FilterOp.LTE: "$lte",
    FilterOp.IN: "$in",
}
_PARAMS = "$.payload.params"


def find_filter(plan: TemplatePlan, shape: QueryPlan, query: Query) -> dict[str, Any]:
    """The filter of ``query``: its params' equalities and conditions, after its cursor.

    Raises:
        ValidationFailed: a value the field cannot hold in MongoDB (an ``id`` that is not 24
            hexadecimal characters, a decimal beyond ``Decimal128``).
    """
    clauses: list[dict[str, Any]] = []
    equal = plan.document(shape.filter, query.params, _PARAMS)
    if equal:
        clauses.append(equal)
    clauses += [_condition(plan, query, param) for param in query.spec.where]
    if query.after is not None and query.spec.order_by:
        clauses.append(_keyset(plan, query))
    if not clauses:
        return {}
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def find_sort(plan: TemplatePlan, shape: QueryPlan) -> list[tuple[str, int]] | None:
    """The sort of the query as document fields and directions (``None``: the store's order)."""
    return [(plan.document_field(name), direction) for name, direction in shape.sort] or None


def _condition(plan: TemplatePlan, query: Query, param: str) -> dict[str, Any]:
    condition = query.spec.condition(param)
    value: Any = query.params.get(param)
    where = f"{_PARAMS}.{param}"
    if condition.op is FilterOp.IN:
        value = [plan.value(condition.field, item, f"{where}[{n}]") for n, item in enumerate(value)]
        # In order: MongoDB takes $in as a set, but SecantusDB (the embedded development
        # server) answers an $in it looks up in an index in the list's order, even when the
        # same index should give the sort: sorted values make its answer sorted too.
        with contextlib.suppress(TypeError):  # Decimal128 values do not compare in Python
            value = sorted(value)
    else:
        value = plan.value(condition.field, value, where)
    return {plan.document_field(condition.field): {_OPERATORS[condition.op]: value}}


def _keyset(plan: TemplatePlan, query: Query) -> dict[str, Any]:
    """Records strictly after ``query.after`` in the query's declared order."""
    order = query.spec.order_by
    after = query.after or ()
    position: Mapping[str, Any] = {
        key.field: plan.value(key.field, value, "$.payload.cursor")
        for key, value in zip(order, after, strict=True)
    }
    branches: list[dict[str, Any]] = []
    for i, key in enumerate(order):
        branch = {plan.document_field(k.field): position[k.field] for k in order[:i]}
        beyond = "$lt" if key.descending else "$gt"
        branch[plan.document_field(key.field)] = {beyond: position[key.field]}
        branches.append(branch)
    return branches[0] if len(branches) == 1 else {"$or": branches}
