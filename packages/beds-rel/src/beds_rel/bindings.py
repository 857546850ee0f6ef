"""Turn a template's REL bindings into the fixed SQL the adapter runs.

Everything here runs once per template, when the node registers it (``RelAdapter.prepare``), so
serving a request only binds values. Identifiers come only from the template declaration, each
checked (object names through :meth:`Template.object_name`), and are quoted with backticks;
request values are always bound as parameters.

============================================  ==================================================
binding                                       SQL
============================================  ==================================================
operation ``procedure = "p"``                 ``CALL `p`(%s, …)``, one argument per param
query ``procedure = "p"``                     ``CALL `p`(%s, …, %s)``, the params then the limit
query ``view = "v"``                          ``SELECT `f1`, … FROM `v` WHERE `a` <=> %s AND …
                                              LIMIT %s`` (every declared field, or the list
                                              ``columns = [...]``; null-safe =)
query ``function = "f"``, ``returns = "c"``   ``SELECT `f`(%s, …) AS `c``` → one record
============================================  ==================================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import attrs

from beds.envelopes import Operation
from beds.errors import TemplateError

if TYPE_CHECKING:
    from beds.templates.model import Template

__all__ = ("Call", "TemplatePlan", "plan_template")

Kind = Literal["procedure", "view", "function"]
_KINDS: tuple[Kind, ...] = ("procedure", "view", "function")
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@attrs.frozen(kw_only=True)
class Call:
    """One statement the adapter runs for an operation or a query."""

    kind: Kind
    name: str
    """The database object called (procedure, view or function)."""
    sql: str
    params: tuple[str, ...]
    """The record or query fields bound, in order (a query procedure's limit follows them)."""
    arity: int | None = None
    """Arguments the routine takes (``None`` for views)."""
    columns: tuple[str, ...] = ()
    """The view's columns the query selects."""
    column: str | None = None
    """The result column of a function query."""


@attrs.frozen(kw_only=True)
class TemplatePlan:
    """Every statement one template needs, keyed by operation and by query name."""

    writes: Mapping[Operation, Call]
    queries: Mapping[str, Call]

    def calls(self) -> list[Call]:
        """Return every call, writes first, for ``verify``."""
        return [*self.writes.values(), *self.queries.values()]


def _quote(name: str) -> str:
    return f"`{name}`"


def _placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)


def _fail(template: Template, path: str, message: str) -> TemplateError:
    return TemplateError(
        f"{template.source or template.name}: {path} {message}", template=template.name
    )


def _column(template: Template, value: Any, path: str) -> str:
    if not isinstance(value, str) or not _COLUMN.match(value):
        raise _fail(template, path, f"must be a column name (letters, digits, _), got {value!r}")
    return value


def _write_call(template: Template, operation: Operation, binding: Mapping[str, Any]) -> Call:
    path = f"operations.{operation.value}"
    unknown = sorted(set(binding) - {"procedure"})
    if unknown:
        raise _fail(template, f"{path}.{unknown[0]}", "is not a REL binding (procedure)")
    if "procedure" not in binding:
        raise _fail(template, path, "must name its stored procedure (procedure = ...)")
    name = template.object_name(binding["procedure"], key=f"{path}.procedure")
    params = template.operations[operation].params
    sql = f"CALL {_quote(name)}({_placeholders(len(params))})"
    return Call(kind="procedure", name=name, sql=sql, params=params, arity=len(params))


def _query_call(template: Template, query: str, binding: Mapping[str, Any]) -> Call:
    path = f"queries.{query}"
    unknown = sorted(set(binding) - {*_KINDS, "returns", "columns"})
    if unknown:
        raise _fail(
            template, f"{path}.{unknown[0]}", "is not a REL binding (procedure, view, function)"
        )
    kinds = [kind for kind in _KINDS if kind in binding]
    if len(kinds) != 1:
        raise _fail(template, path, "must bind exactly one of procedure, view or function")
    kind = kinds[0]
    if "returns" in binding and kind != "function":
        raise _fail(template, f"{path}.returns", "is only for function queries")
    if "columns" in binding and kind != "view":
        raise _fail(template, f"{path}.columns", "is only for view queries")
    name = template.object_name(binding[kind], key=f"{path}.{kind}")
    params = template.queries[query].params
    for param in params:
        if param not in template.fields:
            raise _fail(template, f"{path}.params", f"names {param!r}, which is not a field")
        _column(template, param, f"{path}.params")
    if kind == "procedure":
        sql = f"CALL {_quote(name)}({_placeholders(len(params) + 1)})"
        return Call(kind=kind, name=name, sql=sql, params=params, arity=len(params) + 1)
    if kind == "function":
        if "returns" not in binding:
            raise _fail(
                template,
                path,
                "binds a function, so it must name its result column (returns = ...)",
            )
        column = _column(template, binding["returns"], f"{path}.returns")
        sql = f"SELECT {_quote(name)}({_placeholders(len(params))}) AS {_quote(column)}"
        return Call(kind=kind, name=name, sql=sql, params=params, arity=len(params), column=column)
    # A view answers every field, or the fields its query names (a view that must not have a
    # column, such as a password hash, is bound with the columns it has).
    wanted = binding.get("columns", tuple(template.fields))
    if isinstance(wanted, str) or not isinstance(wanted, Sequence) or not wanted:
        raise _fail(template, f"{path}.columns", "must be a non-empty list of field names")
    for field in wanted:
        if field not in template.fields:
            raise _fail(template, f"{path}.columns", f"names {field!r}, which is not a field")
    columns = tuple(_column(template, field, f"{path}.columns") for field in wanted)
    where = " AND ".join(f"{_quote(p)} <=> %s" for p in params)
    sql = (
        f"SELECT {', '.join(map(_quote, columns))} FROM {_quote(name)}"
        f"{' WHERE ' + where if where else ''} LIMIT %s"
    )
    return Call(kind=kind, name=name, sql=sql, params=params, columns=columns)


def plan_template(template: Template) -> TemplatePlan:
    """Check a REL template's bindings and build its statements.

    Raises:
        TemplateError: an unknown binding key, a query bound to no or several objects, a name that
            is not an identifier or lacks the TLA prefix, or a view query on a non-field.
    """
    if template.store_options:
        first = sorted(template.store_options)[0]
        raise _fail(template, f"{template.store}.{first}", "is not a REL template option")
    writes = {
        operation: _write_call(template, operation, spec.binding)
        for operation, spec in template.operations.items()
    }
    queries = {
        name: _query_call(template, name, spec.binding) for name, spec in template.queries.items()
    }
    return TemplatePlan(writes=writes, queries=queries)
