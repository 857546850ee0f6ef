"""The REL adapter against the real MariaDB: schema, verify, CRUD on spew_post, failures.

Each test builds its own adapter on the session database (``mariadb_url``) and uses authors of
its own, so tests neither clean up after each other nor depend on order.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from beds.errors import (
    Conflict,
    DatabaseObjectMissing,
    NotFound,
    StoreUnavailable,
)
from beds.namaste import CallContext, Query, SchemaFile, StoreSettings
from beds.registry import TemplateRegistry
from beds.templates import Template, parse_template
from beds_rel import RelAdapter

pytestmark = pytest.mark.mariadb

CTX = CallContext(event_id="test.rel.0")


def _spew() -> tuple[Template, list[SchemaFile]]:
    registry = TemplateRegistry()
    registry.add_package("beds_templates_example")
    return registry.templates["spew_post"], registry.schema["rel"]


SPEW_POST, SCHEMA = _spew()


def author() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def make_adapter(url: str, **options: Any) -> RelAdapter:
    return RelAdapter.from_settings(
        StoreSettings(store="rel", options={"url": url, "connect_timeout": 2, **options})
    )


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, "", ""))


@pytest.fixture
async def rel(mariadb_url: str) -> AsyncIterator[RelAdapter]:
    adapter = make_adapter(mariadb_url)
    adapter.prepare(SPEW_POST)
    await adapter.apply_schema(SCHEMA)
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.aclose()


def query(name: str, limit: int | None = None, **params: Any) -> Query:
    spec = SPEW_POST.queries[name]
    return Query(spec=spec, params=params, limit=spec.max_limit if limit is None else limit)


async def test_apply_schema_twice_then_verify(mariadb_url: str) -> None:
    adapter = make_adapter(mariadb_url)
    names = [file.name for file in SCHEMA]
    assert names == [
        "beds_templates_example/schema/rel/001_spew_post.sql",
        "beds_templates_example/schema/rel/002_spew_note.sql",
        "beds_templates_example/schema/rel/003_spew_post_stats.sql",
        "beds_templates_example/schema/rel/004_spew_boost.sql",
        "beds_templates_example/schema/rel/005_spew_stats.sql",
        "beds_templates_example/schema/rel/006_spew_note_retention.sql",
        "beds_templates_example/schema/rel/007_spew_follow.sql",
        "beds_templates_example/schema/rel/008_spew_like.sql",
        "beds_templates_example/schema/rel/009_spew_post_threads.sql",
        "beds_templates_example/schema/rel/010_spew_post_batch.sql",
        "beds_templates_example/schema/rel/011_spew_home_join_order.sql",
        "beds_templates_example/schema/rel/012_spew_home_author_index.sql",
    ]
    # beds-rel's own objects (idempotency keys, journals) come first
    applied = [
        "beds_rel/sql/000_beds_idempotency.sql",
        "beds_rel/sql/001_beds_journal.sql",
        "beds_rel/sql/002_beds_tickets.sql",
        "beds_rel/sql/003_beds_schema_migrations.sql",
        *names,
    ]
    assert await adapter.apply_schema(SCHEMA) == applied
    assert await adapter.apply_schema(SCHEMA) == applied
    await adapter.start()
    try:
        adapter.prepare(SPEW_POST)
        await adapter.verify(SPEW_POST)
    finally:
        await adapter.aclose()
        await adapter.aclose()


GHOST = """
name = "spp_ghost"
store = "rel"
tla = "spp"
key = ["id"]
[fields.id]
type = "int"
generated = true
[fields.author]
type = "str"
[fields.shadow]
type = "str"
[operations.create]
params = ["author"]
returns = ["id"]
procedure = "spp_create"
[operations.update]
params = ["id", "author"]
procedure = "spp_missing"
[queries.by_id]
params = ["id"]
view = "spp_posts_v"
[queries.count]
params = ["author"]
function = "spp_nofn"
returns = "n"
"""


async def test_verify_names_each_missing_or_mismatched_object(rel: RelAdapter) -> None:
    ghost = parse_template(GHOST, source="ghost.toml")
    rel.prepare(ghost)
    with pytest.raises(DatabaseObjectMissing) as info:
        await rel.verify(ghost)
    assert info.value.message == (
        "template 'spp_ghost' uses database objects that are missing or differ"
    )
    assert info.value.details == (
        "spp_create (takes 3 parameters; the template passes 1)",
        "spp_missing",
        "spp_nofn",
        "spp_posts_v.shadow",
    )


async def test_calling_a_missing_procedure_names_it(rel: RelAdapter) -> None:
    ghost = parse_template(GHOST, source="ghost.toml")
    with pytest.raises(DatabaseObjectMissing) as info:
        await rel.update(ghost, {"id": 1, "author": "x"}, CTX)
    assert info.value.details == ("spp_missing",)


async def test_crud_round_trip(rel: RelAdapter) -> None:
    who = author()
    created = await rel.create(SPEW_POST, {"author": who, "body": "first"}, CTX)
    assert set(created) == {"id", "created_at"}
    assert isinstance(created["id"], int)
    assert created["created_at"].endswith("Z")
    created_at = dt.datetime.fromisoformat(created["created_at"])
    assert abs(dt.datetime.now(dt.UTC) - created_at) < dt.timedelta(minutes=5)

    assert await rel.fetch(SPEW_POST, query("by_id", id=created["id"]), CTX) == [
        {
            "id": created["id"],
            "author": who,
            "body": "first",
            "parent_id": None,
            "like_count": 0,
            "reply_count": 0,
            "created_at": created["created_at"],
            "updated_at": None,
        }
    ]

    updated = await rel.update(SPEW_POST, {"id": created["id"], "body": "edited"}, CTX)
    assert updated["id"] == created["id"]
    assert updated["updated_at"] >= created["created_at"]
    [row] = await rel.fetch(SPEW_POST, query("by_id", id=created["id"]), CTX)
    assert (row["body"], row["updated_at"]) == ("edited", updated["updated_at"])

    assert await rel.delete(SPEW_POST, {"id": created["id"]}, CTX) == {"deleted": 1}
    assert await rel.fetch(SPEW_POST, query("by_id", id=created["id"]), CTX) == []
    with pytest.raises(NotFound):
        await rel.delete(SPEW_POST, {"id": created["id"]}, CTX)
    with pytest.raises(NotFound):
        await rel.update(SPEW_POST, {"id": created["id"], "body": "again"}, CTX)


async def test_by_author_is_newest_first_with_limit_and_count(rel: RelAdapter) -> None:
    who, other = author(), author()
    ids = [
        (await rel.create(SPEW_POST, {"author": who, "body": f"post {n}"}, CTX))["id"]
        for n in range(3)
    ]
    await rel.create(SPEW_POST, {"author": other, "body": "not mine"}, CTX)

    rows = await rel.fetch(SPEW_POST, query("by_author", limit=2, author=who), CTX)
    assert [row["id"] for row in rows] == ids[::-1][:2]
    assert {row["author"] for row in rows} == {who}
    everything = await rel.fetch(SPEW_POST, query("by_author", author=who), CTX)
    assert [row["body"] for row in everything] == ["post 2", "post 1", "post 0"]

    count = await rel.fetch(SPEW_POST, query("count_by_author", author=who), CTX)
    assert count == [{"post_count": 3}]
    nobody = await rel.fetch(SPEW_POST, query("count_by_author", author=author()), CTX)
    assert nobody == [{"post_count": 0}]


async def test_280_emoji_body_round_trips(rel: RelAdapter) -> None:
    body = "🐍😀𝄞é" * 70
    assert len(body) == 280
    created = await rel.create(SPEW_POST, {"author": author(), "body": body}, CTX)
    [row] = await rel.fetch(SPEW_POST, query("by_id", id=created["id"]), CTX)
    assert row["body"] == body


async def test_update_and_delete_of_a_missing_id_are_not_found(rel: RelAdapter) -> None:
    with pytest.raises(NotFound, match="no spew_post record has that key"):
        await rel.update(SPEW_POST, {"id": 2**62, "body": "x"}, CTX)
    with pytest.raises(NotFound):
        await rel.delete(SPEW_POST, {"id": 2**62}, CTX)


EXTRA_SCHEMA = SchemaFile(
    name="test/spx.sql",
    text="""
