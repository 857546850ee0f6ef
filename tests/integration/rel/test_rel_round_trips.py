"""How many round trips REL writes cost on the wire (issue 19).

MariaDB's CPU per statement and each exchange's cost on the node bound the keyed REL create
(docs/benchmarks/profiles/README.md), so the commands one write sends are counted here, by a
proxy between the adapter and MariaDB that reads the client's MySQL packets: a command is a
packet with sequence number 0 (``COM_QUERY`` and the like), and each one is a round trip.
Counts, not times: a regression adds a round trip and fails here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from beds.envelopes import Operation, Request
from beds.errors import Conflict, NotFound, RequestError
from beds.idempotency import fingerprint
from beds.namaste import CallContext, SchemaFile
from beds.templates import parse_template
from beds_rel import RelAdapter
from tests.integration.rel.test_rel_idempotency import (
    SCHEMA,
    SPEW_POST,
    author,
    ctx,
    make_adapter,
    posts_by,
    sql,
)

pytestmark = pytest.mark.mariadb

_COM_QUERY = 0x03


class CommandCounter:
    """Forward ``127.0.0.1:<port>`` to MariaDB and keep each command the client sends."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.commands: list[str] = []
        """One entry a command: the SQL of a ``COM_QUERY``, else ``COM_<number>``."""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, count=True)),
            asyncio.create_task(self._pump(up_reader, writer, count=False)),
        ]
        self._tasks.update(pumps)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        writer.close()
        up_writer.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readexactly(4)
                body = await reader.readexactly(int.from_bytes(head[:3], "little"))
                if count and head[3] == 0 and body:
                    text = body[1:].decode("utf-8", "replace")
                    self.commands.append(text if body[0] == _COM_QUERY else f"COM_{body[0]}")
                writer.write(head + body)
                await writer.drain()


@pytest.fixture
async def counted(mariadb_url: str) -> AsyncIterator[tuple[RelAdapter, CommandCounter]]:
    parts = urlsplit(mariadb_url)
    counter = CommandCounter((parts.hostname or "127.0.0.1", parts.port or 3306))
    await counter.start()
    userinfo = parts.netloc.rpartition("@")[0]
    through = parts._replace(netloc=f"{userinfo}@127.0.0.1:{counter.port}").geturl()
    adapter = make_adapter(through, pool_min=1, pool_max=1)
    await adapter.apply_schema(SCHEMA.schema["rel"])
    await adapter.start()
    try:
        yield adapter, counter
    finally:
        await adapter.aclose()
        await counter.aclose()


async def trips(counter: CommandCounter, write: Any) -> tuple[Any, list[str]]:
    """What ``write`` answered (or raised) and the commands it sent."""
    counter.commands.clear()
    try:
        answer = await write
    except Exception as exc:
        answer = exc
    return answer, list(counter.commands)


async def test_a_keyed_create_is_two_round_trips_the_claim_riding_with_the_write(
    counted: tuple[RelAdapter, CommandCounter], mariadb_url: str
) -> None:
    rel, counter = counted
    who = author()
    record = {"author": who, "body": "counted"}
    context = ctx(record)
    created, sent = await trips(counter, rel.create(SPEW_POST, record, context))
    assert isinstance(created, dict), created
    assert len(sent) == 2, sent
    claim_and_write, complete = sent
    assert claim_and_write.startswith("CALL `beds_idempotency_start`(")
    assert "; CALL `spp_create`(" in claim_and_write
    assert complete.startswith("CALL `beds_idempotency_complete`(")
    # A repeat is answered from the key: the refused claim, then the read of its result.
    again, sent = await trips(counter, rel.create(SPEW_POST, record, context))
    assert again == created
    assert len(sent) == 2, sent
    assert sent[1].startswith("CALL `beds_idempotency_claim`(")
    assert await posts_by(mariadb_url, who) == 1


async def test_an_unkeyed_create_is_one_round_trip(
    counted: tuple[RelAdapter, CommandCounter],
) -> None:
    rel, counter = counted
    context = CallContext(event_id="test.rel.trips")  # no idempotency key
    created, sent = await trips(
        counter, rel.create(SPEW_POST, {"author": author(), "body": "plain"}, context)
    )
    assert isinstance(created, dict), created
    assert [s.split("(")[0] for s in sent] == ["CALL `spp_create`"]


