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
        Operation.CREATE: "CALL `spp_create`(%s, %s, %s)",
        Operation.UPDATE: "CALL `spp_update`(%s, %s)",
        Operation.DELETE: "CALL `spp_delete`(%s)",
    }
    post = (
        "SELECT `id`, `author`, `body`, `parent_id`, `like_count`, `reply_count`, `created_at`,"
        " `updated_at`"
    )
    home = (
        "SELECT `id`, `author`, `body`, `parent_id`, `like_count`, `reply_count`, `liked_by_me`,"
        " `created_at`, `updated_at`"
    )
    assert {name: call.sql for name, call in plan.queries.items()} == {
        "by_id": f"{post} FROM `spp_posts_v` WHERE `id` <=> %s LIMIT %s",
        "by_author": f"{post} FROM `spp_posts_v` WHERE `author` <=> %s ORDER BY `id` DESC LIMIT %s",
        "mine": "CALL `spp_by_author`(%s, %s)",
        "count_by_author": "SELECT `spp_count_by_author`(%s) AS `post_count`",
        "recent": f"{post} FROM `spp_posts_v` ORDER BY `id` DESC LIMIT %s",
        "replies": f"{post} FROM `spp_posts_v` WHERE `parent_id` <=> %s ORDER BY `id` LIMIT %s",
        "home": f"{home} FROM `spp_home_v` WHERE `viewer` <=> %s ORDER BY `id` DESC LIMIT %s",
        "by_hashtag": f"{post} FROM `spp_tagged_v` WHERE `tag` <=> %s ORDER BY `id` DESC LIMIT %s",
        "author_stats": "CALL `spp_author_stats`(%s, %s, @beds_v1)",
    }
    recent = plan.queries["recent"].select
    assert recent is not None
    assert recent.statement({}, (40,), 11) == (
        f"{post} FROM `spp_posts_v` WHERE ((`id` < %s)) ORDER BY `id` DESC LIMIT %s",
        [40, 11],
    )
    assert spew_post.capabilities.live
    assert spew_post.queries["home"].principal == "viewer"


def test_likes_and_follows_are_idempotent_procedures_bound_to_the_caller() -> None:
    templates = _registry().templates
    like, follow = templates["spew_like"], templates["spew_follow"]
    assert like.key == ("liker", "post_id")
    assert follow.key == ("follower", "followee")
    for template, who in ((like, "liker"), (follow, "follower")):
        assert template.capabilities.live
        assert {op: spec.principal for op, spec in template.operations.items()} == {
            Operation.CREATE: who,
            Operation.DELETE: who,
        }
    like_plan, follow_plan = plan_template(like), plan_template(follow)
    assert {op: call.sql for op, call in like_plan.writes.items()} == {
        Operation.CREATE: "CALL `spl_create`(%s, %s)",
        Operation.DELETE: "CALL `spl_delete`(%s, %s)",
    }
    assert {name: call.sql for name, call in follow_plan.queries.items()} == {
        "following": "SELECT `follower`, `followee`, `created_at` FROM `sfl_follows_v`"
        " WHERE `follower` <=> %s ORDER BY `followee`, `follower` LIMIT %s",
        "followers": "SELECT `follower`, `followee`, `created_at` FROM `sfl_follows_v`"
        " WHERE `followee` <=> %s ORDER BY `follower`, `followee` LIMIT %s",
        "follower_count": "SELECT `sfl_follower_count`(%s) AS `follower_count`",
        "following_count": "SELECT `sfl_following_count`(%s) AS `following_count`",
    }


def test_the_social_schema_files_are_new_migrations_in_order() -> None:
    files = {schema.name.rsplit("/", 1)[1]: schema for schema in _registry().schema["rel"]}
    assert list(files)[-6:] == [
        "007_spew_follow.sql",
        "008_spew_like.sql",
        "009_spew_post_threads.sql",
        "010_spew_post_batch.sql",
        "011_spew_home_join_order.sql",  # the home timeline reads the viewer's authors first
        "012_spew_home_author_index.sql",  # ... through their index, whatever the statistics
    ]
    threads = [s.text for s in split_statements(files["009_spew_post_threads.sql"].text)]
    objects = [
        re.match(r"CREATE (?:OR REPLACE )?(\w+)(?: IF NOT EXISTS)? (\w+)", t) for t in threads
    ]
    assert [m.groups() for m in objects if m] == [
        ("INDEX", "spp_posts_parent"),
        ("TABLE", "spp_hashtags"),
        ("VIEW", "spp_posts_v"),
        ("VIEW", "spp_tagged_v"),
        ("VIEW", "spp_home_v"),
        ("PROCEDURE", "spp_tag"),
        ("PROCEDURE", "spp_create"),
        ("PROCEDURE", "spp_update"),
        ("PROCEDURE", "spp_delete"),
    ]
    # Each refusal is a SIGNAL of class 23, which beds-rel answers as BEDS-409.
    for name, signals in (
        ("007_spew_follow.sql", 1),
        ("008_spew_like.sql", 1),
        ("009_spew_post_threads.sql", 1),
    ):
        assert files[name].text.count("SIGNAL SQLSTATE '23000'") == signals


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
