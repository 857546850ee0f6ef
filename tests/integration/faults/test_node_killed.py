"""Scenario 1: two nodes serve one role; one is killed (SIGKILL) under steady write load.

Every write is answered (by the surviving node, after RabbitMQ redelivers what the dead node
held) or fails with a clear error; a write whose outcome the caller could not learn (its reply
was lost with the node) is sent again with the same idempotency key, which answers it. Then the
database must hold exactly one row per acknowledged write and none for a write that failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING

import aiormq
import pytest

from beds.client import BedsClient
from beds.envelopes import Response
from beds.errors import BrokerUnavailable, ReplyTimeout
from beds.testing import unique_name
from tests.integration.nodes import StartServed, Stores, client_of, stored_posts

if TYPE_CHECKING:
    from tests.helpers import Figures

pytestmark = [pytest.mark.mariadb, pytest.mark.mongodb]

WRITES = 480
IN_FLIGHT = 16
KILL_AFTER = 160
"""Writes answered before the first node is killed."""
REPEATS = 40
"""Writes sent twice at once with the same explicit key: never doubled."""


async def wait_for_consumers(amqp_url: str, queue: str, count: int, timeout: float = 30) -> None:
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(aiormq.exceptions.ChannelNotFoundEntity):
                ok = await channel.queue_declare(queue, passive=True)
                if ok.consumer_count is not None and ok.consumer_count >= count:
                    return
            if channel.is_closed:
                channel = await connection.channel()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{queue} did not get {count} consumers in {timeout} s")
            await asyncio.sleep(0.2)
    finally:
        await connection.close()


async def test_sigkill_of_one_of_two_nodes_loses_and_doubles_no_write(
    amqp_url: str, stores: Stores, start_served: StartServed, figures: Figures
) -> None:
    env = unique_name("kill")
    first = start_served(env=env, name="n1", instances=4)
    victim, survivor = first.process, start_served(env=env, name="n2", instances=4).process
    await wait_for_consumers(amqp_url, f"beds.{env}.appServer.wBroker", 2)

    author = f"k_{uuid.uuid4().hex[:10]}"
    keys = {f"w{i}": f"scenario1.{author}.{i}" for i in range(WRITES)}
    outcomes: dict[str, Response | BaseException] = {}
    answered = asyncio.Event()
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def write(client: BedsClient, body: str) -> None:
        async with slots:
            try:
                outcomes[body] = await client.call(
                    "spew_post",
                    "create",
                    {"author": author, "body": body},
                    idempotency_key=keys[body],
                )
            except (ReplyTimeout, BrokerUnavailable) as exc:
                outcomes[body] = exc
            if sum(isinstance(o, Response) for o in outcomes.values()) >= KILL_AFTER:
                answered.set()

    async with client_of(first, amqp_url, timeout=15) as client:
        load = asyncio.gather(*(write(client, body) for body in keys))
        await asyncio.wait_for(answered.wait(), timeout=60)
        victim.send_signal(signal.SIGKILL)
        answered_before_kill = len(outcomes)
        await asyncio.wait_for(load, timeout=120)

        # The same writes again, twice at once, with the same keys: answered from the keys.
        repeated = list(keys)[:REPEATS]
        again = await asyncio.gather(
            *(
                client.call(
                    "spew_post",
                    "create",
                    {"author": author, "body": body},
                    idempotency_key=keys[body],
                )
                for body in repeated * 2
            )
        )

        # A caller that could not learn the outcome asks again with the same key.
        unknown = [body for body, outcome in outcomes.items() if not isinstance(outcome, Response)]
        for body in unknown:
            outcomes[body] = await client.call(
                "spew_post", "create", {"author": author, "body": body}, idempotency_key=keys[body]
            )

    assert victim.wait(timeout=10) == -signal.SIGKILL
    assert survivor.poll() is None, "the surviving node must keep running"

    responses = {
        body: outcome for body, outcome in outcomes.items() if isinstance(outcome, Response)
    }
    ok = {body: response for body, response in responses.items() if response.ok}
    failed = Counter(
        response.error.code for response in responses.values() if response.error is not None
    )
    rows = Counter(body for _, body in await stored_posts(stores, author))

    figures(
        {
            "sent": WRITES,
            "answered_ok": len(ok),
            "failed_by_code": dict(failed),
            "unknown_then_resolved": len(unknown),
            "answered_before_kill": answered_before_kill,
            "answered_by": dict(Counter(response.meta.node for response in ok.values())),
            "repeats": len(again),
            "rows": sum(rows.values()),
            "doubled": sum(1 for count in rows.values() if count > 1),
            "lost": WRITES - len(responses),
        }
    )
    assert len(responses) == WRITES, "every write has an answer"
    assert not failed, f"no write should fail when one node of two survives: {failed}"
    for body, response in ok.items():
        assert rows[body] == 1, f"{body}: {rows[body]} rows for one acknowledged write"
        assert response.status == 201
    assert sum(rows.values()) == len(ok)
    for body, response in zip(repeated * 2, again, strict=True):
        assert response.ok, response.error
        assert response.data == ok[body].data, "a repeat returns the first response"
