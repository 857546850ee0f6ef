"""A retention sweep killed half-way: the next node finishes it, no note lost or archived twice.

spew_note's sweep (``retention_days = 365``, DBA procedure ``spn_retire`` from
schema/rel/006_spew_note_retention.sql) runs on ``beds run`` nodes with short leases
(``calgon.lease_seconds = 2``). The test database's ``spn_retire`` is the shipped one slowed
down: ``DO SLEEP(0.05)`` in each batch's transaction, between the copy to the archive and the
delete, and there a gate (a MariaDB user lock the test holds) that stops the batch that would
take the archive past a third of the notes. The test kills the node while that batch waits,
half-done, and ends its call as a lost connection ends (``KILL CONNECTION``; MariaDB does not
notice a dead client until it writes to it): the batch is rolled back after its copy and before
its delete, the worst moment.

- 3000 notes older than a year, swept in batches of 50 (an admin's submit): the node running it
  is killed in its 21st batch; another node takes the ticket over and finishes it. The archive
  holds every old note exactly once, ``spn_notes`` none of them and every recent one.
- A node whose role has ``calgon.retention_broker`` records the sweep itself when it starts
  (principal ``beds.retention``), and its workers run it.

Sweeps run on the ``warehouse`` ticket lane: these appServer nodes get a ``tickets`` broker of
that lane (``SWEEPER``), as the seed segundo role's whBroker is
(tests/integration/calgon/test_warehouse_lane.py runs them there).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import pytest

from beds.client import TicketHandle
from beds.testing import unique_name
from tests.integration.calgon.helpers import calgon_settings, dba_rows
from tests.integration.nodes import (
    Served,
    StartServed,
    Stores,
    client_of,
    dba_connect,
    wait_ready,
)

if TYPE_CHECKING:
    from tests.helpers import Figures

pytestmark = [pytest.mark.mariadb, pytest.mark.mongodb]

SWEEPER = """
[roles.appServer.brokers.sweeper]
type = "tickets"
lane = "warehouse"
"""
"""One warehouse-lane worker on the test's appServer nodes: the sweeps' lane."""
OLD, RECENT, BATCH = 3000, 5, 50
GATED_AT = 1000
"""The batch that would archive more than this many notes waits at the gate (the 21st)."""


def shipped_procedure() -> str:
    """``spn_retire`` as the example package ships it (one statement, without DELIMITER)."""
    text = (
        files("beds_templates_example") / "schema" / "rel" / "006_spew_note_retention.sql"
    ).read_text(encoding="utf-8")
    start = text.index("CREATE OR REPLACE PROCEDURE spn_retire")
    return text[start : text.index("END$$", start)] + "END"


def slowed(procedure: str, gate: str) -> str:
    """The procedure pausing in each batch's transaction, after the copy, before the delete.

    The batch that takes the archive past a third of the notes (its own copy included) also
    waits there for the user lock ``gate`` while the test holds it.
    """
    delete = "    DELETE n FROM spn_notes"
    assert procedure.count(delete) == 1, "the shipped spn_retire changed: adapt the test"
    pause = f"""    DO SLEEP(0.05);
    IF (SELECT COUNT(*) FROM spn_notes_archive) > {GATED_AT} THEN
        DO GET_LOCK('{gate}', 60);
        DO RELEASE_LOCK('{gate}');
    END IF;
