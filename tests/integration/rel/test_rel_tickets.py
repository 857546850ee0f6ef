"""CALGON on the real MariaDB: the REL ticket store and REL long operations.

The ticket store passes beds-core's :class:`TicketStoreContract`; beyond it, concurrent claims
never take one ticket twice (``SKIP LOCKED``), a large step of nested JSON round trips exactly,
``verify_tickets`` names what is missing, and a long operation's procedure runs step by step
(directly, and as a ticket submitted to a node and run by its worker). Every test has a private
database with beds-rel's objects and the test template's (``tally``, TLA ``tly``), dropped after
it, so each store starts empty and tests do not depend on order.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from beds.calgon.tickets import TicketState
from beds.errors import DatabaseObjectMissing, StoreError
from beds.namaste import CallContext, SchemaFile, StoreSettings
from beds.registry import TemplateRegistry
from beds.templates import parse_template
from beds.testing import TestIdentity, unique_name
from beds.testing.local import LocalNode
from beds.testing.ticket_contract import TicketStoreContract, new_ticket
from beds_rel import RelAdapter
from tests.integration.nodes import dba_connect_url

pytestmark = pytest.mark.mariadb

T0 = 1_800_000_000.0

TALLY = parse_template(
    """
name = "tally"
store = "rel"
tla = "tly"
key = ["id"]
[fields.id]
type = "int"
[fields.label]
type = "str"
[fields.ok]
type = "bool"
[fields.price]
type = "decimal"

[long_operations.tally]
steps = 3
procedure = "tly_tally"
[long_operations.tally.params.label]
type = "str"
max_length = 40
default = "item"
[long_operations.tally.params.meta]
type = "json"
required = false
nullable = true
""",
    source="tally.toml",
)

# The DBA's side: ten items; step s of n answers the items whose id modulo n is s. A label of
# "fail" makes the procedure fail, as a DBA's SIGNAL does.
SCHEMA = SchemaFile(
    name="tests/integration/rel/tly.sql",
    text="""
CREATE TABLE IF NOT EXISTS tly_items (
    id INT NOT NULL PRIMARY KEY,
    ok TINYINT(1) NOT NULL,
    price DECIMAL(8, 2) NOT NULL
) ENGINE = InnoDB;
INSERT IGNORE INTO tly_items (id, ok, price)
    SELECT seq, seq % 2, seq + 0.5 FROM (
        SELECT 1 AS seq UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
        UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8
        UNION ALL SELECT 9 UNION ALL SELECT 10) AS numbers;

DELIMITER $$
CREATE OR REPLACE PROCEDURE tly_tally(
    IN p_label VARCHAR(40) CHARACTER SET utf8mb4,
    IN p_meta LONGTEXT CHARACTER SET utf8mb4,
    IN p_step INT,
    IN p_steps INT
)
READS SQL DATA
BEGIN
    IF p_label = 'fail' THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'tally refused';
    END IF;
    SELECT id, CONCAT(p_label, '-', id) AS label, ok, price, p_step AS step, p_steps AS steps,
           JSON_VALUE(p_meta, '$.tag') AS tag
      FROM tly_items
     WHERE id % p_steps = p_step
     ORDER BY id;
END$$
DELIMITER ;
""",
)


EXAMPLE = TemplateRegistry()
EXAMPLE.add_package("beds_templates_example")
SPEW_STATS = EXAMPLE.templates["spew_stats"]


def make_adapter(url: str) -> RelAdapter:
    adapter = RelAdapter.from_settings(
        StoreSettings(store="rel", options={"url": url, "connect_timeout": 2, "pool_max": 8})
    )
    adapter.prepare(TALLY)
    adapter.prepare(SPEW_STATS)
    return adapter


async def dba(url: str) -> Any:
    """A connection to the database of ``url``, as its DBA has one (no BEDS between)."""
    return await dba_connect_url(url, autocommit=True)


async def sql(url: str, statement: str, *args: Any) -> None:
    """Run one statement on the database of ``url``, as its DBA."""
    conn = await dba(url)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(statement, args)
    finally:
        conn.close()


@pytest.fixture
def database(mariadb_url: str, mariadb_sql: Callable[[str], None]) -> Iterator[str]:
    """A private database with beds-rel's objects (tickets included) and the test schema."""
    name = unique_name("beds_tickets")
    parts = urlsplit(mariadb_url)
    url = urlunsplit((parts.scheme, parts.netloc, "/" + name, "", ""))
    try:
        asyncio.run(make_adapter(url).apply_schema([SCHEMA, *EXAMPLE.schema["rel"]]))
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


