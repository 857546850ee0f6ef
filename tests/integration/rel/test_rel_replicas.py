"""REL reads from a MariaDB replica (``stores.rel.secondaries``), against a real primary/replica.

The module starts its own primary (binary log on) and replica (:mod:`.replica_servers`; the
session's MariaDB has no binary log), applies the example REL schema on the primary and waits
for the replica to have it. Root then writes one post on the replica only (``read_only`` lets
root write): a fetch that sees it read the replica, one that does not read the primary.

Tests that stop the replica, or its SQL thread, start it again before they end, so none depends
on another's order.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from loguru import logger

import beds_rel.plugin
from beds import hookimpl
from beds.envelopes import Consistency
from beds.errors import StoreUnavailable
from beds.namaste import CallContext, Query, StoreSettings
from beds.registry import TemplateRegistry
from beds_rel import RelAdapter
from tests.integration.amqp.helpers import StartNode, client_of, start_node
from tests.integration.rel.replica_servers import ReplicaPair, replica_pair
from tests.integration.tls.servers import ServerNotStarted

__all__ = ("start_node",)  # a fixture, registered by importing it

pytestmark = [pytest.mark.mariadb, pytest.mark.slow]

_EXAMPLE = TemplateRegistry()
_EXAMPLE.add_package("beds_templates_example")
SPEW_POST = _EXAMPLE.templates["spew_post"]
SCHEMA = _EXAMPLE.schema["rel"]
CTX = CallContext(event_id="test.rel-replicas.0")

REPLICA_ONLY = 1_000_000_001
"""The id of the post root writes on the replica only: far above any id the primary gives, so
the primary's later posts never collide with it on the replica."""
REPLICA_AUTHOR = "replica_only"
CONNECT_TIMEOUT = 2.0
RETRY = 0.5


@pytest.fixture(scope="module")
def pair() -> Iterator[ReplicaPair]:
    """The primary and its replica, the example schema on both, and the replica's own post."""
    try:
        with replica_pair() as running:
            asyncio.run(_apply_schema(running))
            running.caught_up()
            running.replica.sql(
                f"INSERT INTO `{running.database}`.spp_posts (id, author, body) "
                f"VALUES ({REPLICA_ONLY}, '{REPLICA_AUTHOR}', 'only on the replica');\n"
            )
            yield running
    except ServerNotStarted as exc:
        pytest.fail(str(exc), pytrace=False)


async def _apply_schema(pair: ReplicaPair) -> None:
    await make_adapter(pair).apply_schema(SCHEMA)


def make_adapter(pair: ReplicaPair, **options: Any) -> RelAdapter:
    table = {
        "url": pair.url(pair.primary),
        "secondaries": [pair.url(pair.replica)],
        "connect_timeout": CONNECT_TIMEOUT,
        "replica_retry_seconds": RETRY,
        **options,
    }
    return RelAdapter.from_settings(StoreSettings(store="rel", options=table, file="beds.toml"))


@pytest.fixture
async def rel(pair: ReplicaPair) -> AsyncIterator[RelAdapter]:
    adapter = make_adapter(pair)
    adapter.prepare(SPEW_POST)
    await adapter.start()
    try:
        assert await adapter.optional_checks() == [
            (f"store rel secondary 127.0.0.1:{pair.replica.port}", None)
        ]
        yield adapter
    finally:
        await adapter.aclose()


@pytest.fixture
def replica_log() -> Iterator[list[tuple[str, str]]]:
    """What beds_rel.replicas logs during the test: (level, message)."""
    seen: list[tuple[str, str]] = []
    sink = logger.add(
        lambda message: seen.append((message.record["level"].name, message.record["message"])),
        level="INFO",
        filter="beds_rel.replicas",
    )
    yield seen
    logger.remove(sink)


@pytest.fixture
def stopped_replica(pair: ReplicaPair) -> Iterator[ReplicaPair]:
    """The replica stopped by its PID; started again (and caught up) after the test."""
    pair.replica.stop()
    try:
        yield pair
    finally:
        if pair.replica.process is None:
            pair.replica.start()
        pair.caught_up()


def query(name: str, consistency: Consistency, **params: Any) -> Query:
    spec = SPEW_POST.queries[name]
    return Query(spec=spec, params=params, limit=spec.max_limit, consistency=consistency)


async def by_id(rel: RelAdapter, post: int, consistency: Consistency) -> list[dict[str, Any]]:
    return await rel.fetch(SPEW_POST, query("by_id", consistency, id=post), CTX)


