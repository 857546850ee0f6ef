"""The warehouse lane: a segundo node runs the retention sweeps; an appServer node never does.

Real MariaDB, RabbitMQ and ``beds run`` nodes of one environment. An admin submits spew_note's
sweep through the appServer node (``app1``, default-lane workers polling every 0.2 s): it is
recorded on the ``warehouse`` lane and stays queued, unclaimed, however long the appServer
polls. A segundo node (``seg1``: the seed whBroker, ``type = "tickets"``, ``lane =
"warehouse"``) then starts: it records its own scheduled sweep and runs both. Every old note is
archived once, every recent one stays, the appServer's log names no sweep, and seg1's
``/metrics`` counts the retired notes (``beds_retention_retired_total``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from beds.testing import unique_name
from tests.integration.calgon.helpers import calgon_settings, dba_rows
from tests.integration.nodes import (
    Served,
    StartServed,
    Stores,
    clean_environ,
    client_of,
    stop_served,
    wait_ready,
)

pytestmark = [pytest.mark.mariadb, pytest.mark.mongodb]

OLD, RECENT = 30, 4
_TELEMETRY = re.compile(r"IPL telemetry: ok \((http://[^)\s]+)\)")


async def seed(stores: Stores) -> tuple[set[int], set[int]]:
    """``OLD`` notes older than a year and ``RECENT`` new ones; their ids."""
    await dba_rows(
        stores,
        "INSERT INTO spn_notes (author, body, created_at) "
        "SELECT 'a', CONCAT('old ', seq), "
        f"UTC_TIMESTAMP(6) - INTERVAL 400 DAY - INTERVAL seq SECOND FROM seq_1_to_{OLD}",
    )
    old = {row[0] for row in await dba_rows(stores, "SELECT id FROM spn_notes")}
    await dba_rows(
        stores,
        f"INSERT INTO spn_notes (author, body) SELECT 'ann', 'new' FROM seq_1_to_{RECENT}",
    )
    recent = {row[0] for row in await dba_rows(stores, "SELECT id FROM spn_notes")} - old
    return old, recent


def launch_segundo(app: Served, name: str = "seg1") -> Served:
    """A segundo node of ``app``'s environment, from its config file (``--node segundo``)."""
    log = app.config.with_name(f"{app.env}-{name}.log")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "beds", "run", "--config", str(app.config), "--node", "segundo"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**clean_environ(), "BEDS__NODE__NAME": name},
        )
    return Served(process, app.config, log, app.env)


async def logged(served: Served, pattern: re.Pattern[str], seconds: float = 30.0) -> str:
    """The first group of ``pattern`` in the node's log, once it is there."""
    deadline = time.monotonic() + seconds
    while (found := pattern.search(served.output())) is None:
        if served.process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{pattern.pattern!r} not logged:\n{served.output()}", pytrace=False)
        await asyncio.sleep(0.1)
    return found.group(1)


def retired_metric(url: str) -> dict[str, float]:
    """``beds_retention_retired_total`` by template, scraped from ``url``/metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as reply:
        text = reply.read().decode("utf-8")
    return {
        sample.labels["template"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "beds_retention_retired_total"
    }


async def test_a_segundo_node_runs_the_sweeps_and_an_appserver_node_never_claims_them(
    amqp_url: str, stores: Stores, start_served: StartServed
) -> None:
    old, recent = await seed(stores)
    app = start_served(env=unique_name("warehouse"), name="app1", extra=calgon_settings("rel"))
    segundo: Served | None = None
    try:
        async with client_of(app, amqp_url, timeout=10) as client:
            await wait_ready(app, client)
            before = (dt.datetime.now(dt.UTC) - dt.timedelta(days=365)).isoformat()
            handle = await client.submit("spew_note", "retention", {"before": before, "limit": 7})
            assert handle.ticket["lane"] == "warehouse"
            await asyncio.sleep(2.0)  # ten polls of app1's default-lane workers
            waiting = await handle.refresh(timeout=5)
            assert (waiting["state"], waiting["attempts"]) == ("queued", 0), "app1 claimed it"

            segundo = launch_segundo(app)
            records = await handle.result(poll=0.1, timeout=60)
            metrics_url = await logged(segundo, _TELEMETRY)
            scheduled = await logged(
                segundo, re.compile(r"retention sweep of spew_note recorded: ticket (\S+),")
            )
            await logged(segundo, re.compile(rf"ticket ({re.escape(scheduled)}) succeeded"))
            counted = await asyncio.to_thread(retired_metric, metrics_url)
    finally:
        if segundo is not None:
            stop_served(segundo)

    done = handle.ticket
    assert (done["state"], done["attempts"], done["lane"]) == ("succeeded", 1, "warehouse")
    swept = sum(record["retired"] for record in records)
    assert f"ticket {done['ticket']} succeeded" in segundo.output(), "seg1 ran the submitted one"
    assert done["ticket"] not in app.output(), "app1 never held the submitted sweep"
    assert scheduled not in app.output(), "nor the scheduled one"
    archive = [row[0] for row in await dba_rows(stores, "SELECT id FROM spn_notes_archive")]
    assert sorted(archive) == sorted(old), "every old note archived exactly once"
    assert {row[0] for row in await dba_rows(stores, "SELECT id FROM spn_notes")} == recent
    # Both sweeps (the submitted one, the one seg1 scheduled) together retired every old note.
    assert 0 < swept <= OLD
    assert counted == {"spew_note": OLD}, "seg1 counted every note its sweeps retired"
    lanes = await dba_rows(
        stores, "SELECT DISTINCT lane FROM beds_tickets WHERE operation = 'retention'"
    )
    assert lanes == [("warehouse",)]