class TestRelTickets(TicketStoreContract):
    @pytest.fixture
    async def ticket_store(self, rel: RelAdapter) -> RelAdapter:
        return rel


async def test_concurrent_claims_never_take_a_ticket_twice(rel: RelAdapter) -> None:
    tickets = [new_ticket(created_at=T0 + n) for n in range(20)]
    for ticket in tickets:
        await rel.record_ticket(ticket)
    start = asyncio.Event()

    async def claimer(owner: str) -> list[str]:
        await start.wait()
        taken = []
        while (claimed := await rel.claim_ticket(owner, 30.0, T0 + 100)) is not None:
            assert claimed.lease_owner == owner
            taken.append(claimed.ticket_id)
        return taken

    tasks = [asyncio.create_task(claimer(f"node-{n}")) for n in range(4)]
    start.set()
    taken = await asyncio.gather(*tasks)
    every = [ticket_id for ids in taken for ticket_id in ids]
    assert sorted(every) == sorted(t.ticket_id for t in tickets)  # each once, none left
    for owner, ids in enumerate(taken):
        for ticket_id in ids:
            held = await rel.read_ticket(ticket_id)
            assert held is not None
            assert (held.lease_owner, held.attempts) == (f"node-{owner}", 1)


async def test_a_claim_skips_a_ticket_locked_elsewhere_instead_of_waiting(
    rel: RelAdapter, database: str
) -> None:
    older, newer = new_ticket(created_at=T0), new_ticket(created_at=T0 + 1)
    for ticket in (older, newer):
        await rel.record_ticket(ticket)
    conn = await dba(database)
    try:
        await conn.begin()
        async with conn.cursor() as cursor:  # another claim, half-way through
            await cursor.execute(
                "SELECT ticket_id FROM beds_tickets WHERE ticket_id = %s FOR UPDATE",
                (older.ticket_id,),
            )
        async with asyncio.timeout(5):  # a plain FOR UPDATE would wait 50 s for the lock
            claimed = await rel.claim_ticket("node-a", 30.0, T0 + 2)
        assert claimed is not None
        assert claimed.ticket_id == newer.ticket_id
        async with asyncio.timeout(5):
            assert await rel.claim_ticket("node-b", 30.0, T0 + 2) is None
        await conn.rollback()
    finally:
        conn.close()
    taken = await rel.claim_ticket("node-b", 30.0, T0 + 3)
    assert taken is not None
    assert taken.ticket_id == older.ticket_id


async def test_a_claim_takes_the_oldest_of_lapsed_and_queued_tickets(rel: RelAdapter) -> None:
    first, second, third = (new_ticket(created_at=T0 + n) for n in range(3))
    for ticket in (second, third):
        await rel.record_ticket(ticket)
    await rel.claim_ticket("node-a", 10.0, T0)  # second runs, its lease lapses at T0 + 10
    await rel.record_ticket(first)
    await rel.claim_ticket("node-a", 100.0, T0)  # first runs, for long
    oldest = new_ticket(created_at=T0 - 1)
    await rel.record_ticket(oldest)
    queued = await rel.claim_ticket("node-b", 30.0, T0 + 20)
    assert queued is not None
    assert queued.ticket_id == oldest.ticket_id  # older than the lapsed one
    lapsed = await rel.claim_ticket("node-b", 30.0, T0 + 20)
    assert lapsed is not None
    assert (lapsed.ticket_id, lapsed.attempts) == (second.ticket_id, 2)  # older than third
    newest = await rel.claim_ticket("node-b", 30.0, T0 + 20)
    assert newest is not None
    assert newest.ticket_id == third.ticket_id
    assert await rel.claim_ticket("node-b", 30.0, T0 + 20) is None


def nested_records(count: int) -> list[dict[str, Any]]:
    return [
        {
            "n": n,
            "name": f'naïve ✓ {n} 🎉 "quoted" \\ back\nline',
            "ratio": n / 7,
            "tiny": 5e-324,
            "huge": 1.7976931348623157e308,
            "negative": -0.0 if n % 2 else -123.456e-7,
            "none": None,
            "flag": n % 3 == 0,
            "nested": {"list": [1, None, "ü", {"deep": [n / 3, [], {}]}], "empty": ""},
        }
        for n in range(count)
    ]


