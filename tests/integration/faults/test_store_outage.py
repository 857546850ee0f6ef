"""A database goes away under load, then comes back; the node is never restarted.

Reliability issue, scenario 3. A :class:`FaultProxy` stands between the node's store and the
server. Under a steady load of creates and fetches through :class:`BedsClient`, the proxy is cut
for a few seconds, in one of two ways:

* ``refuse``: the server looks stopped; new connections are refused at once;
* ``blackhole``: the server looks hung; new connections are accepted and never answered.

Live connections are closed in both. Then the proxy is restored. The test checks that every
request got an answer (a success, or an error with a transient or deadline code, nothing else),
that the dispatcher retried, that the node serves again within a bounded time, and that every
successful create is stored exactly once.

The node's own ``beds_after_dispatch`` hook records its answer to every request, so a request the
client saw no reply for can be told apart: answered by the node too late (at the deadline, which
is also the moment the client gives up) or lost.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
import pytest

from beds import hookimpl
from beds.client import BedsClient
from beds.config import load_config
from beds.envelopes import Operation, Request, Response
from beds.errors import BrokerUnavailable, ReplyTimeout
from beds.node import BedsNode
from beds.plugins import make_plugin_manager
from beds.testing import unique_name
from tests.helpers import client_of_node
from tests.integration.nodes import node_config, stored_posts

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.helpers import Figures
    from tests.integration.faults.helpers import ProxyFactory
    from tests.integration.nodes import Stores

    from .proxy import FaultProxy, Outage

TIMEOUT = 3.0
"""Each request's client timeout, which is also its deadline."""
WORKERS = 4
"""Concurrent callers, each waiting for its answer before the next request: no queue builds up."""
PACE = 0.02
BEFORE = 1.0
OUTAGE = 5.0
"""Longer than TIMEOUT: a request waiting for a hung server must not just outlast it."""
RECOVERY_BOUND = TIMEOUT + 3.0
"""Most seconds from the restore to the first success of a request sent after it."""
AFTER = 1.5
LEASE = 4.0
"""reliability.handler_budget + settle_grace in the node's config: no attempt holds a key longer."""
"""Seconds of load after the recovery, all of which must succeed."""
MAX_REQUESTS = 4000
EXPECTED = frozenset({"BEDS-503", "BEDS-503B", "BEDS-504"})
NO_REPLY = "no reply"
FAILS_FAST = frozenset({("rel", "refuse")})
"""Outages the node answers before the deadline: BEDS-503 once its retries are spent.

In the others, store calls wait for the request's deadline and end in BEDS-504:

* rel/blackhole: asyncmy's ``connect_timeout`` bounds the TCP connect only, not the server's
  greeting, so a new connection to a hung server (and the pool's lock, held while connecting)
  waits until the deadline cancels it;
* rec/both: ``beds_rec.errors.database_call`` runs each call under ``pymongo.timeout(remaining)``,
  and under a CSOT timeout pymongo's server selection waits the whole remaining time, ignoring
  ``[stores.rec] server_selection_timeout``.

BedsClient stops waiting at that same instant (its timeout is the deadline), so it reports no
reply (``ReplyTimeout``) where the node did answer BEDS-504. The node's answer log tells the two
apart; a request neither the client nor the node answered is lost.
"""


@attrs.define
class Outcome:
    key: str
    operation: Operation
    sent: float
    done: float
    code: str
    """``ok``, the error code of the reply, ``no reply`` or ``broker unavailable``."""
    data: Any = None


@attrs.define
class AnswerLog:
    """A plugin that keeps the node's own answer to every request, by request key."""

    answers: dict[str, str] = attrs.field(factory=dict)
    slack: dict[str, float] = attrs.field(factory=dict)
    """Seconds from the request's deadline to the node's answer (negative: before it)."""

    @hookimpl
    def beds_after_dispatch(self, request: Request, response: Response) -> None:
        key = request_key(request.operation, request.payload)
        self.answers[key] = "ok" if response.error is None else response.error.code
        if request.meta.deadline is not None:
            self.slack[key] = time.time() - request.meta.deadline


def idempotency_key(key: str) -> str:
    """The key a create is sent with, and sent again with to learn its outcome."""
    return f"s3.{key}"


