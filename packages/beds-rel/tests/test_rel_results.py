"""OUT/INOUT parameters, result sets by name, and values typed by the template (no database)."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beds.envelopes import Operation
from beds.errors import StoreError, TemplateError
from beds.templates import Template, parse_template
from beds_rel.bindings import Call, plan_template
from beds_rel.statements import run_call, typed, typed_record
from beds_rel.verify import _mode_problem

HEAD = """
name = "spx_post"
store = "rel"
tla = "spx"
key = ["id"]
[fields.id]
type = "int"
generated = true
[fields.author]
type = "str"
[fields.budget]
type = "decimal"
[fields.meta]
type = "json"
required = false
nullable = true
[fields.active]
type = "bool"
[fields.created_at]
type = "datetime"
generated = true
"""

STATS = """
[queries.stats]
params = ["author", "budget"]
procedure = "spx_stats"
inout = ["budget"]
out = ["total", "first_at"]
result_sets = ["posts", "days"]

[operations.create]
params = ["author", "budget", "meta", "active"]
returns = ["id", "created_at"]
procedure = "spx_create"
out = ["id"]
"""


def template(extra: str, head: str = HEAD) -> Template:
    return parse_template(head + extra, source="post.toml")


def refused(extra: str) -> str:
    with pytest.raises(TemplateError) as info:
        plan_template(template(extra))
    return str(info.value)


# -- declarations compile to fixed SQL -----------------------------------------------------------


def test_a_query_with_out_inout_and_result_sets_answers_one_record() -> None:
    call = plan_template(template(STATS)).queries["stats"]
    assert call.sql == "CALL `spx_stats`(%s, @beds_v1, %s, @beds_v2, @beds_v3)"
    assert call.assign == "SET @beds_v1 = %s"
    assert call.read == "SELECT @beds_v1 AS `budget`, @beds_v2 AS `total`, @beds_v3 AS `first_at`"
    assert (call.params, call.inout, call.inout_at) == (("author", "budget"), ("budget",), (1,))
    assert call.out == ("total", "first_at")
    assert call.variables == ("budget", "total", "first_at")
    assert call.result_sets == ("posts", "days")
    assert call.one_record
    # Params, the limit, the OUT parameters: verify compares the arity and the modes.
    assert call.arity == 5
    assert call.modes == ("IN", "INOUT", "IN", "OUT", "OUT")


def test_result_sets_alone_need_no_session_variables() -> None:
    extra = '[queries.q]\nparams = ["author"]\nprocedure = "spx_q"\nresult_sets = ["a", "b"]\n'
    call = plan_template(template(extra)).queries["q"]
    assert call.sql == "CALL `spx_q`(%s, %s)"
    assert (call.assign, call.read, call.one_record, call.arity) == (None, None, True, 2)


def test_a_write_with_an_out_id() -> None:
    call = plan_template(template(STATS)).writes[Operation.CREATE]
    assert call.sql == "CALL `spx_create`(%s, %s, %s, %s, @beds_v1)"
    assert (call.assign, call.read) == (None, "SELECT @beds_v1 AS `id`")
    assert (call.arity, call.modes) == (5, ("IN", "IN", "IN", "IN", "OUT"))
    assert not call.one_record  # a write answers its first row, with the OUT values added
    assert call.json_at == frozenset({2})


def test_without_the_new_keys_nothing_changes() -> None:
    extra = (
        '[queries.by_author]\nparams = ["author"]\nprocedure = "spx_by_author"\n'
        '[operations.delete]\nparams = ["id"]\nprocedure = "spx_delete"\n'
    )
    plan = plan_template(template(extra))
    query, delete = plan.queries["by_author"], plan.writes[Operation.DELETE]
    assert (query.sql, query.arity, query.one_record) == ("CALL `spx_by_author`(%s, %s)", 2, False)
    assert (query.read, query.assign, query.result_sets) == (None, None, ())
    assert (delete.sql, delete.modes) == ("CALL `spx_delete`(%s)", ("IN",))


def test_a_function_binds_json_params_as_text_too() -> None:
    extra = '[queries.n]\nparams = ["meta"]\nfunction = "spx_n"\nreturns = "n"\n'
    call = plan_template(template(extra)).queries["n"]
    assert (call.json_at, call.modes) == (frozenset({0}), ())


def test_a_one_record_query_is_never_the_key_query() -> None:
    caps = "[capabilities]\njournal = true\n"
    caps += '[operations.delete]\nparams = ["id"]\nprocedure = "spx_d"\n'
    stats = '[queries.one]\nparams = ["id"]\nprocedure = "spx_one"\nresult_sets = ["a"]\n'
    by_id = '[queries.by_id]\nparams = ["id"]\nview = "spx_v"\n'
    assert plan_template(template(caps + by_id + stats)).key_query == "by_id"
    message = refused(caps + stats + by_id)
    assert (
        "post.toml: queries.one answers one record (out, inout or result_sets) but is the first "
        "query whose params are exactly the key, which the journal read records through: declare "
        "a plain key query before it" in message
    )
    # Where nothing reads by key, such a query is just a query.
    assert plan_template(template(stats)).queries["one"].one_record


# -- bad declarations are refused, naming the file and the key -----------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            '[queries.q]\nparams = ["author"]\nview = "spx_v"\nout = ["total"]\n',
            "post.toml: queries.q.out is only for procedure queries, not a view",
        ),
        (
            '[queries.q]\nparams = ["author"]\nfunction = "spx_f"\nreturns = "n"\n'
            'result_sets = ["a"]\n',
            "post.toml: queries.q.result_sets is only for procedure queries, not a function",
        ),
        (
            '[queries.q]\nparams = ["author"]\nfunction = "spx_f"\nreturns = "n"\n'
            'inout = ["author"]\n',
            "post.toml: queries.q.inout is only for procedure queries, not a function",
        ),
        (
            '[queries.q]\nparams = ["author"]\nprocedure = "spx_p"\nout = ["total", "total"]\n',
            "post.toml: queries.q.out names 'total' twice",
        ),
        (
            '[queries.q]\nparams = ["author"]\nprocedure = "spx_p"\n'
            'result_sets = ["a", "b", "a"]\n',
            "post.toml: queries.q.result_sets names 'a' twice",
        ),
        (
            '[queries.q]\nparams = ["author"]\nprocedure = "spx_p"\nout = ["author"]\n',
            "post.toml: queries.q.out names 'author', which is a param (declare it in inout to "
            "pass it and read it back)",
        ),
        (
            '[queries.q]\nparams = ["author"]\nprocedure = "spx_p"\ninout = ["budget"]\n',
            "post.toml: queries.q.inout names 'budget', which is not a param",
        ),
        (
            '[queries.q]\nparams = ["author"]\nprocedure = "spx_p"\nout = ["n"]\n'
            'result_sets = ["n"]\n',
            "post.toml: queries.q.result_sets names 'n', which out names too (each is a key of "
            "the answer)",
        ),
        (
            '[queries.q]\nparams = ["author"]\nprocedure = "spx_p"\ninout = ["author"]\n'
            'result_sets = ["author"]\n',
            "post.toml: queries.q.result_sets names 'author', which inout names too",
        ),
        (
            '[queries.q]\nparams = ["author"]\norder_by = ["id"]\nprocedure = "spx_p"\n'
            'result_sets = ["a"]\n',
            "post.toml: queries.q.order_by cannot be declared with result_sets: such a query "
            "answers one record, which is neither filtered nor paged",
        ),
        (
            '[queries.q]\nparams = ["a"]\nprocedure = "spx_p"\nout = ["n"]\n'
            '[queries.q.where]\na = { field = "author", op = "eq" }\n',
            "post.toml: queries.q.where cannot be declared with out",
        ),
        (
            '[queries.q]\nparams = ["author"]\nprocedure = "spx_p"\nout = "total"\n',
            "post.toml: queries.q.out must be a list of names",
        ),
        (
            '[queries.q]\nparams = ["author"]\nprocedure = "spx_p"\nout = ["n`; DROP"]\n',
            "post.toml: queries.q.out must be a column name",
        ),
        (
            '[queries.q]\nparams = ["author"]\nprocedure = "spx_p"\nresult_sets = [1]\n',
            "post.toml: queries.q.result_sets must be a column name",
        ),
        (
            '[operations.create]\nparams = ["author"]\nprocedure = "spx_c"\nresult_sets = ["a"]\n',
            "post.toml: operations.create.result_sets is only for queries: a write answers its "
            "first row (with its out and inout values)",
        ),
        (
            '[operations.create]\nparams = ["author"]\nprocedure = "spx_c"\nout = ["author"]\n',
            "post.toml: operations.create.out names 'author', which is a param",
        ),
        (
            '[operations.create]\nparams = ["author"]\nprocedure = "spx_c"\nout = ["id", "id"]\n',
            "post.toml: operations.create.out names 'id' twice",
        ),
        (
            '[operations.create]\nparams = ["author"]\nprocedure = "spx_c"\ninout = ["id"]\n',
            "post.toml: operations.create.inout names 'id', which is not a param",
        ),
        (
            '[queries.q]\nparams = ["meta"]\nview = "spx_v"\n',
            "post.toml: queries.q.params compares json field 'meta': a view query cannot compare "
            "JSON values (bind a procedure to take one as a param)",
        ),
        (
            '[queries.q]\nparams = ["m"]\nview = "spx_v"\n'
            '[queries.q.where]\nm = { field = "meta", op = "in" }\n',
            "post.toml: queries.q.where.m compares json field 'meta'",
        ),
    ],
)
def test_bad_declarations_are_refused(extra: str, message: str) -> None:
    assert message in refused(extra)


# -- run_call: what a procedure answers, against a scripted connection --------------------------


class Cursor:
    """Plays the result sets one statement of :class:`Connection`'s script returns."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.results: list[list[dict[str, Any]] | None] = []
        self.description: Any = None

    async def execute(self, sql: str, args: tuple[Any, ...]) -> None:
        self.conn.sent.append((sql, args))
        self.results = list(self.conn.script.pop(0))
        self._next()

    def _next(self) -> bool:
        if not self.results:
            return False
        self.rows = self.results.pop(0)
        self.description = None if self.rows is None else [("column",)]
        return True

    async def fetchall(self) -> list[dict[str, Any]]:
        return list(self.rows or [])

    async def nextset(self) -> bool:
        return self._next()

    async def close(self) -> None:
        pass


