"""prepare(): REL bindings are checked and compiled to fixed SQL before any request."""

from __future__ import annotations

import attrs
import pytest

from beds.envelopes import Operation
from beds.errors import StoreUnavailable, TemplateError
from beds.namaste import CallContext, NamasteCore, StoreSettings
from beds.templates import QuerySpec, Template, parse_template
from beds_rel.adapter import RelAdapter
from beds_rel.bindings import plan_template

HEAD = """
name = "spx_thing"
store = "rel"
tla = "spx"
key = ["id"]
[fields.id]
type = "int"
generated = true
[fields.name]
type = "str"
"""


def template(extra: str) -> Template:
    return parse_template(HEAD + extra, source="test.toml")


POSTS = """
name = "spx_post"
store = "rel"
tla = "spx"
key = ["id"]
[fields.id]
type = "int"
generated = true
[fields.author]
type = "str"
[fields.body]
type = "str"
[fields.created_at]
type = "datetime"
generated = true
[operations.create]
params = ["author", "body"]
returns = ["id", "created_at"]
procedure = "spx_create"
[operations.update]
params = ["id", "body"]
procedure = "spx_update"
[operations.delete]
params = ["id"]
procedure = "spx_delete"
[queries.by_id]
params = ["id"]
view = "spx_posts_v"
[queries.by_author]
params = ["author"]
procedure = "spx_by_author"
[queries.count_by_author]
params = ["author"]
function = "spx_count"
returns = "post_count"
"""


def posts() -> Template:
    return parse_template(POSTS, source="posts.toml")


def adapter() -> RelAdapter:
    return RelAdapter.from_settings(
        StoreSettings(store="rel", options={"url": "mysql://root@127.0.0.1:1/none"})
    )


def test_adapter_is_a_namaste_core() -> None:
    assert isinstance(adapter(), NamasteCore)
    assert adapter().store == "rel"


def test_bindings_compile_to_bound_sql() -> None:
    plan = plan_template(posts())
    assert {op: call.sql for op, call in plan.writes.items()} == {
        Operation.CREATE: "CALL `spx_create`(%s, %s)",
        Operation.UPDATE: "CALL `spx_update`(%s, %s)",
        Operation.DELETE: "CALL `spx_delete`(%s)",
    }
    assert {name: call.sql for name, call in plan.queries.items()} == {
        "by_id": "SELECT `id`, `author`, `body`, `created_at` FROM `spx_posts_v`"
        " WHERE `id` <=> %s LIMIT %s",
        "by_author": "CALL `spx_by_author`(%s, %s)",
        "count_by_author": "SELECT `spx_count`(%s) AS `post_count`",
    }
    assert plan.queries["by_author"].arity == 2
    assert plan.writes[Operation.CREATE].params == ("author", "body")
    assert plan.queries["by_id"].columns == ("id", "author", "body", "created_at")


def test_prepare_accepts_a_valid_template() -> None:
    adapter().prepare(posts())


def test_view_without_params_has_no_where() -> None:
    plan = plan_template(template('[queries.all]\nparams = []\nview = "spx_v"\n'))
    assert plan.queries["all"].sql == "SELECT `id`, `name` FROM `spx_v` LIMIT %s"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            '[operations.create]\nparams = ["name"]\nprocedure = "spx_c"\nview = "spx_v"\n',
            "operations.create.view is not a REL binding (procedure)",
        ),
        (
            '[operations.create]\nparams = ["name"]\n',
            "operations.create must name its stored procedure",
        ),
        (
            '[operations.create]\nparams = ["name"]\nprocedure = "other_create"\n',
            "operations.create.procedure 'other_create' must start with the template's TLA",
        ),
        (
            '[operations.create]\nparams = ["name"]\nprocedure = "spx_c; DROP TABLE x"\n',
            "operations.create.procedure must be an identifier",
        ),
        (
            '[queries.q]\nparams = ["name"]\nview = "spx_v"\nprocedure = "spx_p"\n',
            "queries.q must bind exactly one of procedure, view or function",
        ),
        ('[queries.q]\nparams = ["name"]\n', "queries.q must bind exactly one of"),
        (
            '[queries.q]\nparams = ["name"]\nview = "spx_v"\nfilter = "1=1"\n',
            "queries.q.filter is not a REL binding",
        ),
        (
            '[queries.q]\nparams = ["name"]\nview = "posts_v"\n',
            "queries.q.view 'posts_v' must start with the template's TLA prefix 'spx_'",
        ),
        (
            '[queries.q]\nparams = ["name"]\nfunction = "spx_f"\n',
            "queries.q binds a function, so it must name its result column",
        ),
        (
            '[queries.q]\nparams = ["name"]\nfunction = "spx_f"\nreturns = "n`"\n',
            "queries.q.returns must be a column name",
        ),
        (
            '[queries.q]\nparams = ["name"]\nview = "spx_v"\nreturns = "n"\n',
            "queries.q.returns is only for function queries",
        ),
        ('[rel]\ntable = "spx_t"\n', "rel.table is not a REL template option"),
    ],
)
def test_prepare_rejects_bad_bindings(extra: str, message: str) -> None:
    with pytest.raises(TemplateError, match=r"^template 'spx_thing': ") as info:
        adapter().prepare(template(extra))
    assert message in str(info.value)


def test_view_query_params_must_be_fields() -> None:
    base = template('[queries.q]\nparams = ["name"]\nview = "spx_v"\n')
    broken = attrs.evolve(
        base,
        queries={"q": QuerySpec(name="q", params=("nope",), binding={"view": "spx_v"})},
    )
    with pytest.raises(TemplateError) as info:
        adapter().prepare(broken)
    assert "queries.q.params names 'nope', which is not a field" in str(info.value)