async def test_a_step_of_500_nested_records_round_trips_exactly(rel: RelAdapter) -> None:
    ticket = new_ticket(steps=1)
    await rel.record_ticket(ticket)
    await rel.claim_ticket("node-a", 30.0, T0)
    records = nested_records(500)
    assert await rel.save_step(ticket.ticket_id, "node-a", 0, records, T0 + 1)
    read: list[dict[str, Any]] = []
    after = None
    while page := await rel.read_results(ticket.ticket_id, after, 200):
        read += [record for _, _, record in page]
        after = page[-1][:2]
    assert [json.dumps(r) for r in read] == [json.dumps(r) for r in records]  # types too
    assert after == (0, 499)


async def test_records_that_are_not_json_are_refused_and_nothing_is_kept(
    rel: RelAdapter,
) -> None:
    ticket = new_ticket()
    await rel.record_ticket(ticket)
    await rel.claim_ticket("node-a", 30.0, T0)
    with pytest.raises(StoreError, match="not JSON"):
        await rel.save_step(ticket.ticket_id, "node-a", 0, [{"x": float("nan")}], T0)
    held = await rel.read_ticket(ticket.ticket_id)
    assert held is not None
    assert held.steps_done == 0
    assert await rel.save_step(ticket.ticket_id, "node-a", 0, [{"x": 1}], T0)


async def test_an_anonymous_key_is_unique_too(rel: RelAdapter) -> None:
    first = new_ticket(principal=None, idempotency_key="k")
    assert (await rel.record_ticket(first))[1]
    again, new = await rel.record_ticket(new_ticket(principal=None, idempotency_key="k"))
    assert not new
    assert again.ticket_id == first.ticket_id
    assert again.principal is None
    # a principal's key is not the anonymous one, whatever the principal's id
    assert (await rel.record_ticket(new_ticket(principal="", idempotency_key="k")))[1]


async def test_verify_tickets_names_what_is_missing_or_differs(
    rel: RelAdapter, database: str
) -> None:
    await rel.verify_tickets()
    await sql(database, "DROP PROCEDURE beds_ticket_claim")
    await sql(
        database,
        "CREATE OR REPLACE PROCEDURE beds_ticket_renew(IN p_ticket_id CHAR(36)) BEGIN END",
    )
    with pytest.raises(DatabaseObjectMissing) as caught:
        await rel.verify_tickets()
    assert caught.value.objects == (
        "beds_ticket_claim",
        "beds_ticket_renew (takes 1 parameters; the template passes 3)",
    )
    with pytest.raises(DatabaseObjectMissing) as called:
        await rel.claim_ticket("node-a", 30.0, T0)
    assert called.value.objects == ("beds_ticket_claim",)


async def rows(url: str, statement: str) -> list[tuple[Any, ...]]:
    """One query's rows, as the DBA reads them."""
    conn = await dba(url)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(statement)
            return list(await cursor.fetchall())
    finally:
        conn.close()


async def test_a_ticket_table_from_before_lanes_gets_them_when_the_schema_is_applied_again(
    rel: RelAdapter, database: str
) -> None:
    # The table as the schema made it before lanes: no lane column, the claim index without it.
    await sql(
        database,
        "ALTER TABLE beds_tickets DROP INDEX beds_tickets_lane_claim, DROP COLUMN lane, "
        "ADD KEY beds_tickets_claim (state, lease_until, created_at)",
    )
    old = str(uuid.uuid4())
    await sql(
        database,
        "INSERT INTO beds_tickets (ticket_id, template, operation, params, steps, created_at) "
        "VALUES (%s, 'tally', 'tally', '{}', 3, '2027-01-15 08:00:00')",
        old,
    )
    for _ in range(2):  # re-appliable: the second time changes nothing
        await make_adapter(database).apply_schema([SCHEMA, *EXAMPLE.schema["rel"]])
        await rel.verify_tickets()
    indexes = {row[2] for row in await rows(database, "SHOW INDEX FROM beds_tickets")}
    assert "beds_tickets_lane_claim" in indexes
    assert "beds_tickets_claim" not in indexes
    assert await rows(database, "SELECT lane FROM beds_tickets") == [("default",)]
    assert await rel.claim_ticket("seg-1", 30.0, T0, "warehouse") is None
    claimed = await rel.claim_ticket("app-1", 30.0, T0)
    assert claimed is not None
    assert (claimed.ticket_id, claimed.lane) == (old, "default")


async def test_the_claim_reads_the_lane_index(rel: RelAdapter, database: str) -> None:
    for n in range(40):
        lane = "warehouse" if n % 2 else "default"
        await rel.record_ticket(new_ticket(lane=lane, created_at=T0 + n))
    await sql(database, "ANALYZE TABLE beds_tickets")
    plan = await rows(
        database,
        "EXPLAIN SELECT ticket_id FROM beds_tickets "
        "WHERE lane = 'warehouse' AND state = 'queued' AND lease_until IS NULL "
        "ORDER BY created_at, ticket_id LIMIT 1",
    )
    assert [row[4] for row in plan] == ["beds_tickets_lane_claim"], plan


