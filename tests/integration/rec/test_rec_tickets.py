"""The REC ticket store and REC long operations on a real MongoDB wire server.

The ticket store passes beds-core's :class:`TicketStoreContract`; then what only a store without
transactions must show: concurrent claims never share a ticket, a step saved again does not
duplicate its rows, results round trip; and a long operation's pipeline runs one step at a time
with its params bound as values. Each test gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from pymongo import AsyncMongoClient

from beds.calgon.tickets import TicketState
from beds.config.model import CalgonSettings
from beds.errors import DatabaseObjectMissing
from beds.namaste import CallContext, SchemaFile, StoreSettings
from beds.templates import Template, parse_template
from beds.testing import unique_name
from beds.testing.local import LocalNode
from beds.testing.ticket_contract import TicketStoreContract, new_ticket
from beds_rec import RecAdapter

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.mongodb

T0 = 1_800_000_000.0
LEASE = 30.0

SCORES = """
name = "rlo_score"
store = "rec"
tla = "rlo"
key = ["id"]

[access]
submit = ["member"]

[rec]
collection = "rlo_scores"

[fields.id]
type = "str"
generated = true

[fields.player]
type = "str"

[fields.points]
type = "int"

[fields.n]
type = "int"

[operations.create]
params = ["player", "points", "n"]

# Step s answers the scores whose n modulo steps is s, at least min_points, tagged.
[long_operations.slices]
steps = 3
pipeline = [
  {"$match" = {points = {"$gte" = {"$param" = "min_points"}}}},
  {"$match" = {"$expr" = {"$eq" = [{"$mod" = ["$n", {"$param" = "steps"}]}, {"$param" = "step"}]}}},
  {"$set" = {tag = {"$literal" = {"$param" = "tag"}}, step = {"$param" = "step"}}},
  {"$sort" = {n = 1}},
]

[long_operations.slices.params.min_points]
type = "int"
default = 0

[long_operations.slices.params.tag]
type = "str"
default = "plain"

# One step: each player's total, merged into rlo_totals (a write a retry repeats harmlessly).
[long_operations.totals]
pipeline = [
  {"$group" = {_id = "$player", total = {"$sum" = "$points"}}},
  {"$merge" = {into = "rlo_totals", whenMatched = "replace"}},
]
"""


SCORES_SCHEMA = SchemaFile(name="001_rlo_scores.json", text='{"collection": "rlo_scores"}')


def settings(uri: str, database: str) -> StoreSettings:
    return StoreSettings(
        store="rec",
        options={"uri": uri, "database": database, "server_selection_timeout": 5},
        file="beds.toml",
    )


async def drop(uri: str, database: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        await client.drop_database(database)
    finally:
        await client.close()


@pytest.fixture
async def database(mongo_server_uri: str) -> AsyncIterator[str]:
    """A database of the test's own, dropped afterwards."""
    name = unique_name("beds_tickets")
    try:
        yield name
    finally:
        await drop(mongo_server_uri, name)


@pytest.fixture
async def rec(mongo_server_uri: str, database: str) -> AsyncIterator[RecAdapter]:
    """A started adapter on the test's database, beds-rec's own schema applied."""
    adapter = RecAdapter(settings(mongo_server_uri, database))
    await adapter.start()
    try:
        await adapter.apply_schema([])
        yield adapter
    finally:
        await adapter.aclose()


class TestRecTickets(TicketStoreContract):
    @pytest.fixture
    async def ticket_store(self, rec: RecAdapter) -> RecAdapter:
        await rec.verify_tickets()
        return rec


# -- what a store without transactions must show --------------------------------------------


async def test_concurrent_claimers_never_share_a_ticket(
    rec: RecAdapter, mongo_server_uri: str, database: str
) -> None:
    tickets = [new_ticket(created_at=T0 + n) for n in range(20)]
    for ticket in tickets:
        await rec.record_ticket(ticket)
    claimers = [RecAdapter(settings(mongo_server_uri, database)) for _ in range(4)]
    for claimer in claimers:
        await claimer.start()

    async def claim_all(claimer: RecAdapter, owner: str) -> list[str]:
        taken = []
        while (ticket := await claimer.claim_ticket(owner, LEASE, T0 + 100)) is not None:
            assert ticket.lease_owner == owner
            taken.append(ticket.ticket_id)
        return taken

    try:
        taken = await asyncio.gather(
            *(claim_all(claimer, f"node-{n}") for n, claimer in enumerate(claimers))
        )
    finally:
        for claimer in claimers:
            await claimer.aclose()
    every = [ticket_id for owned in taken for ticket_id in owned]
    assert sorted(every) == sorted(ticket.ticket_id for ticket in tickets)
    assert len(set(every)) == 20
    for ticket in tickets:
        read = await rec.read_ticket(ticket.ticket_id)
        assert read is not None
        assert read.attempts == 1