async def test_calls_before_start_are_store_unavailable() -> None:
    rel = adapter()
    with pytest.raises(StoreUnavailable, match="not started"):
        await rel.create(posts(), {"author": "a", "body": "b"}, CallContext(event_id="e"))
    with pytest.raises(StoreUnavailable, match="not started"):
        await rel.verify(posts())
    await rel.aclose()


PAGED = """
[fields.rank]
type = "int"
[fields.version]
type = "int"
generated = true
[queries.by_id]
params = ["id"]
view = "spx_v"
[queries.ranked]
params = ["least", "names"]
order_by = ["-rank", "id"]
view = "spx_v"
[queries.ranked.where]
least = { field = "rank", op = "gte" }
names = { field = "name", op = "in" }
"""


def test_a_view_query_filters_orders_and_pages_with_bound_values() -> None:
    call = plan_template(template(PAGED)).queries["ranked"]
    head = "SELECT `id`, `name`, `rank`, `version` FROM `spx_v`"
    assert (
        call.sql
        == f"{head} WHERE `rank` >= %s AND `name` IN (%s) ORDER BY `rank` DESC, `id` LIMIT %s"
    )
    assert call.select is not None
    sql, args = call.select.statement({"least": 2, "names": ["a", "b", "c"]}, None, 11)
    assert sql == (
        f"{head} WHERE `rank` >= %s AND `name` IN (%s, %s, %s) ORDER BY `rank` DESC, `id` LIMIT %s"
    )
    assert args == [2, "a", "b", "c", 11]
    sql, args = call.select.statement({"least": 2, "names": ["a"]}, (5, 40), 3)
    assert sql == (
        f"{head} WHERE `rank` >= %s AND `name` IN (%s)"
        " AND ((`rank` < %s) OR (`rank` = %s AND `id` > %s))"
        " ORDER BY `rank` DESC, `id` LIMIT %s"
    )
    assert args == [2, "a", 5, 5, 40, 3]
    assert call.referenced == ("id", "name", "rank", "version")


def test_a_keyset_in_one_direction_is_expanded_too() -> None:
    extra = '[queries.newest]\nparams = []\norder_by = ["-rank", "-id"]\nview = "spx_v"\n'
    call = plan_template(template('[fields.rank]\ntype = "int"\n' + extra)).queries["newest"]
    assert call.select is not None
    sql, args = call.select.statement({}, (5, 40), 3)
    assert sql == (
        "SELECT `id`, `name`, `rank` FROM `spx_v`"
        " WHERE ((`rank` < %s) OR (`rank` = %s AND `id` < %s))"
        " ORDER BY `rank` DESC, `id` DESC LIMIT %s"
    )
    assert args == [5, 5, 40, 3]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            '[queries.q]\nparams = ["name"]\norder_by = ["id"]\nprocedure = "spx_p"\n',
            "queries.q.order_by needs a view: declare a view to page/filter; a procedure pages "
            "itself",
        ),
        (
            '[queries.q]\nparams = ["n"]\nprocedure = "spx_p"\n'
            '[queries.q.where]\nn = { field = "name", op = "in" }\n',
            "queries.q.where needs a view: declare a view to page/filter",
        ),
        (
            '[queries.q]\nparams = ["n"]\nfunction = "spx_f"\nreturns = "c"\n'
            '[queries.q.where]\nn = { field = "id", op = "gt" }\n',
            "queries.q.where needs a view",
        ),
        (
            '[queries.q]\nparams = []\norder_by = ["id"]\nview = "spx_v"\ncolumns = ["name"]\n',
            "queries.q.columns must include 'id' (order_by)",
        ),
    ],
)
def test_only_views_filter_and_page(extra: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        adapter().prepare(template(extra))
    assert message in str(info.value)


LOCKED = """
[fields.version]
type = "int"
generated = true
[capabilities]
locking = true
journal = true
[operations.create]
params = ["name"]
returns = ["id"]
procedure = "spx_c"
[operations.update]
params = ["id", "version", "name"]
procedure = "spx_u"
"""


def test_locking_and_journal_read_the_record_through_a_view_or_procedure_key_query() -> None:
    by_id = '[queries.by_id]\nparams = ["id"]\nview = "spx_v"\n'
    assert plan_template(template(LOCKED + by_id)).key_query == "by_id"
    by_proc = '[queries.one]\nparams = ["id"]\nprocedure = "spx_one"\n'
    assert plan_template(template(LOCKED + by_proc)).key_query == "one"
    function = '[queries.n]\nparams = ["id"]\nfunction = "spx_n"\nreturns = "n"\n'
    with pytest.raises(TemplateError) as info:
        plan_template(template(LOCKED + function))
    assert "capabilities.locking needs a view or procedure query whose params are exactly" in (
        str(info.value)
    )
    narrow = '[queries.by_id]\nparams = ["id"]\nview = "spx_v"\ncolumns = ["id", "name"]\n'
    with pytest.raises(TemplateError) as info:
        plan_template(template(LOCKED + narrow))
    assert "queries.by_id.columns must include 'version'" in str(info.value)


def test_the_adapter_offers_every_feature() -> None:
    from beds.namaste import FEATURES

    assert adapter().features == frozenset(FEATURES)


def test_a_key_view_query_reads_many_keys_in_one_select() -> None:
    select = plan_template(posts()).queries["by_id"].select
    assert select is not None
    many = select.keyed_in("id")
    assert many is not None
    sql, args = many.statement({"id": [3, 1, 2]}, None, None)
    assert sql.endswith(" FROM `spx_posts_v` WHERE `id` IN (%s, %s, %s)")
    assert args == [3, 1, 2]
    assert select.keyed_in("author") is None  # not the query's condition