async def test_a_long_operation_step_runs_the_procedure_with_params_step_and_steps(
    rel: RelAdapter,
) -> None:
    await rel.verify(TALLY)
    operation = TALLY.long_operations["tally"]
    ctx = CallContext(event_id="test.rel.step")
    params = {"label": "naïve", "meta": {"tag": "ü"}}
    records = await rel.run_step(TALLY, operation, params, 1, ctx)
    assert records == [
        {
            "id": n,
            "label": f"naïve-{n}",
            "ok": n % 2 == 1,  # TINYINT(1) read as the template's bool
            "price": str(Decimal(n) + Decimal("0.50")),  # DECIMAL as exact text
            "step": 1,
            "steps": 3,
            "tag": "ü",
        }
        for n in (1, 4, 7, 10)
    ]
    assert await rel.run_step(TALLY, operation, {"label": "x", "meta": None}, 0, ctx) == [
        {"id": n, "label": f"x-{n}", "ok": n % 2 == 1, "price": f"{n}.50", "step": 0, "steps": 3}
        | {"tag": None}
        for n in (3, 6, 9)
    ]
    with pytest.raises(StoreError) as failed:
        await rel.run_step(TALLY, operation, {"label": "fail", "meta": None}, 0, ctx)
    assert "tally refused" in failed.value.details[0]


async def test_verify_names_a_long_operations_procedure(rel: RelAdapter, database: str) -> None:
    await sql(database, "CREATE OR REPLACE PROCEDURE tly_tally(IN p_step INT) BEGIN END")
    with pytest.raises(DatabaseObjectMissing) as differs:
        await rel.verify(TALLY)
    assert differs.value.objects == ("tly_tally (takes 1 parameters; the template passes 4)",)
    await sql(database, "DROP PROCEDURE tly_tally")
    with pytest.raises(DatabaseObjectMissing) as missing:
        await rel.verify(TALLY)
    assert missing.value.objects == ("tly_tally",)


async def test_a_submitted_ticket_runs_on_mariadb_and_pages_its_result(
    rel: RelAdapter,
) -> None:
    node = LocalNode([TALLY], {"rel": rel}, identity=TestIdentity(env="test"), tickets=rel)
    assert node.workers is not None
    key = f"k-{uuid.uuid4().hex}"
    submitted = await node.call(
        "tally", "submit", {"operation": "tally", "params": {}}, idempotency_key=key
    )
    assert submitted.ok, submitted.error
    assert isinstance(submitted.data, dict)
    ticket_id = submitted.data["ticket"]
    assert await node.workers.run_one()
    done = await rel.read_ticket(ticket_id)
    assert done is not None
    assert (done.state, done.steps_done, done.attempts) == (TicketState.SUCCEEDED, 3, 1)
    answered = await node.call("tally", "ticket", {"ticket": ticket_id, "limit": 4})
    assert answered.ok, answered.error
    assert isinstance(answered.data, dict)
    ids = [record["id"] for record in answered.data["result"]]
    while answered.meta.next:
        answered = await node.call(
            "tally", "ticket", {"ticket": ticket_id, "limit": 4, "cursor": answered.meta.next}
        )
        assert answered.ok, answered.error
        assert isinstance(answered.data, dict)
        ids += [record["id"] for record in answered.data["result"]]
    assert ids == [3, 6, 9, 1, 4, 7, 10, 2, 5, 8]  # step 0, 1, 2, each in the procedure's order
    again = await node.call(
        "tally", "submit", {"operation": "tally", "params": {}}, idempotency_key=key
    )
    assert isinstance(again.data, dict)
    assert again.data["ticket"] == ticket_id


async def test_the_examples_long_operation_fits_its_shipped_procedure(
    rel: RelAdapter, database: str
) -> None:
    await rel.verify(SPEW_STATS)
    author = f"t_{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        await sql(database, "INSERT INTO spp_posts (author, body) VALUES (%s, 'x')", author)
    operation = SPEW_STATS.long_operations["daily"]
    ctx = CallContext(event_id="test.rel.daily")
    rows = [
        record
        for step in range(operation.steps)
        for record in await rel.run_step(
            SPEW_STATS, operation, {"days": 1, "author": author}, step, ctx
        )
    ]
    assert [(r["author"], r["posts"]) for r in rows] == [(author, 3)]  # in one step only