class Connection:
    """A connection whose statements answer from ``script`` (each: its results, ``None`` for a
    status without columns), and that records what was sent."""

    def __init__(self, *script: list[list[dict[str, Any]] | None]) -> None:
        self.script = list(script)
        self.sent: list[tuple[str, tuple[Any, ...]]] = []

    def cursor(self, _kind: object = None) -> Cursor:
        return Cursor(self)


async def test_a_query_reads_its_sets_and_variables_on_one_connection() -> None:
    call = plan_template(template(STATS)).queries["stats"]
    posts, days = [{"id": 1}, {"id": 2}], [{"day": "x", "n": 2}]
    conn = Connection(
        [None],  # SET
        [posts, days, None],  # CALL: two sets, then its status
        [[{"budget": Decimal("9.50"), "total": 2, "first_at": "2026-01-02 03:04:05"}]],
    )
    rows = await run_call(conn, call, ["ann", Decimal("12.50"), 10])  # type: ignore[arg-type]
    assert conn.sent == [
        ("SET @beds_v1 = %s", (Decimal("12.50"),)),
        ("CALL `spx_stats`(%s, @beds_v1, %s, @beds_v2, @beds_v3)", ("ann", 10)),
        (call.read, ()),
    ]
    assert rows == [
        {
            "posts": posts,
            "days": days,
            "budget": Decimal("9.50"),
            "total": 2,
            "first_at": "2026-01-02 03:04:05",
        }
    ]


