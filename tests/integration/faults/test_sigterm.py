"""SIGTERM under load: in-flight requests complete, nothing is left unacknowledged, exit 0.

Reliability issue, scenario 5. A real ``beds run --config FILE`` process serves one environment.
A client in the test process keeps it busy (spew_post creates and fetches, pings); the test sends
SIGTERM in the middle. Every request sent is accounted for: answered by the stopping node, or
still waiting in its queue, never taken by the node and dropped. A second node, started after the
first exited, answers what was left. A second signal during the drain makes the node exit at once
(``128 + signal``); what it held goes back to the queue.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiormq
import attrs
import pytest
from pamqp.commands import Basic

from beds.client import BedsClient
from beds.codec import decode_request
from beds.config import load_config
from beds.envelopes import Operation, Response
from beds.errors import BrokerUnavailable, ReplyTimeout
from beds.node import BedsNode
from beds.routing import PING_TEMPLATE
from beds.testing import unique_name
from tests.integration.nodes import (
    Served,
    StartServed,
    Stores,
    client_of,
    dba_connect,
    stored_posts,
    wait_exit,
    wait_ready,
)

if TYPE_CHECKING:
    from tests.helpers import Figures

pytestmark = [pytest.mark.mariadb, pytest.mark.mongodb]

BROKERS = ("rBroker", "wBroker", "mBroker")
CALL_TIMEOUT = 30.0
"""Long enough for a request to wait out the drain, the exit and a second node's start."""


@attrs.define
class QueueState:
    ready: int
    consumers: int
    redelivered: int
    requests: collections.Counter[str]
    """:func:`describe` of every message in the queues."""


async def inspect_queues(amqp_url: str, env: str) -> QueueState:
    """What the role's queues hold: passively declared, then read without acknowledging.

    Closing the channel puts every message back (marked redelivered, which the next node counts).
    """
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        state = QueueState(0, 0, 0, collections.Counter())
        for broker in BROKERS:
            queue = f"beds.{env}.appServer.{broker}"
            declared = await channel.queue_declare(queue, passive=True)
            state.ready += declared.message_count or 0
            state.consumers += declared.consumer_count or 0
            while True:
                got = await channel.basic_get(queue, no_ack=False)
                if not isinstance(got.delivery, Basic.GetOk):
                    break
                state.redelivered += bool(got.delivery.redelivered)
                request = decode_request(got.body, got.header.properties.content_type)
                state.requests[describe(request.template, request.operation, request.payload)] += 1
        await channel.close()
    finally:
        await connection.close()
    return state


@contextlib.asynccontextmanager
async def second_node(served: Served) -> AsyncIterator[BedsNode]:
    """A node of the same role and environment, named n2, in this process."""
    path = served.config.with_name(f"{served.env}-n2.toml")
    path.write_text(
        served.config.read_text(encoding="utf-8").replace('name = "n1"', 'name = "n2"'),
        encoding="utf-8",
    )
    async with BedsNode(load_config(path, environ={})) as node:
        yield node


def describe(template: str, operation: Operation, payload: dict[str, Any]) -> str:
    """What a request is, as both the caller and a message in a queue can tell."""
    return f"{template} {operation.value} {sorted(payload.items())}"


@attrs.define
class Call:
    kind: str
    what: str
    """:func:`describe` of the request: unique, except for pings."""
    sent: float
    code: str = "pending"
    node: str = ""
    received: float = 0.0
    data: Any = None


class Load:
    """Closed-loop callers mixing creates, fetches of what was created, and pings."""

    def __init__(self, client: BedsClient, author: str, workers: int) -> None:
        self.client = client
        self.author = author
        self.calls: list[Call] = []
        self.created: dict[str, int] = {}
        self.stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._worker(w)) for w in range(workers)]

    async def _call(self, kind: str, template: str, op: Operation, payload: Any) -> Call:
        call = Call(kind, describe(template, op, payload or {}), time.monotonic())
        self.calls.append(call)
        try:
            response: Response = await self.client.call(template, op, payload)
            call.code = "ok" if response.error is None else response.error.code
            call.node = response.meta.node
            call.data = response.data
        except ReplyTimeout:
            call.code = "no reply"
        except BrokerUnavailable:
            call.code = "broker unavailable"
        call.received = time.monotonic()
        return call

    async def _worker(self, worker: int) -> None:
        number = 0
        while not self.stop.is_set():
            body = f"{self.author} {worker} {number}"
            kind = ("create", "ping")[number % 2] if worker % 3 else "create"
            number += 1
            if kind == "ping":
                await self._call("ping", PING_TEMPLATE, Operation.PING, None)
                continue
            created = await self._call(
                "create", "spew_post", Operation.CREATE, {"author": self.author, "body": body}
            )
            if created.code == "ok":
                self.created[body] = created.data["id"]
                if not self.stop.is_set():
                    await self._call(
                        "fetch",
                        "spew_post",
                        Operation.FETCH,
                        {"query": "by_id", "params": {"id": created.data["id"]}},
                    )

    async def finish(self, seconds: float) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), seconds)


