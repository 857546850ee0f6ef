"""The example domain's REL declarations fit the adapter (no database needed).

These live with the integration tests because they need two packages, beds-rel and
beds-templates-example, while each package's own tests run with that package alone.
"""

from __future__ import annotations

import re

from beds.envelopes import Operation
from beds.registry import TemplateRegistry
from beds_rel import split_statements
from beds_rel.bindings import plan_template


def _registry() -> TemplateRegistry:
    registry = TemplateRegistry()
    registry.add_package("beds_templates_example")
    return registry


def test_spew_post_prepares_and_compiles_to_bound_sql() -> None:
    spew_post = _registry().templates["spew_post"]
    plan = plan_template(spew_post)
    assert {op: call.sql for op, call in plan.writes.items()} == {
        Operation.CREATE: "CALL `spp_create`(%s, %s)",
        Operation.UPDATE: "CALL `spp_update`(%s, %s)",
        Operation.DELETE: "CALL `spp_delete`(%s)",
    }
    assert {name: call.sql for name, call in plan.queries.items()} == {
        "by_id": "SELECT `id`, `author`, `body`, `created_at`, `updated_at` FROM `spp_posts_v`"
        " WHERE `id` <=> %s LIMIT %s",
        "by_author": "CALL `spp_by_author`(%s, %s)",
        "mine": "CALL `spp_by_author`(%s, %s)",
        "count_by_author": "SELECT `spp_count_by_author`(%s) AS `post_count`",
    }


def test_the_spew_post_schema_splits_into_its_objects() -> None:
    [schema] = _registry().schema["rel"]
    statements = [statement.text for statement in split_statements(schema.text)]
    objects = [
        re.match(r"CREATE (?:OR REPLACE )?(\w+)(?: IF NOT EXISTS)? (\w+)", t) for t in statements
    ]
    assert [m.groups() if m else None for m in objects] == [
        ("TABLE", "spp_posts"),
        ("VIEW", "spp_posts_v"),
        ("PROCEDURE", "spp_create"),
        ("PROCEDURE", "spp_update"),
        ("PROCEDURE", "spp_delete"),
        ("PROCEDURE", "spp_by_author"),
        ("FUNCTION", "spp_count_by_author"),
    ]
    assert all(t.endswith("END") for t in statements[2:])