async def test_a_query_with_other_result_sets_than_declared_is_a_store_error() -> None:
    call = plan_template(template(STATS)).queries["stats"]
    conn = Connection([None], [[{"id": 1}], None], [[{"budget": 1, "total": 1, "first_at": None}]])
    with pytest.raises(StoreError) as info:
        await run_call(conn, call, ["ann", 1, 10])  # type: ignore[arg-type]
    assert info.value.details == (
        "procedure spx_stats: returned 1 result sets, the template declares 2 (posts, days)",
    )


@pytest.mark.parametrize(
    ("results", "answer"),
    [
        ([None], [{"id": 7}]),  # no result set: one row of the OUT values
        ([[{"id": None, "created_at": "t"}], None], [{"id": 7, "created_at": "t"}]),  # OUT wins
        ([[], None], []),  # an empty set stays empty (an update's NotFound)
        ([[{"x": 1}, {"x": 2}], [{"y": 3}], None], [{"x": 1, "id": 7}, {"x": 2}]),
    ],
)
async def test_a_write_adds_its_out_values_to_its_first_row(
    results: list[list[dict[str, Any]] | None], answer: list[dict[str, Any]]
) -> None:
    call = plan_template(template(STATS)).writes[Operation.CREATE]
    conn = Connection(results, [[{"id": 7}]])
    meta = {"tags": ["é", 1], "n": None}
    rows = await run_call(conn, call, ["ann", Decimal("1.10"), meta, True])  # type: ignore[arg-type]
    assert rows == answer
    # The json field goes as compact text; the decimal as a Decimal (bound exactly).
    assert conn.sent[0] == (call.sql, ("ann", Decimal("1.10"), '{"tags":["é",1],"n":null}', True))


async def test_a_call_without_the_new_keys_is_one_statement() -> None:
    call = Call(kind="procedure", name="spx_p", sql="CALL `spx_p`(%s)", params=("a",), arity=1)
    conn = Connection([[{"a": 1}], [{"b": 2}], None])
    assert await run_call(conn, call, [{"not": "json"}]) == [{"a": 1}]  # type: ignore[arg-type]
    assert len(conn.sent) == 1