-- Test-only objects: a unique key (Conflict) and a slow procedure (cancellation).
CREATE TABLE IF NOT EXISTS spx_items (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(64) NOT NULL,
    UNIQUE KEY spx_items_name_uq (name)
) DEFAULT CHARSET = utf8mb4;
DELIMITER //
CREATE OR REPLACE PROCEDURE spx_create(IN p_name VARCHAR(64))
BEGIN
    INSERT INTO spx_items (name) VALUES (p_name);
    SELECT id FROM spx_items WHERE id = LAST_INSERT_ID();
END//
CREATE OR REPLACE PROCEDURE spx_slow(IN p_name VARCHAR(64), IN p_limit INT)
BEGIN
    DO SLEEP(1);
    SELECT id, name FROM spx_items WHERE name = p_name LIMIT p_limit;
END//
DELIMITER ;
""",
)

SPX = """
name = "spx_item"
store = "rel"
tla = "spx"
key = ["id"]
[fields.id]
type = "int"
generated = true
[fields.name]
type = "str"
[operations.create]
params = ["name"]
returns = ["id"]
procedure = "spx_create"
[queries.slow]
params = ["name"]
procedure = "spx_slow"
"""


async def test_duplicate_key_is_a_conflict(mariadb_url: str) -> None:
    adapter = make_adapter(mariadb_url)
    await adapter.apply_schema([EXTRA_SCHEMA])
    await adapter.start()
    try:
        spx = parse_template(SPX, source="spx.toml")
        adapter.prepare(spx)
        await adapter.verify(spx)
        name = author()
        await adapter.create(spx, {"name": name}, CTX)
        with pytest.raises(Conflict) as info:
            await adapter.create(spx, {"name": name}, CTX)
        assert info.value.details == (
            f"MariaDB error 1062: Duplicate entry '{name}' for key 'spx_items_name_uq'",
        )
    finally:
        await adapter.aclose()


async def test_a_cancelled_call_does_not_poison_the_pool(mariadb_url: str) -> None:
    adapter = make_adapter(mariadb_url, pool_min=1, pool_max=1)
    await adapter.apply_schema([EXTRA_SCHEMA])
    await adapter.start()
    try:
        spx = parse_template(SPX, source="spx.toml")
        slow = Query(spec=spx.queries["slow"], params={"name": "x"}, limit=1)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(adapter.fetch(spx, slow, CTX), timeout=0.2)
        assert time.monotonic() - started < 0.8, "cancellation waited for the server"
        name = author()
        created = await adapter.create(spx, {"name": name}, CTX)
        assert set(created) == {"id"}
        slow = Query(spec=spx.queries["slow"], params={"name": name}, limit=1)
        assert await adapter.fetch(spx, slow, CTX) == [{"id": created["id"], "name": name}]
    finally:
        await adapter.aclose()


async def test_closed_port_is_store_unavailable() -> None:
    adapter = make_adapter("mysql://root@127.0.0.1:1/nothing")
    with pytest.raises(StoreUnavailable) as info:
        await adapter.start()
    assert info.value.message == "cannot connect to MariaDB"
    assert info.value.details == ("MariaDB error 2003",)
    with pytest.raises(StoreUnavailable):
        await adapter.apply_schema(SCHEMA)
    with pytest.raises(StoreUnavailable):
        await adapter.verify(SPEW_POST)
    await adapter.aclose()


async def test_start_against_a_missing_database_names_it(mariadb_url: str) -> None:
    missing = f"beds_missing_{uuid.uuid4().hex[:8]}"
    adapter = make_adapter(with_database(mariadb_url, missing))
    with pytest.raises(DatabaseObjectMissing) as info:
        await adapter.start()
    assert info.value.message == f"the configured database {missing!r} does not exist"
    assert info.value.details == (missing,)
    await adapter.aclose()


BOOL_SCHEMA = SchemaFile(
    name="test/sbx.sql",
    text="""
