"""A node SIGKILLed in the middle of a keyed write: the write runs exactly once, on both stores.

A test plugin (found through a ``.dist-info`` folder on ``PYTHONPATH``, as an installed package
would be) holds one marked request at a chosen point and says so in a file; the test then kills
the node with SIGKILL and starts another node of the same role. RabbitMQ redelivers the request
that the dead node never acknowledged; the caller, still waiting, must get ``201`` with the same
record, and the store must hold that record exactly once:

- ``before``: killed before the store call (``beds_before_dispatch``): nothing applied, the
  redelivery runs it;
- ``after``: killed after the store committed and before the reply (``beds_after_dispatch``):
  the redelivery is answered from the idempotency key, never run again.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pymongo import AsyncMongoClient

from .conftest import StartServed, Stores, client_of, stored_posts, wait_ready

if TYPE_CHECKING:
    from tests.conftest import Figures

pytestmark = [pytest.mark.mariadb, pytest.mark.mongodb]

PLUGIN = '''
"""Holds the request whose payload carries the marker, at the point the test chose."""

import asyncio
import os
import pathlib

from beds import hookimpl

MARKER = os.environ["BEDS_TEST_HOLD_MARKER"]
WHERE = os.environ["BEDS_TEST_HOLD_WHERE"]
FLAG = pathlib.Path(os.environ["BEDS_TEST_HOLD_FILE"])


async def _hold(request) -> None:
    if MARKER in str(request.payload):
        FLAG.write_text(request.meta.event_id, encoding="utf-8")
        await asyncio.sleep(3600)


@hookimpl
def beds_before_dispatch(request, template):
    return _hold(request) if WHERE == "before" else None


@hookimpl
def beds_after_dispatch(request, response):
    return _hold(request) if WHERE == "after" else None
'''


def install_plugin(folder: Path) -> Path:
    """A folder that, on ``PYTHONPATH``, makes the hold plugin an installed distribution."""
    folder.mkdir()
    (folder / "beds_test_hold.py").write_text(PLUGIN, encoding="utf-8")
    info = folder / "beds_test_hold-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: beds-test-hold\nVersion: 0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text("[beds]\nhold = beds_test_hold\n", encoding="utf-8")
    return folder


async def profiles_with(stores: Stores, handle: str) -> list[dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stores.mongo_uri)
    try:
        cursor = client[stores.mongo_database]["spf_profiles"].find({"handle": handle})
        return await cursor.to_list()
    finally:
        await client.close()


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("store", ["rel", "rec"])
async def test_a_keyed_write_runs_once_across_a_sigkill(
    store: str,
    where: str,
    amqp_url: str,
    stores: Stores,
    start_served: StartServed,
    tmp_path: Path,
    figures: Figures,
) -> None:
    marker = f"hold{uuid.uuid4().hex[:12]}"
    flag = tmp_path / "held"
    environ = {
        "PYTHONPATH": str(install_plugin(tmp_path / "plugin")),
        "BEDS_TEST_HOLD_MARKER": marker,
        "BEDS_TEST_HOLD_WHERE": where,
        "BEDS_TEST_HOLD_FILE": str(flag),
    }
    victim = start_served(name="victim", environ=environ)
    if store == "rel":
        template, payload = "spew_post", {"author": marker[:32], "body": marker}
    else:
        template, payload = "spew_profile", {"handle": marker, "display_name": "Held"}

    async with client_of(victim, amqp_url, timeout=60) as client:
        await wait_ready(victim, client)
        call = asyncio.create_task(
            client.call(template, "create", payload, idempotency_key=f"kill.{marker}")
        )
        deadline = time.monotonic() + 30
        while not flag.exists():
            assert time.monotonic() < deadline, f"the request was not held:\n{victim.output()}"
            assert not call.done(), f"answered without being held: {call.result()}"
            await asyncio.sleep(0.02)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(timeout=10)
        killed_at = time.monotonic()
        # Another node of the role, without the plugin, takes the redelivered request.
        survivor = start_served(env=victim.env, name="survivor")
        response = await asyncio.wait_for(call, 60)
        answered_after = time.monotonic() - killed_at
    assert response.ok, response.error
    assert response.status == 201
    if store == "rel":
        rows = await stored_posts(stores, marker[:32])
        assert list(rows.elements()) == [(response.data["id"], marker)]
    else:
        documents = await profiles_with(stores, marker)
        assert len(documents) == 1
        assert str(documents[0]["_id"]) == response.data["id"]
    assert "Traceback" not in survivor.output()
    figures(
        {
            "store": store,
            "killed": where,
            "answered_s_after_kill": round(answered_after, 2),
            "rows": 1,
            "answered_by": response.meta.node,
        }
    )