# -- typed: by the template's field types, in every result set and OUT value --------------------


def test_values_are_typed_by_their_fields() -> None:
    spec = template("")
    row = {
        "active": 1,
        "budget": 12,
        "meta": '{"a":[1,2.5,"x"],"b":null}',
        "created_at": "2026-01-02 03:04:05.000006",
        "author": "1",
        "other": 1,
    }
    assert typed(spec, row) == {
        "active": True,
        "budget": Decimal(12),
        "meta": {"a": [1, 2.5, "x"], "b": None},
        "created_at": dt.datetime(2026, 1, 2, 3, 4, 5, 6),
        "author": "1",
        "other": 1,
    }


@pytest.mark.parametrize(
    ("budget", "exact"),
    [
        (Decimal("12.50"), Decimal("12.50")),
        (0.1, Decimal("0.1")),  # a float's shortest text, not 0.1000000000000000055…
        ("3.10", Decimal("3.10")),
        (7, Decimal(7)),
        ("not a number", "not a number"),
        (True, True),
    ],
)
def test_a_decimal_field_reads_exactly(budget: object, exact: object) -> None:
    assert typed(template(""), {"budget": budget})["budget"] == exact


def test_a_json_column_may_be_bytes_and_must_be_json() -> None:
    spec = template("")
    assert typed(spec, {"meta": b'"text"'}) == {"meta": "text"}
    assert typed(spec, {"meta": None, "active": None}) == {"meta": None, "active": None}
    with pytest.raises(StoreError) as info:
        typed(spec, {"meta": "{not json"})
    assert info.value.details == ("column meta",)


def test_a_one_record_answer_is_typed_throughout_and_each_set_limited() -> None:
    call = plan_template(template(STATS)).queries["stats"]
    record = {
        "posts": [{"active": 1, "meta": "[1]"}, {"active": 0}, {"active": 1}],
        "days": [{"budget": 1}],
        "budget": 2,
        "total": 3,
        "first_at": "2026-01-02 03:04:05",
    }
    assert typed_record(template(""), call, record, 2) == {
        "posts": [{"active": True, "meta": [1]}, {"active": False}],
        "days": [{"budget": Decimal(1)}],
        "budget": Decimal(2),
        "total": 3,
        "first_at": "2026-01-02 03:04:05",  # not a field: as the database answered it
    }


# -- verify: the parameter modes ----------------------------------------------------------------


def test_verify_names_a_parameter_in_another_mode() -> None:
    call = plan_template(template(STATS)).queries["stats"]
    assert _mode_problem(call, "IN,INOUT,IN,OUT,OUT") is None
    assert _mode_problem(call, "IN,IN,IN,OUT,OUT") == (
        "spx_stats (parameter 2 is IN; the template passes it as INOUT)"
    )
    assert _mode_problem(call, "IN,INOUT,IN,OUT,IN") == (
        "spx_stats (parameter 5 is IN; the template passes it as OUT)"
    )
    plain = Call(kind="procedure", name="beds_x", sql="", params=(), arity=1)
    assert _mode_problem(plain, "OUT") is None  # a call without modes is not compared


def _unconnected() -> Any:
    """An asyncmy connection never connected: binding values is client-side."""
    from asyncmy.connection import Connection as AsyncmyConnection

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # asyncmy's constructor asks for the current loop
    try:
        return AsyncmyConnection(host="127.0.0.1")  # type: ignore[no-untyped-call]
    finally:
        asyncio.set_event_loop(None)
        loop.close()


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.text(max_size=600),
            st.text(alphabet="\\'\"\0\n\r\x1a%ab", min_size=250, max_size=700),
            st.integers(),
            st.none(),
            st.decimals(allow_nan=False, allow_infinity=False),
        ),
        max_size=4,
    ),
    no_backslash_escapes=st.booleans(),
)
def test_long_text_is_bound_exactly_as_asyncmy_binds_it(
    values: list[Any], no_backslash_escapes: bool
) -> None:
    """The JSON argument of a batch is escaped by beds-rel (faster): the same SQL either way."""
    from beds_rel.statements import _statement

    conn = _unconnected()
    conn.server_status = 512 if no_backslash_escapes else 0  # SERVER_STATUS_NO_BACKSLASH_ESCAPES
    sql = "CALL `spx_many`(" + ", ".join("%s" for _ in values) + ")"
    text, args = _statement(conn, sql, values)
    expected = conn.cursor().mogrify(sql, tuple(values))
    assert (text if args is None else conn.cursor().mogrify(text, args)) == expected
    assert (args is None) == any(type(v) is str and len(v) >= 256 for v in values)