async def test_keyed_update_and_delete_are_two_round_trips(
    counted: tuple[RelAdapter, CommandCounter],
) -> None:
    rel, counter = counted
    created = await rel.create(SPEW_POST, {"author": author(), "body": "u"}, ctx({}))
    key = {"id": created["id"]}
    updated, sent = await trips(
        counter,
        rel.update(SPEW_POST, {**key, "body": "v"}, ctx(key, operation=Operation.UPDATE)),
    )
    assert isinstance(updated, dict), updated
    assert len(sent) == 2, sent
    deleted, sent = await trips(
        counter, rel.delete(SPEW_POST, key, ctx(key, operation=Operation.DELETE))
    )
    assert deleted == {"deleted": 1}
    assert len(sent) == 2, sent


async def test_errors_of_the_write_in_the_claims_packet_map_as_alone_and_leave_no_key(
    counted: tuple[RelAdapter, CommandCounter], mariadb_url: str
) -> None:
    rel, counter = counted
    held = "SELECT 1 FROM beds_idempotency WHERE idem_key = %s"
    # The DBA's SIGNAL SQLSTATE '23000' (a reply to a post that does not exist): Conflict.
    orphan = {"author": author(), "body": "orphan", "parent_id": 2**62}
    context = ctx(orphan)
    refused, sent = await trips(counter, rel.create(SPEW_POST, orphan, context))
    assert isinstance(refused, Conflict), refused
    assert "parent_id" in " ".join(refused.details)
    assert [s.split("(")[0] for s in sent] == ["CALL `beds_idempotency_start`", "ROLLBACK"]
    assert await sql(mariadb_url, held, context.idempotency_key) == []
    # An empty result of the update procedure: NotFound, the claim rolled back.
    missing = {"id": 2**62, "body": "x"}
    context = ctx(missing, operation=Operation.UPDATE)
    refused, sent = await trips(counter, rel.update(SPEW_POST, missing, context))
    assert isinstance(refused, NotFound), refused
    assert await sql(mariadb_url, held, context.idempotency_key) == []
    # The connection is in step afterwards: the next keyed create works.
    record = {"author": author(), "body": "after"}
    created, sent = await trips(counter, rel.create(SPEW_POST, record, ctx(record)))
    assert isinstance(created, dict), created
    assert len(sent) == 2, sent


async def test_a_repeat_while_the_first_runs_waits_and_gets_its_result(
    counted: tuple[RelAdapter, CommandCounter], mariadb_url: str
) -> None:
    rel, _ = counted
    # a second adapter, so that the repeat has a connection while the first holds the key
    other = make_adapter(mariadb_url)
    await other.start()
    try:
        who = author()
        record = {"author": who, "body": "race"}
        context = ctx(record)
        answers = await asyncio.gather(
            *(adapter.create(SPEW_POST, record, context) for adapter in (rel, other, rel, other))
        )
        assert len({answer["id"] for answer in answers}) == 1
        assert await posts_by(mariadb_url, who) == 1
    finally:
        await other.aclose()


TALLY = parse_template(
    """
name = "tally"
store = "rel"
tla = "trt"
key = ["id"]
[fields.id]
type = "int"
generated = true
[fields.author]
type = "str"
[fields.count]
type = "int"
[operations.create]
params = ["author", "count"]
returns = ["id", "count"]
procedure = "trt_create"
inout = ["count"]
out = ["id"]
""",
    source="tally.toml",
)
TALLY_SCHEMA = SchemaFile(
    name="tests/integration/rel/trt.sql",
    text="""
CREATE TABLE IF NOT EXISTS trt_items (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    author VARCHAR(40) NOT NULL,
    n INT NOT NULL
) ENGINE = InnoDB;
DELIMITER $$
CREATE OR REPLACE PROCEDURE trt_create(IN p_author VARCHAR(40), INOUT p_count INT,
                                       OUT p_id BIGINT)
MODIFIES SQL DATA
BEGIN
    INSERT INTO trt_items (author, n) VALUES (p_author, p_count);
    SET p_id = LAST_INSERT_ID(), p_count = p_count * 2;
END$$
DELIMITER ;
""",
)


