"""Retention on the real MariaDB: spew_note's sweep archives the notes older than a year.

The example's ``spew_note`` declares ``retention_days = 365`` and ``[retention] procedure =
"spn_retire"`` (schema/rel/006_spew_note_retention.sql). Each test has a private database with
beds-rel's objects and the example schema, dropped after it; notes are seeded by the DBA with
their ``created_at`` in the past, the sweep's ticket is recorded by the retention scheduler
and run by a :class:`~beds.testing.local.LocalNode`'s warehouse-lane workers, batch by batch:
the old notes are in the archive exactly once and no longer in ``spn_notes``, the others are
kept, and the ticket's result lists the batches. The REL binding of the sweep is checked at
prepare and verify.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import tomlkit

from beds.calgon.retention import RetentionScheduler
from beds.config.model import CalgonSettings
from beds.errors import DatabaseObjectMissing, TemplateError
from beds.namaste import CallContext, StoreSettings
from beds.registry import TemplateRegistry
from beds.templates import Template, parse_template
from beds.testing import TestIdentity, unique_name
from beds.testing.local import LocalNode
from beds_rel import RelAdapter
from tests.integration.nodes import dba_connect_url

pytestmark = pytest.mark.mariadb

EXAMPLE = TemplateRegistry()
EXAMPLE.add_package("beds_templates_example")
SPEW_NOTE = EXAMPLE.templates["spew_note"]
NOW = float(int(time.time()))
BEFORE = dt.datetime.fromtimestamp(NOW, dt.UTC).replace(tzinfo=None) - dt.timedelta(days=365)
"""What the sweep scheduled at ``NOW`` retires: notes created before this (naive UTC)."""
OLD = 2_345
"""Old notes seeded: batches of 1000, 1000 and 345 (spew_note's batch_size is 1000)."""


def make_adapter(url: str) -> RelAdapter:
    adapter = RelAdapter.from_settings(
        StoreSettings(store="rel", options={"url": url, "connect_timeout": 2, "pool_max": 4})
    )
    adapter.prepare(SPEW_NOTE)
    return adapter


async def dba(url: str) -> Any:
    """A connection to the database of ``url``, as its DBA has one (no BEDS between)."""
    return await dba_connect_url(url, autocommit=True)


async def rows(url: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one statement on the database of ``url`` as its DBA; its rows."""
    conn = await dba(url)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(statement, args or None)
            return list(await cursor.fetchall())
    finally:
        conn.close()


@pytest.fixture
def database(mariadb_url: str, mariadb_sql: Callable[[str], None]) -> Iterator[str]:
    """A private database with beds-rel's objects and the example schema."""
    name = unique_name("beds_retention")
    parts = urlsplit(mariadb_url)
    url = urlunsplit((parts.scheme, parts.netloc, "/" + name, "", ""))
    try:
        asyncio.run(make_adapter(url).apply_schema(EXAMPLE.schema["rel"]))
        yield url
    finally:
        mariadb_sql(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
async def rel(database: str) -> AsyncIterator[RelAdapter]:
    adapter = make_adapter(database)
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.aclose()


async def seed(url: str) -> tuple[set[int], set[int]]:
    """Old notes (before ``BEFORE``), and kept ones (at ``BEFORE`` exactly, and recent)."""
    await rows(
        url,
        "INSERT INTO spn_notes (author, body, version, created_at) "
        "SELECT CONCAT('a', MOD(seq, 7)), CONCAT('old ', seq), 1 + MOD(seq, 3), "
        "%s - INTERVAL seq MINUTE FROM seq_1_to_" + str(OLD),
        BEFORE,
    )
    old = {row[0] for row in await rows(url, "SELECT id FROM spn_notes")}
    await rows(
        url,
        "INSERT INTO spn_notes (author, body, created_at) VALUES "
        "('ann', 'the last kept', %s), ('ann', 'yesterday', %s), ('bob', 'today', DEFAULT)",
        BEFORE,
        BEFORE + dt.timedelta(days=364),
    )
    kept = {row[0] for row in await rows(url, "SELECT id FROM spn_notes")} - old
    return old, kept


async def run_sweep(rel: RelAdapter, now: float) -> dict[str, Any]:
    """Record the sweep of ``now``'s interval as the segundo role does, run it, read it."""
    scheduler = RetentionScheduler(
        rel, {"spew_note": SPEW_NOTE}, CalgonSettings(), node="seg1", env="test"
    )
    recorded = await scheduler.schedule(now)
    node = LocalNode([SPEW_NOTE], {"rel": rel}, identity=TestIdentity(env="test"), tickets=rel)
    assert node.warehouse is not None  # the sweeps' lane (beds.calgon.lanes)
    assert await node.warehouse.run_one()
    assert not await node.warehouse.run_one(), "one sweep, one ticket"
    answered = await node.call(
        "spew_note",
        "ticket",
        {"ticket": recorded["spew_note"].ticket_id},
        who="root",
        roles=("admin",),
    )
    assert answered.ok, answered.error
    assert isinstance(answered.data, dict)
    return answered.data


async def test_a_sweep_archives_every_old_note_once_in_batches_and_keeps_the_rest(
    rel: RelAdapter, database: str
) -> None:
    old, kept = await seed(database)
    assert len(old) == OLD
    await rel.verify(SPEW_NOTE)

    swept = await run_sweep(rel, NOW)
    assert (swept["state"], swept["steps"], swept["steps_done"]) == ("succeeded", 0, 4)
    assert swept["params"]["limit"] == 1000
    assert dt.datetime.fromisoformat(swept["params"]["before"]) == BEFORE.replace(tzinfo=dt.UTC)
    assert swept["result"] == [{"retired": 1000}, {"retired": 1000}, {"retired": 345}]

    hot = {row[0] for row in await rows(database, "SELECT id FROM spn_notes")}
    assert hot == kept
    archived = await rows(database, "SELECT id, COUNT(*) FROM spn_notes_archive GROUP BY id")
    assert {row[0] for row in archived} == old
    assert {row[1] for row in archived} == {1}, "each note archived once"
    moved = await rows(
        database,
        "SELECT COUNT(*) FROM spn_notes_archive WHERE created_at < %s "
        "AND body LIKE 'old %%' AND version = 1 + MOD(CAST(SUBSTRING(body, 5) AS INT), 3)",
        BEFORE,
    )
    assert moved == [(OLD,)], "every column moved as it was"

    # An hour later, the next interval's sweep: the note created at BEFORE is old now.
    again = await run_sweep(rel, NOW + 3600)
    assert (again["state"], again["steps_done"], again["result"]) == (
        "succeeded",
        2,
        [{"retired": 1}],
    )
    [(last,)] = await rows(
        database, "SELECT id FROM spn_notes_archive WHERE body = 'the last kept'"
    )
    assert {row[0] for row in await rows(database, "SELECT id FROM spn_notes")} == kept - {last}


async def test_a_batch_run_again_finds_what_it_moved_gone(rel: RelAdapter, database: str) -> None:
    """A step whose node died after it committed runs again: it moves the next batch."""
    old, kept = await seed(database)
    operation = SPEW_NOTE.long_operations["retention"]
    params = {"before": BEFORE.replace(tzinfo=dt.UTC), "limit": 2000}
    ctx = CallContext(event_id="test.rel.retention")
    first = await rel.run_step(SPEW_NOTE, operation, params, 0, ctx)
    rerun = await rel.run_step(SPEW_NOTE, operation, params, 0, ctx)  # the same step again
    last = await rel.run_step(SPEW_NOTE, operation, params, 1, ctx)
    assert (first, rerun, last) == ([{"retired": 2000}], [{"retired": OLD - 2000}], [])
    [(count, distinct)] = await rows(
        database, "SELECT COUNT(*), COUNT(DISTINCT id) FROM spn_notes_archive"
    )
    assert count == distinct == len(old)
    assert {row[0] for row in await rows(database, "SELECT id FROM spn_notes")} == kept


async def test_notes_stay_writable_and_locked_while_others_are_archived(
    rel: RelAdapter, database: str
) -> None:
    """The sweep goes around the hot path: a kept note is updated with its version as before."""
    await seed(database)
    node = LocalNode([SPEW_NOTE], {"rel": rel}, identity=TestIdentity(env="test"), tickets=rel)
    created = await node.call("spew_note", "create", {"body": "mine"}, who="ann")
    assert created.ok, created.error
    assert isinstance(created.data, dict)
    await run_sweep(rel, NOW)
    updated = await node.call(
        "spew_note",
        "update",
        {"id": created.data["id"], "version": created.data["version"], "body": "still mine"},
        who="ann",
    )
    assert updated.ok, updated.error
    stale = await node.call(
        "spew_note",
        "update",
        {"id": created.data["id"], "version": created.data["version"], "body": "stale"},
        who="ann",
    )
    assert stale.error is not None
    assert stale.error.code == "BEDS-409V"


async def test_verify_names_a_missing_retire_procedure(rel: RelAdapter, database: str) -> None:
    await rows(database, "DROP PROCEDURE spn_retire")
    with pytest.raises(DatabaseObjectMissing) as missing:
        await rel.verify(SPEW_NOTE)
    assert missing.value.objects == ("spn_retire",)


def note_with(retention: dict[str, Any]) -> Template:
    """A REL template with retention whose ``[retention]`` table is ``retention`` and a field."""
    return parse_template(
        tomlkit.dumps(
            {
                "name": "memo",
                "store": "rel",
                "tla": "mem",
                "key": ["id"],
                "fields": {
                    "id": {"type": "int", "generated": True},
                    "created_at": {"type": "datetime", "generated": True},
                },
                "capabilities": {"retention_days": 7},
                "retention": {"field": "created_at", **retention},
            }
        ),
        source="memo.toml",
    )


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        ({}, "memo.toml: retention must name its stored procedure"),
        (
            {"procedure": "mem_retire", "cool_collection": "mem_cool"},
            "memo.toml: retention.cool_collection is not a REL binding",
        ),
        ({"procedure": "spn_retire"}, "retention.procedure 'spn_retire' must start with"),
    ],
)
def test_the_rel_binding_of_a_sweep_is_checked_where_it_is_declared(
    retention: dict[str, Any], message: str
) -> None:
    adapter = RelAdapter.from_settings(
        StoreSettings(store="rel", options={"url": "mysql://root@127.0.0.1:3306/unused"})
    )
    with pytest.raises(TemplateError) as refused:
        adapter.prepare(note_with(retention))
    assert message in str(refused.value)
    adapter.prepare(note_with({"procedure": "mem_retire"}))
