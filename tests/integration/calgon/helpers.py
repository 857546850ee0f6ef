"""Helpers of the CALGON end-to-end tests: a slow test template, node settings, the DBA's view.

Fixtures are in ``conftest.py``; tests import these from here, never from a conftest.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from beds.client import TicketHandle
from tests.integration.nodes import Served, Stores, beds_command, clean_environ, dba_connect

__all__ = (
    "SLOW_OPERATION",
    "SLOW_PROCEDURE",
    "SLOW_STEPS",
    "SLOW_TEMPLATE",
    "StartAdmin",
    "beds_json",
    "calgon_settings",
    "dba_rows",
    "install_slow_plugin",
    "launch_admin",
    "lease_owner",
    "wait_logged",
    "wait_ticket",
)

StartAdmin = Callable[[Served], Served]
"""The ``start_admin`` fixture: an admin node of a served node's environment."""

SLOW_TEMPLATE = "slow_count"
SLOW_OPERATION = "count"
SLOW_STEPS = 6

_SLOW_TOML = f"""
name = "{SLOW_TEMPLATE}"
store = "rel"
tla = "slw"
description = "Counts to three once per step, slowly: the CALGON takeover tests' template."
key = ["step", "n"]

[access]
submit = ["member"]

[fields.step]
type = "int"

[fields.n]
type = "int"

[long_operations.{SLOW_OPERATION}]
steps = {SLOW_STEPS}
step_timeout = 30
procedure = "slw_count"

[long_operations.{SLOW_OPERATION}.params.pause]
type = "float"
default = 1.0
minimum = 0
maximum = 10
"""

SLOW_PROCEDURE = """
CREATE OR REPLACE PROCEDURE slw_count(IN p_pause DOUBLE, IN p_step INT, IN p_steps INT)
READS SQL DATA
BEGIN
    DO SLEEP(p_pause);
    SELECT p_step AS step, seq AS n
      FROM (SELECT 1 AS seq UNION ALL SELECT 2 UNION ALL SELECT 3) AS numbers
     ORDER BY seq;
END
"""
"""The DBA's procedure of ``slow_count``: a pause, then three records that name their step."""

_PLUGIN = f'''
"""Registers the CALGON tests' slow_count template (tests/integration/calgon)."""

from beds import hookimpl

TEMPLATE = """{_SLOW_TOML}"""


@hookimpl
def beds_register_templates(registry):
    registry.add_text(TEMPLATE, source="beds_test_slow/{SLOW_TEMPLATE}.toml")
'''


def install_slow_plugin(folder: Path) -> Path:
    """A folder that, on ``PYTHONPATH``, installs the plugin registering ``slow_count``."""
    folder.mkdir()
    (folder / "beds_test_slow.py").write_text(_PLUGIN, encoding="utf-8")
    info = folder / "beds_test_slow-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: beds-test-slow\nVersion: 0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text("[beds]\nslow = beds_test_slow\n", encoding="utf-8")
    return folder


def calgon_settings(
    store: str = "rel",
    *,
    lease_seconds: float = 2.0,
    poll_seconds: float = 0.2,
    max_attempts: int = 3,
) -> str:
    """The ``[calgon]`` and ``[lineage]`` tables of a test node (short leases, quick events)."""
    return f"""
[calgon]
store = "{store}"
lease_seconds = {lease_seconds}
poll_seconds = {poll_seconds}
max_attempts = {max_attempts}

[lineage]
flush_interval = 0.02
"""


async def dba_rows(stores: Stores, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one statement on the test's MariaDB database as its DBA; its rows (committed)."""
    conn = await dba_connect(stores)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(statement, args or None)  # no args: no %-formatting
            rows = list(await cursor.fetchall())
        await conn.commit()
    finally:
        conn.close()
    return rows


async def lease_owner(stores: Stores, store: str, ticket_id: str) -> str:
    """The node holding the ticket's lease, read from the ticket store as its DBA would."""
    if store == "rel":
        [(owner,)] = await dba_rows(
            stores, "SELECT lease_owner FROM beds_tickets WHERE ticket_id = %s", ticket_id
        )
        return str(owner or "")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stores.mongo_uri)
    try:
        found = await client[stores.mongo_database]["beds_tickets"].find_one({"_id": ticket_id})
    finally:
        await client.close()
    assert found is not None, f"no ticket {ticket_id} in beds_tickets"
    return str(found.get("lease_owner") or "")


async def wait_ticket(
    handle: TicketHandle,
    condition: Callable[[dict[str, Any]], bool],
    what: str,
    seconds: float = 30.0,
) -> dict[str, Any]:
    """Read the ticket until ``condition(ticket)``; fail after ``seconds`` naming ``what``."""
    deadline = time.monotonic() + seconds
    while True:
        ticket = await handle.refresh(timeout=5)
        if condition(ticket):
            return ticket
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds:g} s: {ticket}")
        await asyncio.sleep(0.1)


async def wait_logged(served: Served, text: str, seconds: float = 30.0) -> None:
    """Until the node's log holds ``text`` (``IPL brokers: ok``: its workers run)."""
    deadline = time.monotonic() + seconds
    while text not in served.output():
        if served.process.poll() is not None:
            raise AssertionError(f"the node exited early:\n{served.output()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged within {seconds:g} s:\n{served.output()}")
        await asyncio.sleep(0.05)


def launch_admin(served: Served, name: str = "adm1") -> Served:
    """Start an admin node (it stores the events ``beds lineage`` reads) of ``served``'s env.

    It runs the same config file with ``--node admin``; the caller stops it (``stop_served``).
    """
    log = served.config.with_name(f"{served.env}-{name}.log")
    with log.open("wb") as out:
        command = ("run", "--config", str(served.config), "--node", "admin")
        process = subprocess.Popen(
            [sys.executable, "-m", "beds", *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**clean_environ(), "BEDS__NODE__NAME": name},
        )
    return Served(process, served.config, log, served.env)


def beds_json(*args: str) -> Any:
    """Run ``beds ARGS``; its standard output as JSON (the command must succeed)."""
    result = beds_command(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)
