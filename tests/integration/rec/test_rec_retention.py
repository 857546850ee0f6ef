"""Retention on a real MongoDB wire server: the REC sweep's batches, and old lineage events.

The sweep is the ``retention`` long operation the core adds to a template with
``retention_days`` (declared here in the test), run step by step as a CALGON worker runs it, and
as a ticket: old documents moved to the cool collection exactly once (or deleted), new ones
kept, a batch run again after its node died between the copy and the delete leaving no
duplicate. Then the admin node's ``msLogs``: ``purge_events`` deletes only old events, in
batches, and a logs broker purges on its own (a tiny interval), trying again after a failure.
Each test gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

import aiormq
import pytest
from loguru import logger
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from beds.broker.logs import LogsPool
from beds.calgon.tickets import TicketState
from beds.config import load_config
from beds.config.model import BrokerSettings, LineageSettings
from beds.dispatch import Dispatcher
from beds.errors import ConfigError, DatabaseObjectMissing, StoreUnavailable
from beds.factory import Factory
from beds.lineage import Event, EventPurger
from beds.namaste import CallContext, SchemaFile, StoreSettings
from beds.templates import Template, parse_template
from beds.testing import unique_name
from beds.testing.local import LocalNode
from beds_rec import RecAdapter
from tests.helpers import until
from tests.integration.rec.listened import Listened

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

pytestmark = pytest.mark.mongodb

NOTES = """
name = "rrt_note"
store = "rec"
tla = "rrt"
key = ["id"]

[rec]
collection = "rrt_notes"
indexes = ["rrt_notes_created_ix"]

[capabilities]
retention_days = 365

[retention]
field = "created_at"
batch_size = 10
{keys}

[fields.id]
type = "str"
generated = true

[fields.text]
type = "str"

[fields.created_at]
type = "datetime"
generated = true

[operations.create]
params = ["text"]
"""
COOL = 'cool_collection = "rrt_notes_cool"'

HOT_SCHEMA = SchemaFile(
    name="001_rrt_notes.json",
    text='{"collection": "rrt_notes", "indexes": '
    '[{"name": "rrt_notes_created_ix", "keys": [["created_at", 1]]}]}',
)
COOL_SCHEMA = SchemaFile(name="002_rrt_notes_cool.json", text='{"collection": "rrt_notes_cool"}')

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
BEFORE = NOW - dt.timedelta(days=365)
OLD, NEW = 25, 5
CTX = CallContext(event_id="test.rec.retention")


def notes(keys: str = COOL) -> Template:
    """The notes template with these REC keys in ``[retention]``; the core adds the sweep."""
    return parse_template(NOTES.replace("{keys}", keys), source="rrt_note.toml")


def settings(uri: str, database: str) -> StoreSettings:
    return StoreSettings(
        store="rec",
        options={"uri": uri, "database": database, "server_selection_timeout": 5},
        file="beds.toml",
    )


def sweep_finds(rec: Listened) -> list[dict[str, Any]]:
    """The sweep's finds: on the notes, by age."""
    return [
        command
        for name, command in rec.commands.sent
        if name == "find"
        and command["find"] == "rrt_notes"
        and "created_at" in command.get("filter", {})
    ]


@pytest.fixture
async def database(mongo_server_uri: str) -> AsyncIterator[str]:
    """A database of the test's own, dropped afterwards."""
    name = unique_name("beds_retention")
    try:
        yield name
    finally:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server_uri)
        try:
            await client.drop_database(name)
        finally:
            await client.close()


@pytest.fixture
async def rec(mongo_server_uri: str, database: str) -> AsyncIterator[Listened]:
    """A started adapter on the test's database, beds-rec's own schema applied."""
    adapter = Listened(settings(mongo_server_uri, database))
    await adapter.start()
    try:
        await adapter.apply_schema([])
        yield adapter
    finally:
        await adapter.aclose()


async def seed(rec: RecAdapter, template: Template) -> list[dict[str, Any]]:
    """Prepare the template, apply its schema, insert OLD old notes and NEW new ones.

    Returns the old documents as stored, oldest first.
    """
    rec.prepare(template)
    await rec.apply_schema([HOT_SCHEMA, COOL_SCHEMA])
    old = [
        {"text": f"old {n}", "created_at": BEFORE - dt.timedelta(days=OLD - n)} for n in range(OLD)
    ]
    new = [{"text": f"new {n}", "created_at": NOW - dt.timedelta(days=n)} for n in range(NEW)]
    await rec._database["rrt_notes"].insert_many([*reversed(old), *new])
    return await rec._database["rrt_notes"].find({"text": {"$regex": "^old"}}).to_list()


