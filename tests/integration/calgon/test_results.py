"""The example domain's long operations end to end, through ``beds run`` nodes.

A client submits ``spew_stats daily`` (REL: the procedure ``sps_daily``) or ``spew_profile
census`` (REC: an aggregation pipeline) with ``{}``, so every param takes its default, and waits
for the result. The result must equal what the DBA counts directly in the database; the
progress the client sees must strictly increase to 1; ``beds ticket ID`` must print the
succeeded ticket with the same result; and ``beds lineage`` of the submit (read back through an
admin node) must show each step as an event under it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest
from pymongo import AsyncMongoClient

from beds.testing import unique_name
from tests.helpers import operator_token
from tests.integration.calgon.helpers import StartAdmin, beds_json, calgon_settings, dba_rows
from tests.integration.nodes import StartServed, Stores, beds_command, client_of, wait_ready

pytestmark = [pytest.mark.mariadb, pytest.mark.mongodb]

POSTS = {"ann": [0, 0, 1, 3], "bob": [0, 2, 2, 2, 29], "cy": [5], "dee": [1, 40], "eve": [31]}
"""Each author's posts, by how many days before today (UTC) each was written."""
HANDLES = ["ann", "abe", "al", "bob", "b", "zed", "_x", "9lives", "carl", "cy", "c_3po", "q"]
"""The profiles counted by the census (by the first letter of the handle)."""


async def seed_posts(stores: Stores) -> None:
    """Posts written days ago: inserted by the DBA, as BEDS's create cannot date them back."""
    for author, days in POSTS.items():
        for n, ago in enumerate(days):
            await dba_rows(
                stores,
                "INSERT INTO spp_posts (author, body, created_at) "
                "VALUES (%s, %s, UTC_DATE() - INTERVAL %s DAY + INTERVAL 1 HOUR)",
                author,
                f"post {n}",
                ago,
            )


async def counted_posts(stores: Stores) -> list[dict[str, Any]]:
    """Posts per author per day of the last 30 days (today included), counted by the DBA."""
    rows = await dba_rows(
        stores,
        "SELECT author, DATE_FORMAT(created_at, '%Y-%m-%d'), COUNT(*) FROM spp_posts "
        "WHERE created_at >= UTC_DATE() - INTERVAL 29 DAY GROUP BY 1, 2",
    )
    return [{"author": author, "day": day, "posts": int(posts)} for author, day, posts in rows]


async def seed_profiles(stores: Stores) -> None:
    """Profiles inserted by the DBA (no BEDS between)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stores.mongo_uri)
    now = dt.datetime.now(dt.UTC)
    try:
        await client[stores.mongo_database]["spf_profiles"].insert_many(
            [{"handle": h, "display_name": h.title(), "created_at": now} for h in HANDLES]
        )
    finally:
        await client.close()


async def counted_profiles(stores: Stores) -> list[dict[str, Any]]:
    """Profiles per first letter of the handle, counted from the documents themselves."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stores.mongo_uri)
    try:
        found = client[stores.mongo_database]["spf_profiles"].find({}, {"handle": 1})
        initials = Counter(document["handle"][0] for document in await found.to_list())
    finally:
        await client.close()
    return [{"initial": initial, "profiles": count} for initial, count in initials.items()]


@attrs.frozen
class Case:
    template: str
    operation: str
    seed: Callable[[Stores], Awaitable[None]]
    counted: Callable[[Stores], Awaitable[list[dict[str, Any]]]]
    key: tuple[str, ...]
    """The fields that name a record (to compare results in any order)."""


CASES = {
    "rel": Case("spew_stats", "daily", seed_posts, counted_posts, ("author", "day")),
    "rec": Case("spew_profile", "census", seed_profiles, counted_profiles, ("initial",)),
}


def by_key(records: list[dict[str, Any]], key: tuple[str, ...]) -> dict[tuple[Any, ...], Any]:
    keyed = {tuple(record[k] for k in key): record for record in records}
    assert len(keyed) == len(records), f"a record is doubled: {records}"
    return keyed


def step_events(served_config: str, event_id: str, steps: int) -> list[dict[str, Any]]:
    """The submit's lineage tree once it holds an event for every step (else ``[]``)."""
    result = beds_command(
        "lineage", event_id, "--config", served_config, "--json", "--timeout", "2"
    )
    if result.returncode != 0:
        return []
    events: list[dict[str, Any]] = json.loads(result.stdout)
    done = [e for e in events if e["kind"] == "db" and e["parent_id"] == event_id]
    return events if len(done) >= steps else []


@pytest.mark.parametrize("store", ["rel", "rec"])
async def test_a_submitted_long_operation_counts_what_the_database_holds(
    store: str,
    amqp_url: str,
    stores: Stores,
    start_served: StartServed,
    start_admin: StartAdmin,
) -> None:
    case = CASES[store]
    await case.seed(stores)
    served = start_served(env=unique_name("calgon"), extra=calgon_settings())
    start_admin(served)
    progress: list[float] = []
    async with client_of(served, amqp_url, timeout=10) as client:
        await wait_ready(served, client)
        handle = await client.submit(case.template, case.operation, {})
        assert (handle.state, handle.ticket["steps_done"]) == ("queued", 0)
        records = await handle.result(
            poll=0.05, timeout=60, on_progress=lambda share, _: progress.append(share)
        )
    expected = await case.counted(stores)

    assert len(expected) >= 5, "the seed gives several records"
    assert by_key(records, case.key) == by_key(expected, case.key)
    steps = handle.ticket["steps"]
    assert (handle.state, handle.ticket["steps_done"], handle.ticket["attempts"]) == (
        "succeeded",
        steps,
        1,
    )
    assert progress == sorted(set(progress)), f"progress must strictly increase: {progress}"
    assert progress[-1] == 1.0
    assert all((share * steps).is_integer() for share in progress), progress

    # The terminal finds the ticket by its id alone and prints it with its whole result.
    shown = beds_json(
        "ticket", handle.id, "--config", str(served.config), "--token", operator_token(served.env)
    )
    assert (shown["ticket"], shown["state"], shown["progress"]) == (handle.id, "succeeded", 1.0)
    assert (shown["template"], shown["operation"]) == (case.template, case.operation)
    assert shown["result"] == records

    # Each step is an event under the submit's, whichever node ran it.
    event_id = handle.ticket["event_id"]
    deadline = time.monotonic() + 30
    while not (tree := step_events(str(served.config), event_id, steps)):
        assert time.monotonic() < deadline, f"no lineage of {steps} steps under {event_id}"
        await asyncio.sleep(0.2)
    root = tree[0]
    assert (root["kind"], root["event_id"], root["operation"], root["status"]) == (
        "request",
        event_id,
        "submit",
        202,
    )
    done = [e for e in tree if e["kind"] == "db" and e["parent_id"] == event_id]
    assert sorted(e["message"] for e in done) == [
        f"{case.operation} step {n}/{steps}" for n in range(1, steps + 1)
    ]
    assert {(e["template"], e["depth"], e["node"], e["code"]) for e in done} == {
        (case.template, root["depth"] + 1, "n1", "")
    }
