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
        "recent": "SELECT `id`, `author`, `body`, `created_at`, `updated_at` FROM `spp_posts_v`"
        " ORDER BY `id` DESC LIMIT %s",
        "author_stats": "CALL `spp_author_stats`(%s, %s, @beds_v1)",
    }
    recent = plan.queries["recent"].select
    assert recent is not None
    assert recent.statement({}, (40,), 11) == (
        "SELECT `id`, `author`, `body`, `created_at`, `updated_at` FROM `spp_posts_v`"
        " WHERE ((`id` < %s)) ORDER BY `id` DESC LIMIT %s",
        [40, 11],
    )


def test_spew_note_prepares_with_locking_journal_and_pages() -> None:
    spew_note = _registry().templates["spew_note"]
    assert spew_note.needs() == {
        "locking",
        "journal",
        "pagination",
        "filters",
        "long_operations",  # its retention sweep
    }
    plan = plan_template(spew_note)
    assert plan.key_query == "by_id"
    assert {op: call.sql for op, call in plan.writes.items()} == {
        Operation.CREATE: "CALL `spn_create`(%s, %s)",
        Operation.UPDATE: "CALL `spn_update`(%s, %s, %s)",
        Operation.DELETE: "CALL `spn_delete`(%s, %s)",
    }
    head = "SELECT `id`, `author`, `body`, `version`, `created_at`, `updated_at` FROM `spn_notes_v`"
    order = " ORDER BY `created_at` DESC, `id` DESC LIMIT %s"
    assert {name: call.sql for name, call in plan.queries.items()} == {
        "by_id": f"{head} WHERE `id` <=> %s LIMIT %s",
        "mine": f"{head} WHERE `author` <=> %s{order}",
        "mine_between": f"{head} WHERE `author` <=> %s AND `created_at` >= %s"
        f" AND `created_at` < %s{order}",
    }


def test_the_spew_post_schema_splits_into_its_objects() -> None:
    schema = _registry().schema["rel"][0]
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


def test_the_spew_note_schema_splits_into_its_objects() -> None:
    schema = _registry().schema["rel"][1]
    assert schema.name.endswith("002_spew_note.sql")
    statements = [statement.text for statement in split_statements(schema.text)]
    objects = [
        re.match(r"CREATE (?:OR REPLACE )?(\w+)(?: IF NOT EXISTS)? (\w+)", t) for t in statements
    ]
    assert [m.groups() if m else None for m in objects] == [
        ("TABLE", "spn_notes"),
        ("VIEW", "spn_notes_v"),
        ("PROCEDURE", "spn_create"),
        ("PROCEDURE", "spn_update"),
        ("PROCEDURE", "spn_delete"),
    ]
    # The locking convention: the version is checked in the write, a stale one signalled.
    assert sum("SQLSTATE '45409'" in t for t in statements) == 2