"""
    return procedure.replace(delete, pause + delete)


async def seed(stores: Stores, old: int) -> tuple[set[int], set[int]]:
    """``old`` notes created more than a year ago and ``RECENT`` new ones; their ids."""
    await dba_rows(
        stores,
        "INSERT INTO spn_notes (author, body, created_at) "
        "SELECT CONCAT('a', MOD(seq, 9)), CONCAT('old ', seq), "
        f"UTC_TIMESTAMP(6) - INTERVAL 400 DAY - INTERVAL seq SECOND FROM seq_1_to_{old}",
    )
    old_ids = {row[0] for row in await dba_rows(stores, "SELECT id FROM spn_notes")}
    await dba_rows(
        stores,
        "INSERT INTO spn_notes (author, body) "
        f"SELECT 'ann', CONCAT('new ', seq) FROM seq_1_to_{RECENT}",
    )
    recent = {row[0] for row in await dba_rows(stores, "SELECT id FROM spn_notes")} - old_ids
    return old_ids, recent


async def ids(stores: Stores, table: str) -> list[int]:
    """Every id of ``table``, duplicates included."""
    return [row[0] for row in await dba_rows(stores, f"SELECT id FROM {table}")]


async def gated_call(stores: Stores, seconds: float = 30.0) -> int:
    """The connection whose ``spn_retire`` batch waits at the gate, once one does."""
    deadline = time.monotonic() + seconds
    while True:
        waiting = await dba_rows(
            stores,
            "SELECT ID FROM information_schema.PROCESSLIST "
            "WHERE DB = %s AND STATE = 'User lock' AND INFO LIKE %s",
            stores.rel_database,
            "%GET_LOCK%",
        )
        if waiting:
            [(thread,)] = waiting
            return int(thread)
        if time.monotonic() > deadline:
            raise AssertionError(f"no batch reached the gate within {seconds:g} s")
        await asyncio.sleep(0.05)


def a_year_ago() -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(days=365)).isoformat()


def kill(served: Served) -> None:
    served.process.send_signal(signal.SIGKILL)
    assert served.process.wait(timeout=10) == -signal.SIGKILL


async def test_a_sweep_killed_half_way_is_finished_by_the_next_node_without_loss_or_duplicate(
    amqp_url: str, stores: Stores, start_served: StartServed, figures: Figures
) -> None:
    gate = f"{stores.rel_database}_gate"
    await dba_rows(stores, slowed(shipped_procedure(), gate))
    old, recent = await seed(stores, OLD)
    holder = await dba_connect(stores)  # holds the gate until the node is killed
    try:
        async with holder.cursor() as cursor:
            await cursor.execute("SELECT GET_LOCK(%s, 0)", (gate,))
            assert await cursor.fetchall() == ((1,),)
        env, settings = unique_name("retention"), calgon_settings("rel") + SWEEPER
        first = start_served(env=env, name="n1", extra=settings)
        async with client_of(first, amqp_url, timeout=10) as client:
            await wait_ready(first, client)
            handle = await client.submit(
                "spew_note", "retention", {"before": a_year_ago(), "limit": BATCH}
            )
            thread = await gated_call(stores)
            at_kill = await handle.refresh(timeout=5)
            kill(first)
            await dba_rows(stores, f"KILL CONNECTION {thread}")
            archived_at_kill = len(await ids(stores, "spn_notes_archive"))
            async with holder.cursor() as cursor:
                await cursor.execute("SELECT RELEASE_LOCK(%s)", (gate,))

            second = start_served(env=env, name="n2", extra=settings)
            await wait_ready(second, client)
            records = await handle.result(poll=0.1, timeout=90)
    finally:
        holder.close()

    done = handle.ticket
    figures(
        {
            "batches_done_at_kill": at_kill["steps_done"],
            "archived_at_kill": archived_at_kill,
            "batches": done["steps_done"],
        }
    )
    assert (at_kill["state"], at_kill["attempts"]) == ("running", 1)
    assert at_kill["steps_done"] == GATED_AT // BATCH
    assert archived_at_kill == GATED_AT, "the interrupted batch's copy was rolled back"
    assert (done["state"], done["attempts"]) == ("succeeded", 2)
    archive = await ids(stores, "spn_notes_archive")
    assert len(archive) == len(set(archive)) == OLD, "every old note archived exactly once"
    assert set(archive) == old
    assert set(await ids(stores, "spn_notes")) == recent, "none of the old left, every new kept"
    # The interrupted batch was rolled back, so the step ran again whole: every batch is saved.
    assert records == [{"retired": BATCH}] * (OLD // BATCH)


async def test_a_node_with_the_retention_broker_records_the_sweep_and_runs_it(
    amqp_url: str, stores: Stores, start_served: StartServed
) -> None:
    old, recent = await seed(stores, 3)
    settings = SWEEPER + calgon_settings("rel").replace(
        "[calgon]\n", '[calgon]\nretention_broker = "sweeper"\nretention_interval = 3600\n', 1
    )
    node = start_served(env=unique_name("retention"), extra=settings)
    async with client_of(node, amqp_url, timeout=10) as client:
        await wait_ready(node, client)
        ticket = await recorded_sweep(stores)
        assert ticket["principal"] == "beds.retention"
        handle = TicketHandle(client, {"ticket": ticket["ticket_id"]})
        records = await handle.result(poll=0.1, timeout=30)
    assert records == [{"retired": 3}]
    before = dt.datetime.fromisoformat(handle.ticket["params"]["before"])
    assert abs(before - (dt.datetime.now(dt.UTC) - dt.timedelta(days=365))) < dt.timedelta(
        minutes=5
    )
    assert handle.ticket["params"]["limit"] == 1000  # spew_note's batch_size
    assert set(await ids(stores, "spn_notes_archive")) == old
    assert set(await ids(stores, "spn_notes")) == recent


async def recorded_sweep(stores: Stores, seconds: float = 30.0) -> dict[str, Any]:
    """The sweep's ticket in the ticket store, once a node recorded it (as the DBA reads it)."""
    deadline = time.monotonic() + seconds
    while True:
        found = await dba_rows(
            stores,
            "SELECT ticket_id, principal FROM beds_tickets "
            "WHERE template = 'spew_note' AND operation = 'retention'",
        )
        if found:
            [(ticket_id, principal)] = found
            return {"ticket_id": ticket_id, "principal": principal}
        if time.monotonic() > deadline:
            raise AssertionError(f"no retention ticket was recorded within {seconds:g} s")
        await asyncio.sleep(0.1)
