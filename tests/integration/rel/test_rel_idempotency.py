"""Idempotent writes on the real MariaDB: key, write and result commit together, exactly once.

Each test uses its own keys and authors on the session database, so tests neither clean up after
each other nor depend on order (the session database is dropped at the end).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncmy
import pytest

from beds.envelopes import Operation, Request
from beds.errors import DatabaseObjectMissing, IdempotencyKeyReused, NotFound, WriteInDoubt
from beds.idempotency import fingerprint
from beds.namaste import CallContext, StoreSettings
from beds.registry import TemplateRegistry
from beds.templates import Template
from beds_rel import RelAdapter

pytestmark = pytest.mark.mariadb


def _spew() -> Template:
    registry = TemplateRegistry()
    registry.add_package("beds_templates_example")
    return registry.templates["spew_post"]


SPEW_POST = _spew()
SCHEMA = TemplateRegistry()
SCHEMA.add_package("beds_templates_example")


def make_adapter(url: str, **options: Any) -> RelAdapter:
    adapter = RelAdapter.from_settings(
        StoreSettings(store="rel", options={"url": url, "connect_timeout": 2, **options})
    )
    adapter.prepare(SPEW_POST)
    return adapter


@pytest.fixture
async def rel(mariadb_url: str) -> AsyncIterator[RelAdapter]:
    adapter = make_adapter(mariadb_url, pool_max=30)
    await adapter.apply_schema(SCHEMA.schema["rel"])
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.aclose()


def ctx(
    payload: dict[str, Any],
    key: str | None = None,
    operation: Operation = Operation.CREATE,
    ttl: float = 60.0,
) -> CallContext:
    request = Request(operation=operation, template=SPEW_POST.name, payload=payload)
    return CallContext(
        event_id="test.rel.idem",
        idempotency_key=key or f"k-{uuid.uuid4().hex}",
        fingerprint=fingerprint(request),
        idempotency_ttl=ttl,
    )


def author() -> str:
    return f"i_{uuid.uuid4().hex[:12]}"


async def sql(url: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    parts = urlsplit(url)
    conn = await asyncmy.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        database=parts.path.lstrip("/"),
        autocommit=True,
    )
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(statement, args)
            return list(await cursor.fetchall()) if cursor.description else []
    finally:
        conn.close()


async def posts_by(url: str, who: str) -> int:
    rows = await sql(url, "SELECT COUNT(*) FROM spp_posts WHERE author = %s", who)
    return int(rows[0][0])


async def test_a_repeat_gets_the_first_result_and_writes_nothing(
    rel: RelAdapter, mariadb_url: str
) -> None:
    who = author()
    record = {"author": who, "body": "once"}
    context = ctx(record)
    first = await rel.create(SPEW_POST, record, context)
    again = await rel.create(SPEW_POST, record, context)
    assert again == first
    assert await posts_by(mariadb_url, who) == 1


async def test_concurrent_repeats_of_one_key_write_one_row_and_all_get_its_result(
    rel: RelAdapter, mariadb_url: str
) -> None:
    who = author()
    record = {"author": who, "body": "race"}
    context = ctx(record)
    answers = await asyncio.gather(*(rel.create(SPEW_POST, record, context) for _ in range(20)))
    assert len({answer["id"] for answer in answers}) == 1
    assert await posts_by(mariadb_url, who) == 1


async def test_concurrent_writes_with_different_keys_do_not_deadlock(
    rel: RelAdapter, mariadb_url: str
) -> None:
    who = author()
    record = {"author": who, "body": "many"}
    answers = await asyncio.gather(*(rel.create(SPEW_POST, record, ctx(record)) for _ in range(40)))
    assert len({answer["id"] for answer in answers}) == 40
    assert await posts_by(mariadb_url, who) == 40


async def test_a_key_reused_for_another_request_is_refused(
    rel: RelAdapter, mariadb_url: str
) -> None:
    who = author()
    first = {"author": who, "body": "one"}
    key = f"k-{uuid.uuid4().hex}"
    await rel.create(SPEW_POST, first, ctx(first, key))
    other = {"author": who, "body": "two"}
    with pytest.raises(IdempotencyKeyReused):
        await rel.create(SPEW_POST, other, ctx(other, key))
    assert await posts_by(mariadb_url, who) == 1


async def test_a_failed_write_leaves_no_key_behind(rel: RelAdapter, mariadb_url: str) -> None:
    key = f"k-{uuid.uuid4().hex}"
    missing = {"id": 2**62}
    with pytest.raises(NotFound):
        await rel.delete(SPEW_POST, missing, ctx(missing, key, Operation.DELETE))
    assert await sql(mariadb_url, "SELECT 1 FROM beds_idempotency WHERE idem_key = %s", key) == []
    # and the connection went back to the pool without a transaction left open
    who = author()
    record = {"author": who, "body": "after"}
    await rel.create(SPEW_POST, record, ctx(record))
    assert await posts_by(mariadb_url, who) == 1


async def test_update_and_delete_run_once_per_key(rel: RelAdapter) -> None:
    who = author()
    created = await rel.create(SPEW_POST, {"author": who, "body": "x"}, ctx({}))
    key = {"id": created["id"]}
    deleting = ctx(key, operation=Operation.DELETE)
    assert await rel.delete(SPEW_POST, key, deleting) == {"deleted": 1}
    assert await rel.delete(SPEW_POST, key, deleting) == {"deleted": 1}
    with pytest.raises(NotFound):
        await rel.delete(SPEW_POST, key, ctx(key, operation=Operation.DELETE))


async def test_an_expired_key_runs_the_write_again(rel: RelAdapter, mariadb_url: str) -> None:
    who = author()
    record = {"author": who, "body": "twice"}
    context = ctx(record, ttl=0.05)
    first = await rel.create(SPEW_POST, record, context)
    await asyncio.sleep(0.1)
    second = await rel.create(SPEW_POST, record, context)
    assert first["id"] != second["id"]
    assert await posts_by(mariadb_url, who) == 2
    # The second write's key expires too; purging removes both expired rows of this key.
    await asyncio.sleep(0.1)
    held = "SELECT COUNT(*) FROM beds_idempotency WHERE idem_key = %s"
    assert int((await sql(mariadb_url, held, context.idempotency_key))[0][0]) == 1
    assert await rel.purge_idempotency_keys() >= 1
    assert int((await sql(mariadb_url, held, context.idempotency_key))[0][0]) == 0


async def test_purge_forgets_only_expired_keys(rel: RelAdapter, mariadb_url: str) -> None:
    record = {"author": author(), "body": "p"}
    short, long = ctx(record, ttl=0.01), ctx(record, ttl=60)
    await rel.create(SPEW_POST, record, short)
    await rel.create(SPEW_POST, record, long)
    await asyncio.sleep(0.05)
    assert await rel.purge_idempotency_keys() >= 1
    keys = {
        row[0]
        for row in await sql(
            mariadb_url,
            "SELECT idem_key FROM beds_idempotency WHERE idem_key IN (%s, %s)",
            short.idempotency_key,
            long.idempotency_key,
        )
    }
    assert keys == {long.idempotency_key}


async def test_a_key_without_a_result_is_in_doubt(rel: RelAdapter, mariadb_url: str) -> None:
    # What a write procedure that COMMITs itself, against the contract, would leave.
    record = {"author": author(), "body": "doubt"}
    context = ctx(record)
    await sql(
        mariadb_url,
        "INSERT INTO beds_idempotency (idem_key, fingerprint, expires_at)"
        " VALUES (%s, %s, UTC_TIMESTAMP(6) + INTERVAL 1 MINUTE)",
        context.idempotency_key,
        context.fingerprint,
    )
    with pytest.raises(WriteInDoubt):
        await rel.create(SPEW_POST, record, context)


async def test_verify_names_the_missing_idempotency_objects(mariadb_url: str) -> None:
    database = f"beds_idem_{uuid.uuid4().hex[:8]}"
    url = mariadb_url.rsplit("/", 1)[0] + "/" + database
    without = make_adapter(url, idempotency=False)
    try:
        # only the template's own objects, as a DBA who skipped beds-rel's file would have
        await without.apply_schema(SCHEMA.schema["rel"])
        await without.start()
        await without.verify(SPEW_POST)  # not needed when idempotency is off
        with_keys = make_adapter(url)
        await with_keys.start()
        try:
            with pytest.raises(DatabaseObjectMissing) as caught:
                await with_keys.verify(SPEW_POST)
            assert set(caught.value.objects) == {
                "beds_idempotency_claim",
                "beds_idempotency_start",
                "beds_idempotency_complete",
                "beds_idempotency_purge",
            }
        finally:
            await with_keys.aclose()
    finally:
        await without.aclose()
        await sql(mariadb_url, f"DROP DATABASE IF EXISTS `{database}`")
