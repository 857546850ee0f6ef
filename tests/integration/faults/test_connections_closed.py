"""Scenario 2: RabbitMQ closes every connection under load; the node and the client recover.

Reliability issue, scenario 2. A real ``beds run`` process serves one environment. A client in
the test process keeps creates (each with its own idempotency key) and pings in flight. Twice
during the load, the operator's ``rabbitmqctl close_all_connections`` drops every connection of
the vhost (what a RabbitMQ restart does): the node's and the client's.

Calls waiting at that moment fail at once with ``BrokerUnavailable``: their outcome is unknown,
so the caller sends each one again with the same idempotency key, and the client reconnects on
that next call. The node reconnects by itself, without a restart, and what its lost channels
held unacknowledged is delivered again. In the end every create has been answered, the database
holds exactly one row per create (a create resent after its first try ran is answered from its
key, never run twice), and every failure was a clear ``BrokerUnavailable``, never a hang.
"""

from __future__ import annotations

import asyncio
import collections
import subprocess
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import attrs
import pytest

from beds.client import BedsClient
from beds.envelopes import Operation, Response
from beds.errors import BrokerUnavailable, ReplyTimeout
from beds.routing import PING_TEMPLATE
from beds.testing import unique_name
from tests.helpers import until
from tests.integration.nodes import StartServed, Stores, client_of, stored_posts, wait_ready

if TYPE_CHECKING:
    from tests.helpers import Figures

pytestmark = [pytest.mark.mariadb, pytest.mark.mongodb]

CREATES = 600
WORKERS = 16
CLOSE_AT = (150, 350)
"""Creates answered before each ``close_all_connections``."""
ATTEMPTS = 5
"""Tries per request (the first and its resends) before the test gives up on it."""
CALL_TIMEOUT = 15.0
RECONNECTED = "reconnected to RabbitMQ; consuming again"


def close_all_connections(amqp_url: str) -> None:
    """What an operator (or a RabbitMQ restart) does to every connection of the vhost."""
    vhost = unquote(urlsplit(amqp_url).path.lstrip("/")) or "/"
    subprocess.run(
        ["rabbitmqctl", "-q", "close_all_connections", "-p", vhost, "beds fault scenario 2"],
        check=True,
        capture_output=True,
        timeout=30,
    )


@attrs.define
class Request:
    kind: str
    """``create`` or ``ping``."""
    payload: dict[str, Any]
    key: str | None
    tries: list[str] = attrs.Factory(list)
    """The outcome of every try: ``ok``, an error code, ``broker unavailable``, ``no reply``."""
    response: Response | None = None


class Load:
    """Closed-loop callers: three keyed creates to one ping; a try that fails is sent again."""

    def __init__(self, client: BedsClient, author: str) -> None:
        self.client = client
        self.author = author
        self.requests: list[Request] = []
        self.ok_creates = 0
        self._next = 0

    def _take(self) -> Request | None:
        creates = sum(r.kind == "create" for r in self.requests)
        if creates >= CREATES:
            return None
        number, self._next = self._next, self._next + 1
        if number % 4 == 3:
            request = Request("ping", {}, None)
        else:
            body = f"{self.author} {number}"
            request = Request("create", {"author": self.author, "body": body}, f"s2.{body}")
        self.requests.append(request)
        return request

    async def _send(self, request: Request) -> None:
        for _ in range(ATTEMPTS):
            try:
                if request.kind == "ping":
                    response = await self.client.call(PING_TEMPLATE, Operation.PING)
                else:
                    response = await self.client.call(
                        "spew_post",
                        Operation.CREATE,
                        request.payload,
                        idempotency_key=request.key,
                    )
            except BrokerUnavailable:
                request.tries.append("broker unavailable")
                continue
            except ReplyTimeout:
                request.tries.append("no reply")
                continue
            request.tries.append("ok" if response.error is None else response.error.code)
            request.response = response
            if response.ok and request.kind == "create":
                self.ok_creates += 1
            return

    async def _worker(self) -> None:
        while (request := self._take()) is not None:
            await self._send(request)

    async def run(self) -> None:
        await asyncio.gather(*(self._worker() for _ in range(WORKERS)))


async def test_closed_connections_under_load_lose_and_double_nothing(
    amqp_url: str, stores: Stores, start_served: StartServed, figures: Figures
) -> None:
    served = start_served(instances=4)
    author = unique_name("conn")[:30]
    async with client_of(served, amqp_url, timeout=CALL_TIMEOUT) as client:
        await wait_ready(served, client)
        load = Load(client, author)
        running = asyncio.create_task(load.run())
        closed_at: list[int] = []
        for answered in CLOSE_AT:
            await until(
                lambda: load.ok_creates >= answered or running.done(),  # noqa: B023 (awaited here)
                60,
                what="the load",
            )
            closed_at.append(load.ok_creates)
            close_all_connections(amqp_url)
        await asyncio.wait_for(running, 120)
        # The client reconnected; the node answers a new request.
        assert (await client.ping()).ok

    node_alive = served.process.poll() is None
    reconnects = served.output().count(RECONNECTED)
    creates = [r for r in load.requests if r.kind == "create"]
    first_tries = collections.Counter(r.tries[0] for r in load.requests)
    resent = [r for r in load.requests if len(r.tries) > 1]
    unanswered = [r for r in load.requests if r.response is None]
    stored = await stored_posts(stores, author)
    rows_by_body = collections.Counter(body for _, body in stored)
    doubled = [body for body, count in rows_by_body.items() if count > 1]
    figures(
        {
            "sent": len(load.requests),
            "creates": len(creates),
            "pings": len(load.requests) - len(creates),
            "closed_after_creates": closed_at,
            "first_try": dict(first_tries),
            "resent": len(resent),
            "resends": sum(len(r.tries) - 1 for r in load.requests),
            "answered_ok": sum(r.tries[-1] == "ok" for r in load.requests),
            "node_reconnects": reconnects,
            "rows": len(stored),
            "doubled": len(doubled),
            "lost": len(unanswered),
        }
    )

    assert node_alive, f"the node exited:\n{served.output()}"
    assert reconnects == len(CLOSE_AT), "the node did not reconnect after each close"
    assert closed_at[0] < closed_at[1] < CREATES, "the connections were not closed under load"
    assert resent, "closing every connection under load failed no call"
    tries = collections.Counter(t for r in load.requests for t in r.tries)
    assert set(tries) <= {"ok", "broker unavailable"}, f"a try failed otherwise: {tries}"
    assert not unanswered, f"{len(unanswered)} requests had no answer in {ATTEMPTS} tries"
    assert all(r.tries[-1] == "ok" for r in load.requests)
    assert not doubled, f"creates stored more than once: {doubled[:5]}"
    assert len(stored) == len(creates), "a create is missing from the database"
    for request in creates:
        assert request.response is not None
        stored_id = next(i for i, body in stored if body == request.payload["body"])
        assert request.response.data["id"] == stored_id, "a resend did not get the first answer"