-- Test-only objects: a BOOLEAN column (TINYINT(1) in MariaDB) behind a procedure and a view.
CREATE TABLE IF NOT EXISTS sbx_flags (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(64) NOT NULL,
    active BOOLEAN NOT NULL,
    score TINYINT NOT NULL DEFAULT 1
) DEFAULT CHARSET = utf8mb4;
CREATE OR REPLACE VIEW sbx_flags_v AS SELECT id, name, active, score FROM sbx_flags;
DELIMITER //
CREATE OR REPLACE PROCEDURE sbx_create(IN p_name VARCHAR(64), IN p_active BOOLEAN)
BEGIN
    INSERT INTO sbx_flags (name, active) VALUES (p_name, p_active);
    SELECT id, active FROM sbx_flags WHERE id = LAST_INSERT_ID();
END//
DELIMITER ;
""",
)

SBX = """
name = "sbx_flag"
store = "rel"
tla = "sbx"
key = ["id"]
[fields.id]
type = "int"
generated = true
[fields.name]
type = "str"
[fields.active]
type = "bool"
[fields.score]
type = "int"
generated = true
[operations.create]
params = ["name", "active"]
returns = ["id", "active"]
procedure = "sbx_create"
[queries.by_name]
params = ["name"]
view = "sbx_flags_v"
"""


async def test_boolean_fields_come_back_as_json_booleans(mariadb_url: str) -> None:
    adapter = make_adapter(mariadb_url)
    await adapter.apply_schema([BOOL_SCHEMA])
    await adapter.start()
    try:
        sbx = parse_template(SBX, source="sbx.toml")
        adapter.prepare(sbx)
        await adapter.verify(sbx)
        name = author()
        created = await adapter.create(sbx, {"name": name, "active": True}, CTX)
        assert created["active"] is True
        await adapter.create(sbx, {"name": name, "active": False}, CTX)
        spec = sbx.queries["by_name"]
        rows = await adapter.fetch(sbx, Query(spec=spec, params={"name": name}, limit=10), CTX)
        assert sorted(row["active"] for row in rows) == [False, True]
        assert all(row["score"] == 1 and type(row["score"]) is int for row in rows)  # not bool
    finally:
        await adapter.aclose()


async def test_sessions_turn_on_disable_max_seek_where_the_server_has_it(mariadb_url: str) -> None:
    """Keyset pages in the first part of an index stay ranges (beds_rel.adapter, start)."""
    adapter = make_adapter(mariadb_url)
    await adapter.start()
    try:
        async with adapter._connection() as conn, conn.cursor() as cursor:
            try:
                await cursor.execute("SELECT @@optimizer_adjust_secondary_key_costs")
            except Exception:  # a server without the variable: nothing to turn on
                assert not adapter.settings.secondary_key_costs
                return
            (flags,) = await cursor.fetchone()
        assert "disable_max_seek" in flags.split(",")
        assert set(adapter.settings.secondary_key_costs.split(",")) == set(flags.split(","))
    finally:
        await adapter.aclose()
