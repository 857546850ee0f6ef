"""The ``SELECT`` a view query runs: its conditions, its declared order and a cursor's position.

A view query's conditions come from its ``where`` (:meth:`QuerySpec.condition`): ``eq`` is the
null-safe ``<=>``, ``gt``/``gte``/``lt``/``lte`` are ``>``, ``>=``, ``<``, ``<=``, and ``in`` is
``IN (%s, …)`` with one placeholder per value sent, the only fragment whose size varies per
request. ``order_by`` is the ``ORDER BY``, and a cursor's position is the keyset condition
``((a < %s) OR (a = %s AND b > %s) …)``, each key compared in its own direction. Identifiers
were checked by :mod:`beds_rel.bindings`; every value is bound.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from beds.templates.model import FilterOp

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from beds.templates.model import QuerySpec

__all__ = ("ViewSelect", "view_select")

_OPERATORS = {
    FilterOp.EQ: "<=>",
    FilterOp.GT: ">",
    FilterOp.GTE: ">=",
    FilterOp.LT: "<",
    FilterOp.LTE: "<=",
}


def _quote(name: str) -> str:
    return f"`{name}`"


def _placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)


@attrs.frozen(kw_only=True)
class ViewSelect:
    """A view query's statement, in fixed fragments assembled per request.

    Only an ``in`` condition's placeholders depend on the request (one per value sent); every
    identifier and operator was fixed when the template was prepared.
    """

    head: str
    """``SELECT `a`, … FROM `v```."""
    conditions: tuple[tuple[str, str], ...]
    """``(param, fragment)`` per param: ``"`f` <=> %s"``, or ``"`f` IN ({})"`` for ``in``."""
    ins: frozenset[str]
    """The params whose fragment takes one placeholder per value (``in``)."""
    keyset: str
    """The condition "strictly after the cursor" (empty: the query is not pageable)."""
    keyset_values: tuple[int, ...]
    """Which cursor value each of ``keyset``'s placeholders binds, in order."""
    order: str
    """`` ORDER BY …`` (empty without ``order_by``)."""

    def statement(
        self, params: Mapping[str, Any], after: Sequence[Any] | None, limit: int | None
    ) -> tuple[str, list[Any]]:
        """The SQL and its arguments for one fetch.

        Args:
            params: the query's validated params (``in`` params are lists).
            after: the cursor's order values, or ``None`` for the first page.
            limit: the row limit, or ``None`` for no ``LIMIT`` clause.
        """
        where: list[str] = []
        args: list[Any] = []
        for param, fragment in self.conditions:
            value = params[param]
            if param in self.ins:
                where.append(fragment.format(_placeholders(len(value))))
                args.extend(value)
            else:
                where.append(fragment)
                args.append(value)
        if after is not None and self.keyset:
            where.append(self.keyset)
            args.extend(after[index] for index in self.keyset_values)
        sql = self.head
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += self.order
        if limit is not None:
            sql += " LIMIT %s"
            args.append(limit)
        return sql, args

    def keyed_in(self, param: str) -> ViewSelect | None:
        """This select with its one condition, ``param`` equal to a value, made ``IN`` a list.

        A batch of keys in one statement (``fetch_many``); ``None`` when the query has other
        conditions or compares ``param`` otherwise.
        """
        equal = f" {_OPERATORS[FilterOp.EQ]} %s"
        if len(self.conditions) != 1 or self.ins:
            return None
        name, fragment = self.conditions[0]
        if name != param or not fragment.endswith(equal):
            return None
        return attrs.evolve(
            self,
            conditions=((param, fragment.removesuffix(equal) + " IN ({})"),),
            ins=frozenset({param}),
            order="",
        )


def _keyset(spec: QuerySpec) -> tuple[str, tuple[int, ...]]:
    """The condition "after the cursor" for ``spec.order_by``, and the values it binds.

    Always the expansion, even when every key goes the same way: MariaDB (10.11) does not turn
    a row comparison ``(a, b) < (%s, %s)`` into an index range, so a deep page read every row
    before it (19,910 index reads against 9 for the expansion, measured on 20,000 rows).
    """
    terms: list[str] = []
    values: list[int] = []
    for index, key in enumerate(spec.order_by):
        equal = [f"{_quote(k.field)} = %s" for k in spec.order_by[:index]]
        operator = "<" if key.descending else ">"
        terms.append("(" + " AND ".join([*equal, f"{_quote(key.field)} {operator} %s"]) + ")")
        values.extend([*range(index), index])
    return ("(" + " OR ".join(terms) + ")" if terms else ""), tuple(values)


def view_select(spec: QuerySpec, view: str, columns: Sequence[str]) -> ViewSelect:
    """Build the statement of ``spec`` on ``view`` selecting ``columns`` (all checked names)."""
    conditions: list[tuple[str, str]] = []
    ins: set[str] = set()
    for param in spec.params:
        condition = spec.condition(param)
        column = _quote(condition.field)
        if condition.op is FilterOp.IN:
            ins.add(param)
            conditions.append((param, f"{column} IN ({{}})"))
        else:
            conditions.append((param, f"{column} {_OPERATORS[condition.op]} %s"))
    keyset, keyset_values = _keyset(spec)
    order = ", ".join(_quote(k.field) + (" DESC" if k.descending else "") for k in spec.order_by)
    return ViewSelect(
        head=f"SELECT {', '.join(map(_quote, columns))} FROM {_quote(view)}",
        conditions=tuple(conditions),
        ins=frozenset(ins),
        keyset=keyset,
        keyset_values=keyset_values,
        order=f" ORDER BY {order}" if order else "",
    )