async def sweep(rec: RecAdapter, template: Template, limit: int = 10) -> list[int]:
    """Run the sweep's steps until one answers no record; the ``retired`` of each batch."""
    operation = template.long_operations["retention"]
    retired: list[int] = []
    for step in range(100):
        records = await rec.run_step(
            template, operation, {"before": BEFORE, "limit": limit}, step, CTX
        )
        if not records:
            return retired
        (record,) = records
        retired.append(record["retired"])
    raise AssertionError("the sweep did not end")


async def documents(rec: RecAdapter, collection: str) -> list[dict[str, Any]]:
    return await rec._database[collection].find({}, sort=[("created_at", 1)]).to_list()


def by_age(stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(stored, key=lambda document: document["created_at"])


# -- the sweep ----------------------------------------------------------------------------------


async def test_old_notes_move_to_the_cool_collection_once_and_new_ones_stay(
    rec: Listened,
) -> None:
    template = notes()
    old = await seed(rec, template)
    await rec.verify(template)
    assert await sweep(rec, template) == [10, 10, 5]
    assert await documents(rec, "rrt_notes_cool") == by_age(old)
    kept = await documents(rec, "rrt_notes")
    assert [note["text"] for note in kept] == [f"new {n}" for n in reversed(range(NEW))]
    # Oldest first, by the index on the age field.
    finds = sweep_finds(rec)
    assert finds
    assert all(command.get("hint") == "rrt_notes_created_ix" for command in finds)
    assert finds[0]["sort"] == {"created_at": 1}
    assert await sweep(rec, template) == []  # nothing older is left


async def test_a_batch_run_again_after_its_node_died_between_copy_and_delete(
    rec: RecAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first try copied its batch and died before deleting it: no duplicate, none lost."""
    template = notes()
    old = await seed(rec, template)
    delete_many = AsyncCollection.delete_many

    async def killed(self: AsyncCollection[Any], *args: Any, **kwargs: Any) -> Any:
        if self.name == "rrt_notes":
            raise StoreUnavailable("the node died between the copy and the delete")
        return await delete_many(self, *args, **kwargs)

    monkeypatch.setattr(AsyncCollection, "delete_many", killed)
    operation = template.long_operations["retention"]
    with pytest.raises(StoreUnavailable):
        await rec.run_step(template, operation, {"before": BEFORE, "limit": 10}, 0, CTX)
    monkeypatch.undo()
    assert len(await documents(rec, "rrt_notes_cool")) == 10
    assert len(await documents(rec, "rrt_notes")) == OLD + NEW
    assert await sweep(rec, template) == [10, 10, 5]  # the batch again, then the rest
    cool = await documents(rec, "rrt_notes_cool")
    assert cool == by_age(old)
    assert len({note["_id"] for note in cool}) == OLD
    assert len(await documents(rec, "rrt_notes")) == NEW


async def test_without_a_cool_collection_old_notes_are_deleted(rec: RecAdapter) -> None:
    template = notes("")
    await seed(rec, template)
    await rec._database["rrt_notes_cool"].drop()
    await rec.verify(template)
    assert await sweep(rec, template, limit=7) == [7, 7, 7, 4]
    assert len(await documents(rec, "rrt_notes")) == NEW
    assert "rrt_notes_cool" not in await rec._database.list_collection_names()


async def test_verify_names_a_missing_cool_collection(rec: RecAdapter) -> None:
    template = notes()
    await seed(rec, template)
    await rec._database["rrt_notes_cool"].drop()
    with pytest.raises(DatabaseObjectMissing) as caught:
        await rec.verify(template)
    assert caught.value.details == ("rrt_notes_cool",)


async def test_a_sweep_without_an_age_index_scans_and_still_retires(rec: Listened) -> None:
    template = notes()
    await seed(rec, template)
    await rec._database["rrt_notes"].drop_index("rrt_notes_created_ix")
    assert await sweep(rec, template, limit=100) == [OLD]
    finds = sweep_finds(rec)
    assert finds
    assert not any("hint" in command for command in finds)


async def test_the_sweep_runs_as_a_ticket_to_its_end(rec: RecAdapter) -> None:
    """Submitted like the scheduler's: ``steps = 0``, one ``{"retired": n}`` per batch."""
    template = notes()
    await seed(rec, template)
    node = LocalNode([template], {"rec": rec}, tickets=rec)
    submitted = await node.call(
        "rrt_note",
        "submit",
        {"operation": "retention", "params": {"before": BEFORE.isoformat()}},  # limit: 10
        roles=("admin",),
    )
    assert submitted.status == 202, submitted.error
    assert node.warehouse is not None  # the sweeps' lane (beds.calgon.lanes)
    assert await node.warehouse.run_one()
    ticket = await rec.read_ticket(submitted.data["ticket"])
    assert ticket is not None
    assert (ticket.state, ticket.steps, ticket.steps_done) == (TicketState.SUCCEEDED, 0, 4)
    read = await node.call("rrt_note", "ticket", {"ticket": ticket.ticket_id}, roles=("admin",))
    assert read.data["result"] == [{"retired": 10}, {"retired": 10}, {"retired": 5}]
    assert len(await documents(rec, "rrt_notes_cool")) == OLD


# -- lineage events -----------------------------------------------------------------------------


def events(count: int, age_days: float, run: str) -> list[dict[str, Any]]:
    at = time.time() - age_days * 86400
    return [
        Event(
            event_id=f"n1.test.{run}{n}", kind="log", node="n1", env="test", at=at + n
        ).to_record()
        for n in range(count)
    ]


async def test_purge_events_deletes_only_old_events_in_batches(rec: RecAdapter) -> None:
    assert isinstance(rec, EventPurger)
    await rec.store_events([*events(15, 40, "old"), *events(5, 1, "new")])
    before = time.time() - 30 * 86400
    assert [await rec.purge_events(before, 6) for _ in range(4)] == [6, 6, 3, 0]
    left = await rec._database["msLogs"].find({}, {"_id": 1}, sort=[("at", 1)]).to_list()
    assert [event["_id"] for event in left] == [f"n1.test.new{n}" for n in range(5)]


@pytest.fixture
def purge_log() -> Iterator[list[str]]:
    """What the logs broker logs about its purges during the test."""
    lines: list[str] = []
    logger.enable("beds")
    sink = logger.add(
        lambda message: lines.append(message.record["message"]),
        level="INFO",
        filter="beds.broker.logs",
    )
    yield lines
    logger.remove(sink)
    logger.disable("beds")


async def test_a_logs_broker_purges_old_events_on_its_own_and_after_a_failure(
    rec: RecAdapter, mongo_server_uri: str, database: str, amqp_url: str, purge_log: list[str]
) -> None:
    """The broker's store is away at first (not started): the purge fails, and the next runs."""
    await rec.store_events([*events(10, 40, "old"), *events(3, 1, "new")])
    store = RecAdapter(settings(mongo_server_uri, database))
    connection = await aiormq.connect(amqp_url)
    pool: LogsPool | None = None
    try:
        channel = await connection.channel()
        queue = unique_name("beds.test.logs")
        await channel.queue_declare(queue, exclusive=True)
        dispatcher = Dispatcher(Factory({}, {}), node="adm1", env="test", max_message_bytes=1024)
        pool = LogsPool(
            "adminLogsBroker",
            BrokerSettings(type="logs"),
            queue=queue,
            dispatcher=dispatcher,
            dead_letter_exchange="",
            store=store,
            retention_days=30,
            purge_interval=0.05,
            purge_batch=4,
        )
        await pool.start(connection)
        await until(
            lambda: sum("could not purge" in line for line in purge_log) >= 2,
            what="two failed purges",
        )
        assert pool.purged == 0
        assert await rec._database["msLogs"].count_documents({}) == 13
        await store.start()
        running = pool
        await until(lambda: running.purged == 10, what="the purge")
        assert await rec._database["msLogs"].count_documents({}) == 3
    finally:
        if pool is not None:
            await pool.stop(0)
        await connection.close()
        await store.aclose()
    failed = next(line for line in purge_log if "could not purge" in line)
    assert failed.endswith(
        "older than 30 days (the REC store is not started); trying again in 0.05 s"
    )
    # One run, batch after batch of 4: all 10 old events.
    assert "broker adminLogsBroker purged 10 lineage events older than 30 days" in purge_log


def test_lineage_retention_days_is_a_config_key_named_when_bad(tmp_path: Path) -> None:
    assert LineageSettings().retention_days == 30
    path = tmp_path / "beds.toml"
    path.write_text("schema_version = 1\n[lineage]\nretention_days = 0\n", encoding="utf-8")
    assert load_config(path, environ={}).lineage.retention_days == 0
    path.write_text("schema_version = 1\n[lineage]\nretention_days = -1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert "lineage.retention_days" in str(caught.value)
    assert "beds.toml" in str(caught.value)
