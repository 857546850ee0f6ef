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
query ``view = "v"``                          ``SELECT `f1`, … FROM `v` WHERE <conditions>
                                              [AND <after the cursor>] [ORDER BY …] LIMIT %s``
                                              (every declared field, or the list
                                              ``columns = [...]``)
query ``function = "f"``, ``returns = "c"``   ``SELECT `f`(%s, …) AS `c``` → one record
============================================  ==================================================

A view query's conditions, order and cursor position are built by :mod:`beds_rel.views`. Only
views filter and page: a procedure or function takes its params as they are and pages itself,
so one that declares ``where`` or ``order_by`` is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import attrs

from beds.envelopes import Operation
from beds.errors import TemplateError
from beds.templates.model import FilterOp
from beds_rel.views import ViewSelect, view_select

if TYPE_CHECKING:
    from beds.templates.model import QuerySpec, Template

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
    """The statement; for a view query, its first page with one value per ``in`` param (the
    statement actually run is built by ``select``)."""
    params: tuple[str, ...]
    """The record or query fields bound, in order (a query procedure's limit follows them)."""
    arity: int | None = None
    """Arguments the routine takes (``None`` for views)."""
    columns: tuple[str, ...] = ()
    """The view's columns the query selects."""
    column: str | None = None
    """The result column of a function query."""
    select: ViewSelect | None = None
    """A view query's statement builder."""
    referenced: tuple[str, ...] = ()
    """Every view column the query names: selected, compared or ordered by (for ``verify``)."""


@attrs.frozen(kw_only=True)
class TemplatePlan:
    """Every statement one template needs, keyed by operation and by query name."""

    writes: Mapping[Operation, Call]
    queries: Mapping[str, Call]
    key_query: str | None = None
    """The query that reads one record by its key (a view or procedure query whose params are
    the key), for a journal's before and after and a stale version's current one."""

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


def _view_call(template: Template, spec: QuerySpec, name: str, binding: Mapping[str, Any]) -> Call:
    path = f"queries.{spec.name}"
    # A view answers every field, or the fields its query names (a view that must not have a
    # column, such as a password hash, is bound with the columns it has).
    wanted = binding.get("columns", tuple(template.fields))
    if isinstance(wanted, str) or not isinstance(wanted, Sequence) or not wanted:
        raise _fail(template, f"{path}.columns", "must be a non-empty list of field names")
    for field in wanted:
        if field not in template.fields:
            raise _fail(template, f"{path}.columns", f"names {field!r}, which is not a field")
    columns = tuple(_column(template, field, f"{path}.columns") for field in wanted)
    for key in spec.order_by:
        if key.field not in columns:
            # The next page's cursor is made from the last record's order fields.
            raise _fail(template, f"{path}.columns", f"must include {key.field!r} (order_by)")
    for param in spec.params:
        condition = spec.condition(param)
        at = f"{path}.where.{param}" if param in spec.where else f"{path}.params"
        if condition.field not in template.fields:
            raise _fail(template, at, f"names {condition.field!r}, which is not a field")
        _column(template, condition.field, at)
    select = view_select(spec, name, columns)
    first, _ = select.statement({p: [None] for p in spec.params}, None, 0)
    referenced = dict.fromkeys(
        [
            *columns,
            *(spec.condition(p).field for p in spec.params),
            *(k.field for k in spec.order_by),
        ]
    )
    return Call(
        kind="view",
        name=name,
        sql=first,
        params=spec.params,
        columns=columns,
        select=select,
        referenced=tuple(referenced),
    )


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
    spec = template.queries[query]
    if kind == "view":
        return _view_call(template, spec, name, binding)
    if spec.where or spec.order_by:
        declared = "where" if spec.where else "order_by"
        raise _fail(
            template,
            f"{path}.{declared}",
            f"needs a view: declare a view to page/filter; a procedure pages itself (a {kind} "
            "query takes its params as they are)",
        )
    params = spec.params
    for param in params:
        if param not in template.fields:
            raise _fail(template, f"{path}.params", f"names {param!r}, which is not a field")
        _column(template, param, f"{path}.params")
    if kind == "procedure":
        sql = f"CALL {_quote(name)}({_placeholders(len(params) + 1)})"
        return Call(kind=kind, name=name, sql=sql, params=params, arity=len(params) + 1)
    if "returns" not in binding:
        raise _fail(
            template,
            path,
            "binds a function, so it must name its result column (returns = ...)",
        )
    column = _column(template, binding["returns"], f"{path}.returns")
    sql = f"SELECT {_quote(name)}({_placeholders(len(params))}) AS {_quote(column)}"
    return Call(kind=kind, name=name, sql=sql, params=params, arity=len(params), column=column)


def _key_query(template: Template, queries: Mapping[str, Call]) -> str | None:
    """The query that reads a record by its key; required by locking and the journal."""
    key = set(template.key)
    found = next(
        (
            name
            for name, call in queries.items()
            if call.kind != "function"
            and set(call.params) == key
            and all(template.queries[name].condition(p).op is FilterOp.EQ for p in call.params)
        ),
        None,
    )
    caps = template.capabilities
    needed = [name for name in ("locking", "journal") if getattr(caps, name)]
    if needed and found is None:
        raise _fail(
            template,
            f"capabilities.{needed[0]}",
            f"needs a view or procedure query whose params are exactly the key {list(template.key)}"
            " (REL reads the record through it)",
        )
    if caps.locking and found is not None:
        call = queries[found]
        if call.kind == "view" and caps.version_field not in call.columns:
            raise _fail(
                template,
                f"queries.{found}.columns",
                f"must include {caps.version_field!r}: a stale write reports the current version",
            )
    return found


def plan_template(template: Template) -> TemplatePlan:
    """Check a REL template's bindings and build its statements.

    Raises:
        TemplateError: an unknown binding key, a query bound to no or several objects, a name that
            is not an identifier or lacks the TLA prefix, a view query on a non-field, a
            procedure or function query that declares ``where`` or ``order_by``, or locking or a
            journal without a key query to read the record with.
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
    return TemplatePlan(writes=writes, queries=queries, key_query=_key_query(template, queries))
