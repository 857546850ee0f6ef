"""A keyed create whose write reached the database while the database's reply was lost.

The hardest moment of an outage: the server applied the write (or its key's commit) and the
connection died before the answer came back, so the node cannot tell whether it happened. A
:class:`ReplyLosingProxy` between the node and the store makes that moment exact: armed right
before the chosen database call, it forwards the call and loses the reply (and the connection).

- ``blip``: one reply is lost, the store is fine again at once. The dispatcher's own retry (the
  same handling) must find out what happened and answer the caller ``201``, stored once.
- ``outage``: every reply is lost until the proxy is restored; the caller gets ``BEDS-503`` (or
  ``BEDS-504``) saying to send it again with the same key. Sent again after the restore, it must
  end ``201`` with the one stored record: REL answers from the key at once (the key's row commits
  with the write), REC answers ``BEDS-409W`` at most until the lost attempt's lease lapses
  (``handler_budget + settle_grace``), then recovers the created document.

The call that loses its reply: REC the create's ``insert_one`` (applied, its claim has no
result; the path of servers without ``bulkWrite``) or its ``bulkWrite`` (record, journal entry
and the key's result applied together: the repeat is answered from the key at once); REL
``commit`` the call that records the result and commits (committed), or ``write`` the write
procedure (the transaction then rolls back with the connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from pymongo import AsyncMongoClient

import beds_rel.adapter
import beds_rel.idempotency
from beds.config import load_config
from beds.node import BedsNode
from beds.testing import unique_name
from beds_rec.adapter import RecAdapter
from tests.helpers import client_of_node
from tests.integration.nodes import node_config, stored_posts

if TYPE_CHECKING:
    from pathlib import Path

    from tests.helpers import Figures
    from tests.integration.nodes import Stores

pytestmark = [pytest.mark.mariadb, pytest.mark.mongodb]

HANDLER_BUDGET = 4.0
SETTLE_GRACE = 2.0
LEASE = HANDLER_BUDGET + SETTLE_GRACE
TIMEOUT = 15.0
_CHUNK = 64 * 1024


class ReplyLosingProxy:
    """Forward ``127.0.0.1:<port>`` to a server; once armed, lose replies.

    Armed, a connection that sends anything is doomed: the server's next bytes on it are
    dropped and both sides are aborted, as when the network fails between the server's work
    and its answer. ``once``: only the first such reply is lost; else every one until
    :meth:`restore`.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = "127.0.0.1"
        self.port = 0
        self.lost = 0
        """Replies lost so far."""
        self._armed = False
        self._once = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def lose(self, *, once: bool) -> None:
        self._armed, self._once = True, once

    def restore(self) -> None:
        self._armed = False

    async def aclose(self) -> None:
        self.restore()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        doomed = asyncio.Event()
        upstream: asyncio.StreamWriter | None = None
        self._writers.add(writer)
        try:
            up_reader, upstream = await asyncio.open_connection(*self.upstream)
            self._writers.add(upstream)
            pumps = {
                asyncio.create_task(self._requests(reader, upstream, doomed)),
                asyncio.create_task(self._replies(up_reader, writer, doomed)),
            }
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except OSError:
            pass
        finally:
            for side in (writer, upstream):
                if side is not None:
                    self._writers.discard(side)
                    side.transport.abort()
            self._tasks.discard(task)

    async def _requests(
        self, source: asyncio.StreamReader, target: asyncio.StreamWriter, doomed: asyncio.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(_CHUNK):
                target.write(data)
                await target.drain()
                if self._armed:
                    doomed.set()  # the server gets the request; its answer will be lost

    async def _replies(
        self, source: asyncio.StreamReader, target: asyncio.StreamWriter, doomed: asyncio.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(_CHUNK):
                if doomed.is_set():
                    self.lost += 1
                    if self._once:
                        self._armed = False
                    return  # the pair is aborted: the client sees the connection drop
                target.write(data)
                await target.drain()


def _hostport(uri: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(uri)
    return parts.hostname or "127.0.0.1", parts.port or default_port


async def _profiles(stores: Stores, handle: str) -> list[dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stores.mongo_uri)
    try:
        cursor = client[stores.mongo_database]["spf_profiles"].find({"handle": handle})
        return await cursor.to_list()
    finally:
        await client.close()


def _arm_before(
    monkeypatch: pytest.MonkeyPatch,
    store: str,
    point: str,
    proxy: ReplyLosingProxy,
    marker: str,
    *,
    once: bool,
    bulk: list[bool],
) -> None:
    """Arm the proxy right before the marked request's chosen database call.

    ``bulk`` is told whether a REC create went as one ``bulkWrite`` (MongoDB 8.0 servers).
    """
    if store == "rec":
        create = RecAdapter._create

        async def create_losing_its_reply(
            self: RecAdapter, template: Any, record: Any, ctx: Any
        ) -> Any:
            if marker in str(record) and not proxy.lost:
                # "insert": the record's own insert, on the path of servers without bulkWrite
                # (its result is recorded by a later command); "bulk": the one bulkWrite that
                # carries the record, its entry and its key's result.
                if point == "insert":
                    self.bulk_writes = False
                bulk.append(self.bulk_writes)
                proxy.lose(once=once)
            return await create(self, template, record, ctx)

        monkeypatch.setattr(RecAdapter, "_create", create_losing_its_reply)
        return
    write_once = beds_rel.idempotency.write_once  # the adapter calls it by this module name

    async def write_once_losing_a_reply(conn: Any, run: Any, ctx: Any, body: Any) -> Any:
        async def run_losing_its_reply(conn: Any, call: Any, call_args: Any) -> Any:
            write = call.name == "spp_create"  # the template's write procedure
            chosen = write if point == "write" else call.name.endswith("_complete")
            if chosen and marker in str(ctx.idempotency_key) and not proxy.lost:
                proxy.lose(once=once)
            return await run(conn, call, call_args)

        return await write_once(conn, run_losing_its_reply, ctx, body)

    monkeypatch.setattr(beds_rel.adapter, "write_once", write_once_losing_a_reply)


@pytest.mark.parametrize("loss", ["blip", "outage"])
@pytest.mark.parametrize(
    ("store", "point"),
    [("rec", "insert"), ("rec", "bulk"), ("rel", "commit"), ("rel", "write")],
)
async def test_a_keyed_create_whose_reply_was_lost_ends_201_stored_once(
    store: str,
    point: str,
    loss: str,
    stores: Stores,
    amqp_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    figures: Figures,
) -> None:
    rel_url, mongo_uri = stores.rel_url, stores.mongo_uri
    if store == "rel":
        proxy = ReplyLosingProxy(*_hostport(stores.rel_url, 3306))
        await proxy.start()
        parts = urlsplit(stores.rel_url)
        rel_url = stores.rel_url.replace(
            parts.netloc, f"{parts.username}@{proxy.host}:{proxy.port}"
        )
    else:
        proxy = ReplyLosingProxy(*_hostport(stores.mongo_uri, 27017))
        await proxy.start()
        mongo_uri = f"mongodb://{proxy.host}:{proxy.port}/?directConnection=true"
    marker = unique_name("lost")[:24].replace("-", "_").lower()
    key = f"lost.{marker}"
    if store == "rel":
        template, payload = "spew_post", {"author": marker, "body": marker}
    else:
        template, payload = "spew_profile", {"handle": marker, "display_name": "Lost reply"}
    bulk: list[bool] = []
    _arm_before(monkeypatch, store, point, proxy, marker, once=loss == "blip", bulk=bulk)
    path = tmp_path / "beds.toml"
    path.write_text(
        node_config(
            amqp_url,
            env=unique_name("lost"),
            rel_url=rel_url,
            mongo_uri=mongo_uri,
            mongo_database=stores.mongo_database,
            instances=1,
            extra=f"""
[reliability]
retry_attempts = 3
retry_initial_delay = 0.05
retry_max_delay = 0.2
handler_budget = {HANDLER_BUDGET}
settle_grace = {SETTLE_GRACE}
""",
        ),
        encoding="utf-8",
    )
    answers: list[str] = []
    waited: list[int] = []
    try:
        async with (
            BedsNode(load_config(path, environ={})) as node,
            client_of_node(node, timeout=TIMEOUT) as client,
        ):
            dispatcher = node.pools["wBroker"].dispatcher
            sent = time.monotonic()
            response = await client.call(template, "create", payload, idempotency_key=key)
            answers.append(response.error.code if response.error else str(response.status))
            assert proxy.lost, "no reply was lost: the proxy was not armed in time"
            retried = dispatcher.retried
            if loss == "outage":
                assert response.error is not None, "answered through an outage"
                assert response.error.code in {"BEDS-503", "BEDS-504"}, response.error
                assert any("same idempotency key" in d for d in response.error.details)
                proxy.restore()
                # Sent again, as the error says; in doubt only while the lost attempt's lease runs.
                while True:
                    response = await client.call(template, "create", payload, idempotency_key=key)
                    code = response.error.code if response.error else str(response.status)
                    answers.append(code)
                    if code != "BEDS-409W":
                        break
                    assert store == "rec", response.error
                    (after,) = (
                        int(n)
                        for detail in response.error.details  # type: ignore[union-attr]
                        for n in re.findall(r"in (\d+) s", detail)
                    )
                    assert after <= LEASE
                    waited.append(after)
                    assert len(answers) <= 3, answers
                    await asyncio.sleep(after)
            took = time.monotonic() - sent
    finally:
        await proxy.aclose()

    assert response.ok, (answers, response.error)
    assert response.status == 201
    if store == "rel":
        rows = await stored_posts(stores, marker)
        assert list(rows.elements()) == [(response.data["id"], marker)]
    else:
        documents = await _profiles(stores, marker)
        assert len(documents) == 1
        assert str(documents[0]["_id"]) == response.data["id"]
    if loss == "blip":
        assert answers == ["201"]  # the node's own retry found out, the caller never knew
        assert retried >= 1
    elif store == "rec" and any(bulk):
        # The lost reply's command recorded the key's result with the record: answered from it.
        assert answers[1:] == ["201"], answers
    elif store == "rec":
        # The lost attempt's lease outlived the outage here: a bounded BEDS-409W, then 201.
        assert waited, answers
        assert took <= LEASE + 2, took  # "ask again in N s" rounds up; then one round trip
    figures(
        {
            "store": store,
            "lost_reply_of": point,
            "loss": loss,
            "answers": answers,
            "asked_to_wait_s": waited,
            "retried_by_node": retried,
            "replies_lost": proxy.lost,
            "seconds_to_201": round(took, 2),
            "stored": 1,
        }
    )
