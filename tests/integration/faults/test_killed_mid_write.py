"""A node SIGKILLed in the middle of a keyed write: the write runs exactly once, on both stores.

A test plugin (found through a ``.dist-info`` folder on ``PYTHONPATH``, as an installed package
would be) holds one marked request at a chosen point and says so in a file; the test then kills
the node with SIGKILL and starts another node of the same role. RabbitMQ redelivers the request
that the dead node never acknowledged; the caller, still waiting, must end with ``201`` and the
same record, and the store must hold that record exactly once:

- ``before``: killed before the store call (``beds_before_dispatch``): nothing applied, the
  redelivery runs it;
- ``mid``: killed inside the store call, after the write and before its key holds the outcome.
  REL: the write procedure ran in the key's transaction, which never committed; MariaDB rolls it
  back when the connection drops, and the redelivery runs it once. REC: the document is inserted
  and the claim has no result; the redelivery finds the dead attempt's lease live and answers
  ``BEDS-409W`` saying when to ask again (never later than the lease), and asking again then is
  answered ``201`` from the document (``mid-late``: the survivor starts after the lease lapsed
  and answers the redelivery itself, from the document). Both on the path of servers without
  ``bulkWrite``, where the result is recorded by a command of its own. With ``bulkWrite`` the
  record, its journal entry and the key's result are one command, so the window left is
  ``claimed``: killed after the claim, before that command; the redelivery is in doubt until
  the lease lapses (``BEDS-409W``), then finds no document and writes it once;
- ``after``: killed after the store committed and before the reply (``beds_after_dispatch``):
  the redelivery is answered from the idempotency key, never run again.

The ``mid`` hold wraps an adapter internal from the plugin (REC ``RecAdapter._create``, REL
``beds_rel.adapter.write_once``): no hook is there, and production code has no test switch.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pymongo import AsyncMongoClient

from tests.integration.nodes import StartServed, Stores, client_of, stored_posts, wait_ready

if TYPE_CHECKING:
    from tests.helpers import Figures

pytestmark = [pytest.mark.mariadb, pytest.mark.mongodb]

HANDLER_BUDGET = 4.0
SETTLE_GRACE = 2.0
LEASE = HANDLER_BUDGET + SETTLE_GRACE
"""How long an attempt holds an idempotency key without an outcome (REC answers 409W meanwhile)."""
RELIABILITY = f"""
[reliability]
handler_budget = {HANDLER_BUDGET}
settle_grace = {SETTLE_GRACE}
"""

PLUGIN = '''
"""Holds the request whose payload carries the marker, at the point the test chose."""

import asyncio
import os
import pathlib

import beds_rec.adapter
import beds_rel.adapter
from beds import hookimpl

MARKER = os.environ["BEDS_TEST_HOLD_MARKER"]
WHERE = os.environ["BEDS_TEST_HOLD_WHERE"]
FLAG = pathlib.Path(os.environ["BEDS_TEST_HOLD_FILE"])


async def _hold(event_id) -> None:
    FLAG.write_text(event_id, encoding="utf-8")
    await asyncio.sleep(3600)


@hookimpl
def beds_before_dispatch(request, template):
    if WHERE == "before" and MARKER in str(request.payload):
        return _hold(request.meta.event_id)
    return None


@hookimpl
def beds_after_dispatch(request, response):
    if WHERE == "after" and MARKER in str(request.payload):
        return _hold(request.meta.event_id)
    return None


if WHERE == "mid":
    _create = beds_rec.adapter.RecAdapter._create

    async def _create_then_hold(self, template, record, ctx):
        marked = MARKER in str(record)
        if marked:
            self.bulk_writes = False  # the path that inserts first and records the result after
        created = await _create(self, template, record, ctx)  # inserted, claim not completed
        if marked:
            await _hold(ctx.event_id)
        return created

    beds_rec.adapter.RecAdapter._create = _create_then_hold

    _write_once = beds_rel.adapter.write_once

    async def _write_once_holding(conn, run, ctx, body):
        async def run_then_hold(conn, call, call_args):
            rows = await run(conn, call, call_args)
            write = call.name == "spp_create"
            if write and MARKER in str(call_args):  # the write ran, not committed
                await _hold(ctx.event_id)
            return rows

        return await _write_once(conn, run_then_hold, ctx, body)

    beds_rel.adapter.write_once = _write_once_holding

if WHERE == "claimed":
    _create_claimed = beds_rec.adapter.RecAdapter._create

    async def _hold_then_create(self, template, record, ctx):
        if MARKER in str(record):  # the key is claimed; its one bulkWrite is not sent
            await _hold(ctx.event_id)
        return await _create_claimed(self, template, record, ctx)

    beds_rec.adapter.RecAdapter._create = _hold_then_create
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


@pytest.mark.parametrize(
    ("store", "where"),
    [
        ("rel", "before"),
        ("rel", "mid"),
        ("rel", "after"),
        ("rec", "before"),
        ("rec", "claimed"),
        ("rec", "mid"),
        ("rec", "mid-late"),
        ("rec", "after"),
    ],
)
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
        "BEDS_TEST_HOLD_WHERE": where.removesuffix("-late"),
        "BEDS_TEST_HOLD_FILE": str(flag),
    }
    victim = start_served(name="victim", environ=environ, extra=RELIABILITY)
    if store == "rel":
        template, payload = "spew_post", {"author": marker[:32], "body": marker}
    else:
        template, payload = "spew_profile", {"handle": marker, "display_name": "Held"}
    key = f"kill.{marker}"

    in_doubt: list[int] = []
    async with client_of(victim, amqp_url, timeout=60) as client:
        await wait_ready(victim, client)
        call = asyncio.create_task(client.call(template, "create", payload, idempotency_key=key))
        deadline = time.monotonic() + 30
        while not flag.exists():
            assert time.monotonic() < deadline, f"the request was not held:\n{victim.output()}"
            assert not call.done(), f"answered without being held: {call.result()}"
            await asyncio.sleep(0.02)
        held_at = time.monotonic()  # the key was claimed a moment before
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(timeout=10)
        killed_at = time.monotonic()
        if where == "mid-late":
            await asyncio.sleep(LEASE + 0.5)  # nothing serves the role until the lease lapsed
        # Another node of the role, without the plugin, takes the redelivered request.
        survivor = start_served(env=victim.env, name="survivor", extra=RELIABILITY)
        response = await asyncio.wait_for(call, 60)
        answers = [response.error.code if response.error else response.status]
        while response.error is not None and response.error.code == "BEDS-409W":
            # The dead attempt's lease is live: ask again when the error says, as a client does.
            assert store == "rec", response.error
            (after,) = (
                int(n) for d in response.error.details for n in re.findall(r"in (\d+) s", d)
            )
            assert after <= LEASE, response.error.details
            assert time.monotonic() + after <= held_at + LEASE + 2, "asked to wait past the lease"
            in_doubt.append(after)
            await asyncio.sleep(after)
            response = await client.call(template, "create", payload, idempotency_key=key)
            answers.append(response.error.code if response.error else response.status)
            assert len(answers) <= 3, answers
        answered_after = time.monotonic() - killed_at
        resolved_after_claim = time.monotonic() - held_at
    assert response.ok, response.error
    assert response.status == 201
    if store == "rel":
        rows = await stored_posts(stores, marker[:32])
        assert list(rows.elements()) == [(response.data["id"], marker)]
    else:
        documents = await profiles_with(stores, marker)
        assert len(documents) == 1
        assert str(documents[0]["_id"]) == response.data["id"]
    if where in ("mid", "claimed") and store == "rec":
        assert in_doubt, "the redelivery found no live lease: the survivor started too late?"
        # In doubt no longer than the dead attempt's lease (plus a resend's round trip).
        assert resolved_after_claim <= LEASE + 2, resolved_after_claim
    assert "Traceback" not in survivor.output()
    figures(
        {
            "store": store,
            "killed": where,
            "answers": answers,
            "asked_to_wait_s": in_doubt,
            "answered_201_s_after_kill": round(answered_after, 2),
            "resolved_s_after_claim": round(resolved_after_claim, 2),
            "rows": 1,
            "answered_by": response.meta.node,
        }
    )