async def test_500_nested_records_round_trip_in_order(rec: RecAdapter) -> None:
    ticket = new_ticket(steps=2)
    await rec.record_ticket(ticket)
    await rec.claim_ticket("node-a", LEASE, T0)
    records = [
        {
            "n": n,
            "name": f"naïve ✓ {n} — 日本",
            "ratio": n / 7,
            "none": None,
            "flag": n % 2 == 0,
            "nested": {"list": [n, {"deep": [None, "x", 1.5]}], "empty": {}, "big": 2**62},
        }
        for n in range(500)
    ]
    assert await rec.save_step(ticket.ticket_id, "node-a", 0, records[:250], T0 + 1)
    assert await rec.save_step(ticket.ticket_id, "node-a", 1, records[250:], T0 + 2)
    rows, after = [], None
    while page := await rec.read_results(ticket.ticket_id, after, 120):
        rows += page
        after = page[-1][:2]
    assert [(step, index) for step, index, _ in rows] == [
        *((0, n) for n in range(250)),
        *((1, n) for n in range(250)),
    ]
    assert [record for _, _, record in rows] == records


async def test_a_step_tried_again_leaves_only_its_last_rows(rec: RecAdapter) -> None:
    """A try that stopped after writing its rows (node died) is overwritten, never added to."""
    ticket = new_ticket(steps=2)
    await rec.record_ticket(ticket)
    await rec.claim_ticket("node-a", LEASE, T0)
    results = rec._database["beds_ticket_results"]
    # What a first try left behind: five rows of step 0, and steps_done still 0.
    await results.insert_many(
        [
            {"_id": f"{ticket.ticket_id}/0/{n}", "ticket": ticket.ticket_id, "step": 0, "idx": n}
            | {"record": {"try": 1, "n": n}}
            for n in range(5)
        ]
    )
    assert await rec.read_results(ticket.ticket_id, None, 10) == []  # not a step done
    taken = await rec.claim_ticket("node-b", LEASE, T0 + LEASE + 1)
    assert taken is not None
    assert taken.steps_done == 0
    again = [{"try": 2, "n": n} for n in range(3)]
    assert await rec.save_step(ticket.ticket_id, "node-b", 0, again, T0 + LEASE + 2)
    rows = await rec.read_results(ticket.ticket_id, None, 10)
    assert [record for _, _, record in rows] == again
    assert await results.count_documents({"ticket": ticket.ticket_id}) == 3


async def test_a_lost_lease_writes_no_rows(rec: RecAdapter) -> None:
    ticket = new_ticket()
    await rec.record_ticket(ticket)
    await rec.claim_ticket("node-a", LEASE, T0)
    await rec.claim_ticket("node-b", LEASE, T0 + LEASE + 1)
    assert not await rec.save_step(ticket.ticket_id, "node-a", 0, [{"stale": True}], T0 + 40)
    assert await rec._database["beds_ticket_results"].count_documents({}) == 0


async def test_an_anonymous_key_is_unique_too(rec: RecAdapter) -> None:
    first = new_ticket(principal=None, idempotency_key="k")
    assert (await rec.record_ticket(first))[1]
    again, new = await rec.record_ticket(new_ticket(principal=None, idempotency_key="k"))
    assert not new
    assert again.ticket_id == first.ticket_id
    assert again.principal is None
    assert (await rec.record_ticket(new_ticket(principal=None)))[1]
    assert (await rec.record_ticket(new_ticket(principal=None)))[1]


async def test_concurrent_submits_with_one_key_record_one_ticket(rec: RecAdapter) -> None:
    answers = await asyncio.gather(
        *(rec.record_ticket(new_ticket(idempotency_key="same")) for _ in range(8))
    )
    assert sum(new for _, new in answers) == 1
    assert len({ticket.ticket_id for ticket, _ in answers}) == 1


async def test_a_ticket_stored_before_lanes_is_a_default_lane_one(rec: RecAdapter) -> None:
    old = new_ticket()
    await rec.record_ticket(old)
    # As a ticket recorded before lanes existed: no lane field.
    await rec._database["beds_tickets"].update_one({"_id": old.ticket_id}, {"$unset": {"lane": 1}})
    read = await rec.read_ticket(old.ticket_id)
    assert read is not None
    assert read.lane == "default"
    assert await rec.claim_ticket("seg-1", 30.0, T0, "warehouse") is None
    claimed = await rec.claim_ticket("app-1", 30.0, T0)
    assert claimed is not None
    assert (claimed.ticket_id, claimed.lane) == (old.ticket_id, "default")