def request_key(operation: Operation, payload: dict[str, Any]) -> str:
    """Creates are keyed by their unique text, fetches by the value they look up."""
    if operation is Operation.CREATE:
        return str(payload.get("body") or payload.get("handle"))
    return f"fetch {next(iter(payload['params'].values()))}"


@attrs.frozen
class Domain:
    """How the load exercises one store's template."""

    template: str
    create: Callable[[str], dict[str, Any]]
    """The create payload for a unique key."""
    fetch: Callable[[str, Any], dict[str, Any]]
    """The fetch payload for what the create of a key returned."""
    check: Callable[[str, Any], bool]
    """Whether the fetched rows are the created record."""


def _post_domain(author: str) -> Domain:
    return Domain(
        template="spew_post",
        create=lambda key: {"author": author, "body": key},
        fetch=lambda key, data: {"query": "by_id", "params": {"id": data["id"]}},
        check=lambda key, rows: len(rows) == 1 and rows[0]["body"] == key,
    )


def _profile_domain() -> Domain:
    return Domain(
        template="spew_profile",
        create=lambda key: {"handle": key, "display_name": "fault"},
        fetch=lambda key, data: {"query": "by_handle", "params": {"handle": key}},
        check=lambda key, rows: len(rows) == 1 and rows[0]["handle"] == key,
    )


class Load:
    """Closed-loop callers: create, then fetch what was created, until told to stop."""

    def __init__(self, client: BedsClient, domain: Domain, prefix: str) -> None:
        self.client = client
        self.domain = domain
        self.prefix = prefix
        self.outcomes: list[Outcome] = []
        self.bad_reads: list[str] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._worker(w)) for w in range(WORKERS)]

    async def send(self, operation: Operation, key: str, payload: dict[str, Any]) -> Outcome:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        data: Any = None
        try:
            response = await self.client.call(
                self.domain.template,
                operation,
                payload,
                idempotency_key=idempotency_key(key) if operation is Operation.CREATE else None,
            )
            code = "ok" if response.error is None else response.error.code
            data = response.data
        except ReplyTimeout:
            code = NO_REPLY
        except BrokerUnavailable:
            code = "broker unavailable"
        outcome = Outcome(key, operation, sent, loop.time(), code, data)
        self.outcomes.append(outcome)
        return outcome

    async def _worker(self, worker: int) -> None:
        number = 0
        while not self._stop.is_set() and len(self.outcomes) < MAX_REQUESTS:
            key = f"{self.prefix}_{worker}_{number}"
            number += 1
            created = await self.send(Operation.CREATE, key, self.domain.create(key))
            if created.code == "ok":
                payload = self.domain.fetch(key, created.data)
                fetch_key = request_key(Operation.FETCH, payload)
                fetched = await self.send(Operation.FETCH, fetch_key, payload)
                if fetched.code == "ok" and not self.domain.check(key, fetched.data):
                    self.bad_reads.append(key)
            await asyncio.sleep(PACE)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), 2 * TIMEOUT + 2)

    def first_success_after(self, moment: float) -> float | None:
        done = [o.done for o in self.outcomes if o.sent >= moment and o.code == "ok"]
        return min(done) if done else None


def _hostport(uri: str, default_port: int) -> tuple[str, int]:
    try:
        parts = urlsplit(uri)
        return parts.hostname or "127.0.0.1", parts.port or default_port
    except ValueError:
        pytest.fail(f"the proxy needs a single-host server URI, not {uri!r}", pytrace=False)


async def _stored_profiles(stores: Stores, prefix: str) -> collections.Counter[tuple[str, str]]:
    """(id, handle) of every profile whose handle starts with ``prefix``, read directly."""
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stores.mongo_uri)
    try:
        collection = client[stores.mongo_database]["spf_profiles"]
        found: collections.Counter[tuple[str, str]] = collections.Counter()
        async for doc in collection.find({"handle": {"$regex": f"^{prefix}_"}}):
            found[(str(doc["_id"]), str(doc["handle"]))] += 1
        return found
    finally:
        await client.close()


async def _claims_without_result(stores: Stores, keys: list[str]) -> int:
    """How many of these REC idempotency keys an attempt left claimed without an outcome.

    A resend of such a key takes the claim over once its lease lapsed and recovers: it finds
    the document the lost attempt created, or creates it now.
    """
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stores.mongo_uri)
    try:
        collection = client[stores.mongo_database]["beds_idempotency"]
        return await collection.count_documents({"_id": {"$in": keys}, "result": None})
    finally:
        await client.close()


