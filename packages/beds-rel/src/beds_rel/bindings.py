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

A procedure may also answer through OUT and INOUT parameters and several result sets
(``out = [...]``, ``inout = [...]``, a query's ``result_sets = [...]``). asyncmy cannot read
OUT parameters, so they go through session variables named by position only
(``@beds_v1``, …), on the call's connection::

    SET @beds_v1 = %s                                  -- INOUT values (when there are any)
    CALL `p`(%s, @beds_v1, %s, @beds_v2)               -- params, [limit], then the OUT params
    SELECT @beds_v1 AS `budget`, @beds_v2 AS `total`   -- what they hold after the call

A query declaring any of them answers one record: each result set by name, each OUT and INOUT
value by name. A write adds them to its first row (:func:`beds_rel.statements.run_call`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import attrs

from beds.envelopes import Operation
from beds.errors import TemplateError
from beds.templates.model import FieldType, FilterOp
from beds_rel.views import ViewSelect, view_select

if TYPE_CHECKING:
    from beds.templates.model import QuerySpec, Template

__all__ = ("Call", "TemplatePlan", "plan_template")

Kind = Literal["procedure", "view", "function"]
_KINDS: tuple[Kind, ...] = ("procedure", "view", "function")
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_RESULTS = ("out", "inout", "result_sets")
"""A procedure's answer beyond its first result set (module docstring)."""


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
    out: tuple[str, ...] = ()
    """A procedure's OUT parameters, after its params (and a query's limit), in order."""
    inout: tuple[str, ...] = ()
    """The params passed as INOUT parameters (through a session variable), in params order."""
    inout_at: tuple[int, ...] = ()
    """Where the ``inout`` params are among ``params``."""
    result_sets: tuple[str, ...] = ()
    """The names of a query procedure's result sets, in the order it returns them."""
    one_record: bool = False
    """A query that answers one record (it declares ``out``, ``inout`` or ``result_sets``)."""
    assign: str | None = None
    """``SET @beds_v1 = %s, …``: the INOUT values, run before ``sql``."""
    read: str | None = None
    """``SELECT @beds_v1 AS `name`, …``: the INOUT and OUT values, run after ``sql``."""
    json_at: frozenset[int] = frozenset()
    """The positions of the args bound as JSON text (``json`` fields)."""
    modes: tuple[str, ...] = ()
    """A procedure's parameter modes (``IN``, ``INOUT``, ``OUT``) for ``verify``; empty: not
    checked."""
    lead: str | None = None
    """A beds-owned call sent in the same packet before the call's first statement (its
    ``lead_arity`` arguments come first); it returns no result set. Set by
    :func:`beds_rel.idempotency.write_once` only, never by a template's binding."""
    lead_arity: int = 0

    @property
    def variables(self) -> tuple[str, ...]:
        """The names ``read`` answers: the INOUT params, then the OUT parameters."""
        return (*self.inout, *self.out)


@attrs.frozen(kw_only=True)
class TemplatePlan:
    """Every statement one template needs, keyed by operation and by query name."""

    writes: Mapping[Operation, Call]
    queries: Mapping[str, Call]
    key_query: str | None = None
    """The query that reads one record by its key (a view or procedure query whose params are
    the key), for a journal's before and after and a stale version's current one."""
    create_many: Call | None = None
    """The create's ``batch_procedure``: the whole of a ``create_many`` in one call
    (:mod:`beds_rel.batch`); ``None``: records are created one by one."""

    def calls(self) -> list[Call]:
        """Return every call, writes first, for ``verify``."""
        many = [self.create_many] if self.create_many is not None else []
        return [*self.writes.values(), *many, *self.queries.values()]


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


def _names(template: Template, binding: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
    """The list of names at ``key`` (empty when absent): each an identifier, none twice."""
    at = f"{path}.{key}"
    value = binding.get(key, [])
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise _fail(template, at, "must be a list of names")
    names = tuple(_column(template, name, at) for name in value)
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise _fail(template, at, f"names {twice[0]!r} twice")
    return names


@attrs.frozen
class _Results:
    """A procedure's declared answer beyond its first result set."""

    out: tuple[str, ...] = ()
    inout: tuple[str, ...] = ()
    result_sets: tuple[str, ...] = ()


def _results(
    template: Template, binding: Mapping[str, Any], path: str, params: tuple[str, ...]
) -> _Results:
    """Read ``out``, ``inout`` and ``result_sets``; every name ends up a key of one answer."""
    out = _names(template, binding, "out", path)
    inout = _names(template, binding, "inout", path)
    result_sets = _names(template, binding, "result_sets", path)
    for name in inout:
        if name not in params:
            raise _fail(template, f"{path}.inout", f"names {name!r}, which is not a param")
    for name in out:
        if name in params:
            raise _fail(
                template,
                f"{path}.out",
                f"names {name!r}, which is a param (declare it in inout to pass it and read it "
                "back)",
            )
    for name in result_sets:
        if name in out or name in inout:
            other = "out" if name in out else "inout"
            raise _fail(
                template,
                f"{path}.result_sets",
                f"names {name!r}, which {other} names too (each is a key of the answer)",
            )
    # INOUT params keep their place among the params: list them in that order.
    return _Results(out=out, inout=tuple(p for p in params if p in inout), result_sets=result_sets)


def _json_at(template: Template, params: tuple[str, ...]) -> frozenset[int]:
    fields = template.fields
    return frozenset(
        at
        for at, param in enumerate(params)
        if param in fields and fields[param].type is FieldType.JSON
    )


def _procedure(
    template: Template, name: str, params: tuple[str, ...], results: _Results, *, query: bool
) -> Call:
    """The call of a procedure: params (INOUT ones through variables), a query's limit, OUTs."""
    slots: list[str] = []
    variables: list[str] = []
    for param in params:
        if param in results.inout:
            variables.append(f"@beds_v{len(variables) + 1}")
            slots.append(variables[-1])
        else:
            slots.append("%s")
    slots += ["%s"] if query else []  # the limit
    for _ in results.out:
        variables.append(f"@beds_v{len(variables) + 1}")
        slots.append(variables[-1])
    names = (*results.inout, *results.out)
    read = ", ".join(f"{var} AS {_quote(n)}" for var, n in zip(variables, names, strict=True))
    assign = ", ".join(f"{var} = %s" for var in variables[: len(results.inout)])
    modes = (
        *("INOUT" if param in results.inout else "IN" for param in params),
        *(("IN",) if query else ()),
        *(("OUT",) * len(results.out)),
    )
    return Call(
        kind="procedure",
        name=name,
        sql=f"CALL {_quote(name)}({', '.join(slots)})",
        params=params,
        arity=len(modes),
        out=results.out,
        inout=results.inout,
        inout_at=tuple(at for at, param in enumerate(params) if param in results.inout),
        result_sets=results.result_sets,
        one_record=query and bool(names or results.result_sets),
        assign=f"SET {assign}" if assign else None,
        read=f"SELECT {read}" if read else None,
        json_at=_json_at(template, params),
        modes=modes,
    )


def _write_call(template: Template, operation: Operation, binding: Mapping[str, Any]) -> Call:
    path = f"operations.{operation.value}"
    unknown = sorted(set(binding) - {"procedure", "out", "inout", BATCH_PROCEDURE})
    if unknown:
        why = (
            "is only for queries: a write answers its first row (with its out and inout values)"
            if unknown[0] == "result_sets"
            else "is not a REL binding (procedure); a write may also declare out and inout"
        )
        raise _fail(template, f"{path}.{unknown[0]}", why)
    if "procedure" not in binding:
        raise _fail(template, path, "must name its stored procedure (procedure = ...)")
    name = template.object_name(binding["procedure"], key=f"{path}.procedure")
    params = template.operations[operation].params
    return _procedure(
        template, name, params, _results(template, binding, path, params), query=False
    )


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
        if template.fields[condition.field].type is FieldType.JSON:
            # JSON text compares as text: equal values may be written differently.
            raise _fail(
                template,
                at,
                f"compares json field {condition.field!r}: a view query cannot compare JSON "
                "values (bind a procedure to take one as a param)",
            )
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
    unknown = sorted(set(binding) - {*_KINDS, "returns", "columns", *_RESULTS})
    if unknown:
        raise _fail(
            template,
            f"{path}.{unknown[0]}",
            "is not a REL binding (procedure, view, function; returns, columns, out, inout, "
            "result_sets)",
        )
    kinds = [kind for kind in _KINDS if kind in binding]
    if len(kinds) != 1:
        raise _fail(template, path, "must bind exactly one of procedure, view or function")
    kind = kinds[0]
    if "returns" in binding and kind != "function":
        raise _fail(template, f"{path}.returns", "is only for function queries")
    if "columns" in binding and kind != "view":
        raise _fail(template, f"{path}.columns", "is only for view queries")
    answers = [key for key in _RESULTS if key in binding]
    if answers and kind != "procedure":
        raise _fail(
            template, f"{path}.{answers[0]}", f"is only for procedure queries, not a {kind}"
        )
    name = template.object_name(binding[kind], key=f"{path}.{kind}")
    spec = template.queries[query]
    if kind == "view":
        return _view_call(template, spec, name, binding)
    if spec.where or spec.order_by:
        declared = "where" if spec.where else "order_by"
        if answers:
            raise _fail(
                template,
                f"{path}.{declared}",
                f"cannot be declared with {answers[0]}: such a query answers one record, which "
                "is neither filtered nor paged",
            )
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
        results = _results(template, binding, path, params)
        return _procedure(template, name, params, results, query=True)
    if "returns" not in binding:
        raise _fail(
            template,
            path,
            "binds a function, so it must name its result column (returns = ...)",
        )
    column = _column(template, binding["returns"], f"{path}.returns")
    sql = f"SELECT {_quote(name)}({_placeholders(len(params))}) AS {_quote(column)}"
    return Call(
        kind=kind,
        name=name,
        sql=sql,
        params=params,
        arity=len(params),
        column=column,
        json_at=_json_at(template, params),
    )


def _key_query(template: Template, queries: Mapping[str, Call]) -> str | None:
    """The query that reads a record by its key; required by locking and the journal."""
    key = set(template.key)
    found = next(
        (
            name
            for name, call in queries.items()
            if call.kind != "function"
            and not call.one_record
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


def _check_one_record_key_query(template: Template, queries: Mapping[str, Call]) -> None:
    """Refuse a one-record query as the template's key query where BEDS reads records by key.

    Owner checks and audit read a record through :meth:`Template.key_query`, the first query
    whose params are exactly the key: that cannot be a query answering result sets.
    """
    spec = template.key_query()
    if spec is None or not queries[spec.name].one_record:
        return
    caps = template.capabilities
    reasons = [
        reason
        for reason, used in (
            ("owner checks", template.access.owner is not None),
            ("audit", caps.audit),
            ("locking", caps.locking),
            ("the journal", caps.journal),
        )
        if used
    ]
    if reasons:
        raise _fail(
            template,
            f"queries.{spec.name}",
            "answers one record (out, inout or result_sets) but is the first query whose params "
            f"are exactly the key, which {', '.join(reasons)} read records through: declare a "
            "plain key query before it",
        )


def plan_template(template: Template) -> TemplatePlan:
    """Check a REL template's bindings and build its statements.

    Raises:
        TemplateError: an unknown binding key, a query bound to no or several objects, a name that
            is not an identifier or lacks the TLA prefix, a view query on a non-field or
            comparing a json field, a procedure or function query that declares ``where`` or
            ``order_by``, ``out``/``inout``/``result_sets`` on a view or function or naming a
            key twice, or locking or a journal without a key query to read the record with.
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
    _check_one_record_key_query(template, queries)
    return TemplatePlan(
        writes=writes,
        queries=queries,
        key_query=_key_query(template, queries),
        create_many=_batch_call(template),
    )


BATCH_PROCEDURE = "batch_procedure"
"""A create's binding naming its batch procedure: ``CALL `p`(json_array)``, one row per record
(``ordinal`` and the create's ``returns``), in order (docs/rel.md, "Batches")."""


def _batch_call(template: Template) -> Call | None:
    spec = template.operations.get(Operation.CREATE)
    if spec is None or BATCH_PROCEDURE not in spec.binding:
        return None
    name = template.object_name(
        spec.binding[BATCH_PROCEDURE], key=f"operations.create.{BATCH_PROCEDURE}"
    )
    return Call(
        kind="procedure", name=name, sql=f"CALL {_quote(name)}(%s)", params=("records",), arity=1
    )
