"""The ceilings' hand-written SQL is the SQL the REL adapter runs for the example domain.

The database ceilings, the ideal pipelines and the peers call MariaDB by hand
(``benchmarks/work.py``, ``benchmarks/batch_load.py``) so that no BEDS code runs in them; their
statements must still be the ones BEDS compiles for ``spew_post``, or a ceiling measures less
work than BEDS does (before this test, they read five of the view's eight columns and skipped
its two counting subqueries).
"""

from __future__ import annotations

import pytest

from beds.envelopes import Operation
from beds.registry import TemplateRegistry
from beds_rel.bindings import TemplatePlan, plan_template
from benchmarks import batch_load, work


@pytest.fixture(scope="module")
def spew_post() -> TemplatePlan:
    registry = TemplateRegistry()
    registry.add_package("beds_templates_example")
    return plan_template(registry.templates["spew_post"])


def test_the_pipelines_fetch_is_the_adapters_by_id_query(spew_post: TemplatePlan) -> None:
    by_id = spew_post.queries["by_id"]
    assert by_id.select is not None
    assert by_id.select.statement({"id": 7}, None, 1) == (work.REL_FETCH_SQL, [7, 1])


def test_the_fetch_many_ceiling_selects_what_the_adapters_fetch_many_selects(
    spew_post: TemplatePlan,
) -> None:
    by_id = spew_post.queries["by_id"]
    assert by_id.select is not None
    many = by_id.select.keyed_in("id")
    assert many is not None
    sql, args = many.statement({"id": [3, 4, 5]}, None, None)
    assert (sql, args) == (batch_load.FETCH_MANY_SQL + "(%s, %s, %s)", [3, 4, 5])


def test_the_pipelines_create_is_the_adapters_create_of_a_post_without_parent(
    spew_post: TemplatePlan,
) -> None:
    create = spew_post.writes[Operation.CREATE]
    assert create.params == ("author", "body", "parent_id")
    # The pipeline's posts have no parent: the adapter binds NULL where it writes it.
    assert create.sql.replace("%s)", "NULL)") == work.REL_CREATE_SQL
    assert spew_post.create_many is not None
    assert spew_post.create_many.name == batch_load.BATCH_PROCEDURE