async def test_a_keyed_write_with_an_inout_value_sends_the_claim_with_its_set(
    counted: tuple[RelAdapter, CommandCounter], mariadb_url: str
) -> None:
    rel, counter = counted
    await make_adapter(mariadb_url).apply_schema([TALLY_SCHEMA])  # not through the counter
    who = author()
    record = {"author": who, "count": 21}
    request = Request(operation=Operation.CREATE, template=TALLY.name, payload=record)
    context = CallContext(
        event_id="test.rel.trips",
        idempotency_key=f"k-{who}",
        fingerprint=fingerprint(request),
    )
    created, sent = await trips(counter, rel.create(TALLY, record, context))
    assert isinstance(created, dict), created
    assert created["count"] == 42
    assert [s.split("(")[0].split(" =")[0] for s in sent] == [
        "CALL `beds_idempotency_start`",  # ; SET @beds_v1 = 21
        "CALL `trt_create`",
        "SELECT @beds_v1 AS `count`, @beds_v2 AS `id`",
        "CALL `beds_idempotency_complete`",
    ]
    assert "; SET @beds_v1 = 21" in sent[0]
    again, sent = await trips(counter, rel.create(TALLY, record, context))
    assert again == created
    rows = await sql(mariadb_url, "SELECT n FROM trt_items WHERE author = %s", who)
    assert rows == [(21,)]


async def test_update_and_delete_many_are_one_packet_each_record_its_outcome(
    counted: tuple[RelAdapter, CommandCounter], mariadb_url: str
) -> None:
    rel, counter = counted
    who = author()
    ids = [
        (await rel.create(SPEW_POST, {"author": who, "body": f"p{i}"}, ctx({})))["id"]
        for i in range(3)
    ]
    plain = CallContext(event_id="test.rel.trips")
    records = [
        {"id": ids[0], "body": "n0"},
        {"id": 2**62, "body": "x"},
        {"id": ids[2], "body": "n2"},
    ]
    updated, sent = await trips(counter, rel.update_many(SPEW_POST, records, plain))
    assert len(sent) == 1, sent
    assert sent[0].startswith("START TRANSACTION; CALL `spp_update`(")
    assert sent[0].endswith("; COMMIT")
    assert isinstance(updated[1], NotFound)
    assert [u["id"] for u in (updated[0], updated[2])] == [ids[0], ids[2]]
    rows = await sql(mariadb_url, "SELECT body FROM spp_posts WHERE author = %s ORDER BY id", who)
    assert rows == [("n0",), ("p1",), ("n2",)]
    # keyed: the batch key's claim, the packet, its completion; a repeat reads the key only
    keys = [{"id": ids[1]}, {"id": ids[1]}, {"id": ids[2]}]
    context = ctx({"keys": keys}, operation=Operation.DELETE)
    deleted, sent = await trips(counter, rel.delete_many(SPEW_POST, keys, context))
    assert deleted[0] == deleted[2] == {"deleted": 1}
    assert isinstance(deleted[1], NotFound)  # the same key again: already gone
    assert [s.split("(")[0] for s in sent] == [
        "CALL `beds_idempotency_claim`",
        "CALL `spp_delete`",
        "CALL `beds_idempotency_complete`",
    ]
    assert sent[1].count("CALL `spp_delete`") == 3
    again, sent = await trips(counter, rel.delete_many(SPEW_POST, keys, context))
    assert [type(a) for a in again] == [type(d) for d in deleted]
    assert len(sent) == 1, sent
    assert await posts_by(mariadb_url, who) == 1


async def test_a_failing_call_rolls_the_packet_back_and_the_records_go_one_by_one(
    counted: tuple[RelAdapter, CommandCounter], mariadb_url: str
) -> None:
    rel, counter = counted
    who = author()
    ids = [
        (await rel.create(SPEW_POST, {"author": who, "body": f"p{i}"}, ctx({})))["id"]
        for i in range(3)
    ]
    too_long = "x" * 281  # the procedure's parameter is VARCHAR(280): MariaDB refuses it
    records = [
        {"id": ids[0], "body": "n0"},
        {"id": ids[1], "body": too_long},
        {"id": ids[2], "body": "n2"},
    ]
    for context in (
        CallContext(event_id="test.rel.trips"),
        ctx({"records": records}, operation=Operation.UPDATE),
    ):
        updated, sent = await trips(counter, rel.update_many(SPEW_POST, records, context))
        assert isinstance(updated[1], RequestError), updated
        assert [u["id"] for u in (updated[0], updated[2])] == [ids[0], ids[2]]
        assert "ROLLBACK" in sent, sent
        again, _ = await trips(counter, rel.update_many(SPEW_POST, records, context))
        assert type(again[1]) is type(updated[1])
        if context.idempotency_key is not None:  # answered from the items' keys
            assert (again[0], again[2]) == (updated[0], updated[2])
    rows = await sql(mariadb_url, "SELECT body FROM spp_posts WHERE author = %s ORDER BY id", who)
    assert rows == [("n0",), ("p1",), ("n2",)]