async def test_secondary_reads_the_replica_and_primary_the_primary(rel: RelAdapter) -> None:
    """A view query, a procedure query and a function: each where its consistency says."""
    primary, secondary = Consistency.PRIMARY, Consistency.SECONDARY
    [post] = await by_id(rel, REPLICA_ONLY, secondary)
    assert (post["author"], post["body"]) == (REPLICA_AUTHOR, "only on the replica")
    assert await by_id(rel, REPLICA_ONLY, primary) == []
    mine = query("by_author", secondary, author=REPLICA_AUTHOR)
    assert [p["id"] for p in await rel.fetch(SPEW_POST, mine, CTX)] == [REPLICA_ONLY]
    theirs = query("by_author", primary, author=REPLICA_AUTHOR)
    assert await rel.fetch(SPEW_POST, theirs, CTX) == []
    counted = {
        consistency: await rel.fetch(
            SPEW_POST, query("count_by_author", consistency, author=REPLICA_AUTHOR), CTX
        )
        for consistency in (primary, secondary)
    }
    assert counted == {primary: [{"post_count": 0}], secondary: [{"post_count": 1}]}
    # ``cached`` reaches an adapter only when the node has no cache for it: the primary.
    assert await by_id(rel, REPLICA_ONLY, Consistency.CACHED) == []
    assert rel.replicas.fallbacks == 0


async def test_a_stopped_replica_costs_one_attempt_then_reads_fall_back_until_it_returns(
    rel: RelAdapter, pair: ReplicaPair, replica_log: list[tuple[str, str]]
) -> None:
    author = f"t_{uuid.uuid4().hex[:12]}"
    created = await rel.create(SPEW_POST, {"author": author, "body": "on both"}, CTX)
    pair.caught_up()
    assert len(await by_id(rel, created["id"], Consistency.SECONDARY)) == 1
    pair.replica.stop()
    try:
        reads = 20
        started = time.monotonic()
        [post] = await by_id(rel, created["id"], Consistency.SECONDARY)
        first = time.monotonic() - started
        for _ in range(reads - 1):
            assert len(await by_id(rel, created["id"], Consistency.SECONDARY)) == 1
        elapsed = time.monotonic() - started
        assert post["body"] == "on both"
        # Answered by the primary: it lacks the replica's own post.
        assert await by_id(rel, REPLICA_ONLY, Consistency.SECONDARY) == []
        assert rel.replicas.fallbacks == reads + 1
        # Not a connect timeout per read (that would be 20 reads of 2 s): one refused attempt,
        # then the primary directly, with one more attempt per retry interval at most.
        assert first < CONNECT_TIMEOUT / 2
        assert elapsed < CONNECT_TIMEOUT
        assert rel.replicas.replicas[0].retry_at is not None  # down
        # Primary reads and writes never noticed.
        assert len(await by_id(rel, created["id"], Consistency.PRIMARY)) == 1
        await rel.update(SPEW_POST, {"id": created["id"], "body": "edited"}, CTX)
    finally:
        pair.replica.start()
    pair.caught_up()
    deadline = time.monotonic() + 10
    while not await by_id(rel, REPLICA_ONLY, Consistency.SECONDARY):
        assert time.monotonic() < deadline, "secondary reads did not return to the replica"
        await asyncio.sleep(0.1)
    assert rel.replicas.replicas[0].up
    [post] = await by_id(rel, created["id"], Consistency.SECONDARY)
    assert post["body"] == "edited"
    # Each change of state is said once, not once per read, and without a password.
    assert [level for level, _ in replica_log] == ["WARNING", "INFO"]
    where = f"REL replica 127.0.0.1:{pair.replica.port} (stores.rel.secondaries[0])"
    assert replica_log[0][1].startswith(f"{where} is down: ")
    assert "secondary reads go to the primary" in replica_log[0][1]
    assert replica_log[1][1] == f"{where} answers again: secondary reads go to it"
    assert pair.password not in "".join(message for _, message in replica_log)


async def test_a_replica_down_at_start_is_a_warning_and_reads_go_to_the_primary_at_once(
    stopped_replica: ReplicaPair,
) -> None:
    pair = stopped_replica
    adapter = make_adapter(pair)
    await adapter.start()  # a replica is optional: the start goes on
    try:
        [(name, problem)] = await adapter.optional_checks()
        assert name == f"store rel secondary 127.0.0.1:{pair.replica.port}"
        assert problem == "cannot connect to MariaDB"
        # The check marked it down: the first read does not try it again.
        started = time.monotonic()
        assert await by_id(adapter, REPLICA_ONLY, Consistency.SECONDARY) == []
        assert time.monotonic() - started < CONNECT_TIMEOUT / 2
        assert adapter.replicas.fallbacks == 1
    finally:
        await adapter.aclose()