async def test_sigterm_under_load_drains_and_exits_0(
    start_served: StartServed, amqp_url: str, stores: Stores, figures: Figures
) -> None:
    drain_seconds = 5.0
    served = start_served(drain_seconds=drain_seconds, instances=2)
    author = unique_name("term")[:30]
    async with client_of(served, amqp_url, timeout=CALL_TIMEOUT) as client:
        await wait_ready(served, client)
        load = Load(client, author, workers=48)
        await asyncio.sleep(1.5)
        sigterm_at = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        exit_seconds = await wait_exit(served.process, drain_seconds + 5)
        load.stop.set()  # no new requests once the node is gone
        await asyncio.sleep(0.2)  # replies the node published just before exiting
        assert served.process.returncode == 0, served.output()
        pending = collections.Counter(c.what for c in load.calls if c.code == "pending")
        queues = await inspect_queues(amqp_url, served.env)
        async with second_node(served):
            await load.finish(CALL_TIMEOUT)

    calls = load.calls
    by_node = collections.Counter(c.node for c in calls if c.code == "ok")
    codes = collections.Counter(c.code for c in calls)
    sent_before = [c for c in calls if c.sent < sigterm_at]
    drained = [c for c in calls if c.node == "n1" and c.received > sigterm_at]
    posts = await stored_posts(stores, author)
    not_once = [b for b, i in load.created.items() if posts[(i, b)] != 1]
    figures(
        {
            "sent": len(calls),
            "sent_before_sigterm": len(sent_before),
            "answered_ok": codes["ok"],
            "failed_by_code": {c: n for c, n in codes.items() if c != "ok"},
            "answered_by": dict(by_node),
            "answered_by_n1_after_sigterm": len(drained),
            "in_queue_at_exit": queues.ready,
            "redelivered_at_exit": queues.redelivered,
            "consumers_at_exit": queues.consumers,
            "exit_code": served.process.returncode,
            "exit_s": round(exit_seconds, 2),
            "drain_seconds": drain_seconds,
            "creates_ok": len(load.created),
            "rows_not_exactly_once": len(not_once),
            "lost": len(calls) - codes["ok"],
        }
    )

    assert exit_seconds <= drain_seconds + 3, f"exit took {exit_seconds:.1f} s"
    assert "ready" in served.output()
    assert queues.consumers == 0
    assert queues.ready == pending.total(), "the queues hold other messages than the unanswered"
    assert queues.requests == pending
    assert queues.redelivered == 0, "the stopping node took messages and left them unacknowledged"
    assert codes == {"ok": len(calls)}, codes
    assert by_node["n1"] + by_node["n2"] == len(calls)
    assert by_node["n2"] == pending.total(), "the second node answered more than was queued"
    assert not not_once, f"creates not stored exactly once: {not_once[:5]}"


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_second_signal_during_the_drain_exits_at_once(
    second: signal.Signals,
    start_served: StartServed,
    amqp_url: str,
    stores: Stores,
    figures: Figures,
) -> None:
    """Handlers stuck on a table lock keep the drain waiting; a second signal ends it."""
    served = start_served(drain_seconds=20, instances=2)
    database = stores.rel_database
    dba = await dba_connect(stores)
    stuck = 2
    try:
        async with client_of(served, amqp_url, timeout=CALL_TIMEOUT) as client:
            await wait_ready(served, client)
            async with dba.cursor() as cursor:
                await cursor.execute("LOCK TABLES spp_posts WRITE")
            fetches = [
                asyncio.create_task(client.fetch("spew_post", "by_id", {"id": i}))
                for i in range(1, stuck + 1)
            ]
            await wait_for_lock_waiters(dba, database, stuck)
            served.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(1.0)
            draining = served.process.poll() is None
            served.process.send_signal(second)
            exit_seconds = await wait_exit(served.process, 5)
            async with dba.cursor() as cursor:
                await cursor.execute("UNLOCK TABLES")
            queues = await inspect_queues(amqp_url, served.env)
            async with second_node(served):
                answered = await asyncio.wait_for(asyncio.gather(*fetches), CALL_TIMEOUT)
    finally:
        dba.close()

    figures(
        {
            "second_signal": second.name,
            "stuck_in_handlers": stuck,
            "still_draining_1s_after_sigterm": draining,
            "exit_code": served.process.returncode,
            "exit_s_after_second_signal": round(exit_seconds, 2),
            "in_queue_at_exit": queues.ready,
            "redelivered_at_exit": queues.redelivered,
            "answered_by_second_node": len(answered),
            "lost": stuck - len(answered),
        }
    )
    assert draining, "the node did not wait for its stuck handlers"
    assert exit_seconds < 3, f"exit took {exit_seconds:.1f} s after the second signal"
    assert served.process.returncode == 128 + second.value, served.output()
    assert "second signal: exiting now" in served.output()
    assert queues.ready == stuck, "what the node held did not go back to the queue"
    assert queues.redelivered == stuck
    assert len(answered) == stuck


async def wait_for_lock_waiters(dba: Any, database: str, count: int, seconds: float = 10) -> None:
    """Until ``count`` sessions on ``database`` wait for a table lock (the handlers are stuck)."""
    deadline = time.monotonic() + seconds
    while True:
        async with dba.cursor() as cursor:
            await cursor.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                "WHERE DB = %s AND STATE LIKE %s",
                (database, "Waiting for table%"),
            )
            (waiting,) = await cursor.fetchone()
        if waiting >= count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{waiting} of {count} handlers reached the table lock")
        await asyncio.sleep(0.05)