@pytest.mark.parametrize("outage", ["refuse", "blackhole"])
@pytest.mark.parametrize("store", ["rel", "rec"])
async def test_store_outage_under_load(
    store: str,
    outage: Outage,
    stores: Stores,
    amqp_url: str,
    tcp_proxy: ProxyFactory,
    tmp_path: Path,
    figures: Figures,
) -> None:
    prefix = unique_name("f")[:14]  # ≤ 32 characters with the worker and request numbers
    if store == "rel":
        proxy: FaultProxy = await tcp_proxy(*_hostport(stores.rel_url, 3306))
        parts = urlsplit(stores.rel_url)
        rel_url = stores.rel_url.replace(
            parts.netloc, f"{parts.username}@{proxy.host}:{proxy.port}"
        )
        mongo_uri = stores.mongo_uri
        domain = _post_domain(prefix)
    else:
        proxy = await tcp_proxy(*_hostport(stores.mongo_uri, 27017))
        rel_url = stores.rel_url
        mongo_uri = f"mongodb://{proxy.host}:{proxy.port}/?directConnection=true"
        domain = _profile_domain()
    path = tmp_path / "beds.toml"
    path.write_text(
        node_config(
            amqp_url,
            env=unique_name("faults"),
            rel_url=rel_url,
            mongo_uri=mongo_uri,
            mongo_database=stores.mongo_database,
            instances=WORKERS,
            extra="""
[reliability]
retry_attempts = 4
retry_initial_delay = 0.05
retry_max_delay = 0.4
handler_budget = 3.5
settle_grace = 0.5
""",
        ),
        encoding="utf-8",
    )
    answers = AnswerLog()
    pm = make_plugin_manager()
    pm.register(answers, name="answer-log")
    loop = asyncio.get_running_loop()
    started = time.monotonic()

    async with (
        BedsNode(load_config(path, environ={}), plugin_manager=pm) as node,
        client_of_node(node, timeout=TIMEOUT) as client,
    ):
        dispatcher = node.pools["wBroker"].dispatcher
        load = Load(client, domain, prefix)
        await asyncio.sleep(BEFORE)
        retried_before = dispatcher.retried
        cut_at = loop.time()
        await proxy.cut(outage)
        await asyncio.sleep(OUTAGE)
        restored_at = loop.time()
        await proxy.restore()
        recovered_at = None
        while recovered_at is None and loop.time() < restored_at + RECOVERY_BOUND:
            await asyncio.sleep(0.05)
            recovered_at = load.first_success_after(restored_at)
        if recovered_at is not None:
            await asyncio.sleep(AFTER)
        await load.stop()
        retried = dispatcher.retried - retried_before
        # A caller told its create failed asks again with the same key, as the error says,
        # once any attempt that might still hold the key is stopped (budget + grace: LEASE).
        await asyncio.sleep(LEASE)
        resent: dict[str, Outcome] = {}
        failed = [o for o in load.outcomes if o.operation is Operation.CREATE and o.code != "ok"]
        claims_left = (
            await _claims_without_result(stores, [idempotency_key(o.key) for o in failed])
            if store == "rec"
            else None
        )
        for outcome in failed:  # once each (a resend is appended to load.outcomes too)
            resent[outcome.key] = await load.send(
                Operation.CREATE, outcome.key, domain.create(outcome.key)
            )
        dead_lettered = sum(pool.dead_lettered for pool in node.pools.values())
        node_ready = node.ready

    outcomes = load.outcomes[: len(load.outcomes) - len(resent)]
    codes = collections.Counter(o.code for o in outcomes)
    late = [o for o in outcomes if o.code == NO_REPLY and o.key in answers.answers]
    lost = [o for o in outcomes if o.code == NO_REPLY and o.key not in answers.answers]
    late_codes = collections.Counter(answers.answers[o.key] for o in late)
    late_slack = [round(answers.slack[o.key], 3) for o in late]
    unexpected = {c: n for c, n in codes.items() if c not in {"ok", NO_REPLY, *EXPECTED}}
    before = [o for o in outcomes if o.done < cut_at]
    after = [o for o in outcomes if recovered_at is not None and o.sent >= recovered_at]

    creates = {o.key: o for o in outcomes if o.operation is Operation.CREATE}
    creates.update(resent)  # the final outcome of each create
    resend_codes = collections.Counter(o.code for o in resent.values())
    if store == "rel":
        posts = await stored_posts(stores, prefix)
        stored = collections.Counter(body for (_, body) in posts.elements())
        mismatched = [
            key for key, o in creates.items() if o.code == "ok" and posts[(o.data["id"], key)] != 1
        ]
    else:
        profiles = await _stored_profiles(stores, prefix)
        stored = collections.Counter(handle for (_, handle) in profiles.elements())
        mismatched = [
            key
            for key, o in creates.items()
            if o.code == "ok" and profiles[(o.data["id"], key)] != 1
        ]
    duplicated = sorted(key for key, n in stored.items() if n > 1)
    stray = sorted(key for key in stored if key not in creates)
    ok_creates = sum(1 for o in creates.values() if o.code == "ok")
    failed_but_stored = sum(1 for k, o in creates.items() if o.code != "ok" and stored[k])
    failed_not_stored = sum(1 for k, o in creates.items() if o.code != "ok" and not stored[k])

    figures(
        {
            "store": store,
            "outage": outage,
            "seconds": round(time.monotonic() - started, 1),
            "sent": len(outcomes),
            "ok": codes["ok"],
            "failed": {c: n for c, n in sorted(codes.items()) if c != "ok"},
            "no_reply_answered_late_by_node": dict(late_codes),
            "late_answer_vs_deadline_s": [min(late_slack), max(late_slack)] if late else None,
            "lost": len(lost),
            "retried": retried,
            "dead_lettered": dead_lettered,
            "recovery_s": None if recovered_at is None else round(recovered_at - restored_at, 2),
            "after_recovery": f"{sum(o.code == 'ok' for o in after)}/{len(after)} ok",
            "creates_failed_then_resent": len(resent),
            "resent_answered": dict(resend_codes),
            "creates_ok": ok_creates,
            "rows_stored": sum(stored.values()),
            "rows_duplicated": len(duplicated),
            "in_doubt_stored": failed_but_stored,
            "in_doubt_not_stored": failed_not_stored,
            "rec_claims_left_without_result": claims_left,
            "proxy": {"accepted": proxy.accepted, "cut": proxy.cut_connections, "held": proxy.held},
        }
    )

    assert node_ready, "the node stopped serving"
    assert before, "no request finished before the outage"
    assert all(o.code == "ok" for o in before), "the load failed before the outage"
    assert codes["ok"] < len(outcomes), "the outage was not felt: nothing failed"
    assert not unexpected, f"codes outside the catalogue's transient/deadline set: {unexpected}"
    assert not lost, f"{len(lost)} requests got no answer, not even late: {lost[:3]}"
    # The node answered at the deadline (a success just before it, or BEDS-504 just after it),
    # which is when the client stopped waiting: never long after it, never long before it.
    assert set(late_codes) <= {"ok", "BEDS-504"}, f"answered too late: {late_codes}"
    # (The client and the node share this process's event loop: a reply published a little
    # before the deadline can still be read after the client's timer fired.)
    assert all(-0.25 <= slack <= 0.5 for slack in late_slack), late_slack
    if (store, outage) in FAILS_FAST:
        assert codes[NO_REPLY] == 0, "a request got its answer only after its deadline"
        assert retried > 0, "no store call was retried"
    assert recovered_at is not None, f"no success within {RECOVERY_BOUND} s of the restore"
    assert len(after) >= WORKERS, "too little load after the recovery"
    assert all(o.code == "ok" for o in after), (
        f"failures after the recovery: {collections.Counter(o.code for o in after)}"
    )
    assert not load.bad_reads, f"fetched rows differ from what was created: {load.bad_reads[:3]}"
    assert not mismatched, f"successful creates not stored exactly once: {mismatched[:5]}"
    assert not duplicated, f"records stored more than once: {duplicated[:5]}"
    assert not stray, f"records stored that no request created: {stray[:5]}"
    # Sent again with its key after the lease, a failed create is answered from its first try
    # (which ran) or runs now: exactly once, on both stores (REL: key and write in one
    # transaction; REC: the key stored in the created document, found by the takeover).
    assert set(resend_codes) <= {"ok"}, f"resends failed: {resend_codes}"
    assert ok_creates == len(creates), "a create did not end stored and answered 201"