async def test_a_hung_replica_costs_one_read_its_timeout_not_every_read(pair: ReplicaPair) -> None:
    """A replica that takes connections and never greets them (a hung server)."""

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hung = f"mysql://{pair.user}:{pair.password}@127.0.0.1:{port}/{pair.database}"
    adapter = make_adapter(pair, secondaries=[hung], connect_timeout=1, replica_retry_seconds=60)
    await adapter.start()
    try:
        started = time.monotonic()
        assert await by_id(adapter, REPLICA_ONLY, Consistency.SECONDARY) == []
        first = time.monotonic() - started
        for _ in range(9):
            assert await by_id(adapter, REPLICA_ONLY, Consistency.SECONDARY) == []
        rest = time.monotonic() - started - first
        assert 1 <= first < 2  # waited for the replica once, then read the primary
        assert rest < 0.5  # nine reads, not nine more seconds
        assert adapter.replicas.fallbacks == 10
    finally:
        await adapter.aclose()
        server.close()
        await server.wait_closed()


async def test_without_any_server_a_secondary_read_fails_as_the_primary_does(
    stopped_replica: ReplicaPair,
) -> None:
    """The primary's error, not the replica's: the read was tried on both."""
    pair = stopped_replica
    adapter = make_adapter(pair)
    await adapter.start()
    pair.primary.stop()
    try:
        with pytest.raises(StoreUnavailable):
            await by_id(adapter, REPLICA_ONLY, Consistency.SECONDARY)
        assert adapter.replicas.fallbacks == 1
    finally:
        pair.primary.start()
        await adapter.aclose()


async def test_writes_never_go_to_a_replica(rel: RelAdapter, pair: ReplicaPair) -> None:
    """With the replica's SQL thread stopped, what the adapter writes is on the primary only."""
    pair.replica.sql("STOP SLAVE SQL_THREAD;")
    try:
        author = f"t_{uuid.uuid4().hex[:12]}"
        keyed = CallContext(event_id="test.rel-replicas.1", idempotency_key=uuid.uuid4().hex)
        created = await rel.create(SPEW_POST, {"author": author, "body": "written"}, keyed)
        second = await rel.create(SPEW_POST, {"author": author, "body": "to delete"}, CTX)
        await rel.update(SPEW_POST, {"id": created["id"], "body": "rewritten"}, CTX)
        assert await rel.delete(SPEW_POST, {"id": second["id"]}, CTX) == {"deleted": 1}
        [post] = await by_id(rel, created["id"], Consistency.PRIMARY)
        assert post["body"] == "rewritten"
        # The replica has none of it (and would refuse the application user's writes).
        assert await by_id(rel, created["id"], Consistency.SECONDARY) == []
        count = f"SELECT COUNT(*) FROM `{pair.database}`.spp_posts WHERE author = '{author}';"
        assert pair.replica.sql(count).strip() == "0"
        assert pair.primary.sql(count).strip() == "1"
    finally:
        pair.replica.sql("START SLAVE SQL_THREAD;")
    pair.caught_up()
    [post] = await by_id(rel, created["id"], Consistency.SECONDARY)
    assert post["body"] == "rewritten"


class SpewPost:
    """Only the example's REL template (the node then needs no REC store)."""

    @hookimpl
    def beds_register_templates(self, registry: TemplateRegistry) -> None:
        registry.add(SPEW_POST)


async def test_a_request_asking_for_secondary_reads_the_replica_through_a_node(
    start_node: StartNode, pair: ReplicaPair
) -> None:
    """spew_post reads the primary by default; a request's ``consistency`` chooses."""
    assert SPEW_POST.capabilities.consistency is Consistency.PRIMARY
    extra = f"""
[stores.rel]
url = "{pair.url(pair.primary)}"
secondaries = ["{pair.url(pair.replica)}"]
connect_timeout = {CONNECT_TIMEOUT}
replica_retry_seconds = {RETRY}
"""
    async with (
        start_node(extra=extra, plugins=(beds_rel.plugin, SpewPost())) as node,
        client_of(node) as client,
    ):
        checks = [(check.name, check.status) for check in node.checks]
        assert (f"store rel secondary 127.0.0.1:{pair.replica.port}", "ok") in checks
        payload = {"query": "by_id", "params": {"id": REPLICA_ONLY}}
        default = await client.call("spew_post", "fetch", payload)
        secondary = await client.call("spew_post", "fetch", {**payload, "consistency": "secondary"})
        primary = await client.call("spew_post", "fetch", {**payload, "consistency": "primary"})
    assert (default.ok, default.data) == (True, [])
    assert (primary.ok, primary.data) == (True, [])
    assert secondary.ok, secondary.error
    assert [post["author"] for post in secondary.data] == [REPLICA_AUTHOR]