async def test_verify_tickets_names_what_is_missing(rec: RecAdapter) -> None:
    await rec._database["beds_tickets"].drop_index("beds_tickets_lane_claim_ix")
    await rec._database["beds_ticket_results"].drop()
    with pytest.raises(DatabaseObjectMissing) as caught:
        await rec.verify_tickets()
    assert caught.value.details == (
        "beds_tickets.beds_tickets_lane_claim_ix",
        "beds_ticket_results",
    )
    await rec.apply_schema([])
    await rec.verify_tickets()


# -- long operations ------------------------------------------------------------------------


@pytest.fixture
async def scores(rec: RecAdapter) -> Template:
    """The scores template, prepared, with 30 scores: n = 0 … 29, points = 10 n."""
    template = parse_template(SCORES, source="rlo_score.toml")
    rec.prepare(template)
    await rec.apply_schema([SCORES_SCHEMA])
    players = ["ann", "bob", "cyd"]
    await rec._database["rlo_scores"].insert_many(
        [{"player": players[n % 3], "points": 10 * n, "n": n} for n in range(30)]
    )
    return template


async def test_a_pipeline_runs_a_step_with_its_params_as_values(
    rec: RecAdapter, scores: Template
) -> None:
    await rec.verify(scores)
    operation = scores.long_operations["slices"]
    params = {"min_points": 100, "tag": "$player"}  # a field path, if it were not a value
    ctx = CallContext(event_id="test.rec.long")
    steps = [await rec.run_step(scores, operation, params, step, ctx) for step in range(3)]
    assert [[record["n"] for record in records] for records in steps] == [
        [n for n in range(10, 30) if n % 3 == step] for step in range(3)
    ]
    first = steps[1][0]
    assert set(first) == {"id", "player", "points", "n", "tag", "step"}
    assert len(first["id"]) == 24
    assert (first["tag"], first["step"], first["points"]) == ("$player", 1, 100)


async def test_a_pipeline_merges_into_its_templates_collection(
    rec: RecAdapter, scores: Template
) -> None:
    operation = scores.long_operations["totals"]
    ctx = CallContext(event_id="test.rec.long")
    for _ in range(2):  # a step run again writes the same
        assert await rec.run_step(scores, operation, {}, 0, ctx) == []
    totals = await rec._database["rlo_totals"].find({}, sort=[("_id", 1)]).to_list()
    assert totals == [
        {"_id": player, "total": sum(10 * n for n in range(30) if n % 3 == offset)}
        for offset, player in enumerate(["ann", "bob", "cyd"])
    ]


async def test_verify_names_a_collection_a_pipeline_reads(rec: RecAdapter) -> None:
    text = SCORES.replace(
        "[long_operations.totals]\n",
        '[long_operations.totals]\ncollection = "rlo_archive"\n',
    )
    template = parse_template(text, source="rlo_score.toml")
    rec.prepare(template)
    with pytest.raises(DatabaseObjectMissing) as caught:
        await rec.verify(template)
    assert set(caught.value.details) == {"rlo_scores", "rlo_archive"}


async def test_a_submitted_ticket_runs_to_its_result(rec: RecAdapter, scores: Template) -> None:
    """Submit, run and read through a node's dispatcher, tickets and work both on MongoDB."""
    node = LocalNode([scores], {"rec": rec}, tickets=rec, calgon=CalgonSettings(page_size=4))
    submitted = await node.call(
        "rlo_score", "submit", {"operation": "slices", "params": {"min_points": 200}}
    )
    assert submitted.status == 202
    ticket_id = submitted.data["ticket"]
    assert node.workers is not None
    started = time.monotonic()
    assert await node.workers.run_one()
    assert time.monotonic() - started < 30
    read = await rec.read_ticket(ticket_id)
    assert read is not None
    assert (read.state, read.steps_done, read.attempts) == (TicketState.SUCCEEDED, 3, 1)
    payload: dict[str, Any] = {"ticket": ticket_id}
    seen: list[int] = []
    while True:
        page = await node.call("rlo_score", "ticket", payload)
        assert page.ok, page.error
        seen += [record["n"] for record in page.data["result"]]
        if page.meta.next is None:
            break
        payload = {"ticket": ticket_id, "cursor": page.meta.next}
    assert seen == [n for step in range(3) for n in range(20, 30) if n % 3 == step]
    unknown = await node.call("rlo_score", "ticket", {"ticket": str(uuid.uuid4())})
    assert unknown.error is not None
    assert unknown.error.code == "BEDS-404"
