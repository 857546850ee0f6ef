"""Template capabilities on a real MongoDB wire server: the REC side of the memory contract.

Mirrors packages/beds-core/tests/test_capabilities.py (the reference, on the memory store):
locking, journal, pagination and conditions, through a node's dispatcher over a
:class:`~beds_rec.RecAdapter`; then what only REC has: keyed locked writes recovered after a
lost attempt, the journal collection and its checks, secondary reads, the example domain.
Each test gets a database of its own, dropped afterwards.

Why this module is long: it is the REC store's whole capability contract, one section per
feature as in the reference's module, plus the recovery cases only a store without
transactions has; splitting it would split the shared template and fixtures too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import tempfile
import uuid
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import tomlkit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient, monitoring
from pymongo.server_type import SERVER_TYPE

from beds.envelopes import Operation, Request, Response
from beds.errors import DatabaseObjectMissing, NotFound, StaleVersion, StoreUnavailable
from beds.idempotency import fingerprint
from beds.namaste import CallContext, Record, SchemaFile, StoreSettings
from beds.registry import TemplateRegistry
from beds.templates import Template, parse_template
from beds.templates.validate import validate_fetch, validate_write
from beds.testing import TestIdentity, unique_name
from beds.testing.local import LocalNode
from beds_rec import RecAdapter

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

pytestmark = pytest.mark.mongodb

IDENTITY = TestIdentity(env="test")
ORIGIN = "beds-test-app"
"""The AMQP user the tests' requests come from (as RabbitMQ would vouch)."""

NOTE: dict[str, Any] = {
    "name": "rec_note",
    "store": "rec",
    "tla": "rnt",
    "key": ["id"],
    "fields": {
        "id": {"type": "str", "generated": True},
        "author": {"type": "str", "max_length": 20},
        "text": {"type": "str", "max_length": 50},
        "rank": {"type": "int"},
        "version": {"type": "int", "generated": True},
        "created_at": {"type": "datetime", "generated": True},
    },
    "operations": {
        "create": {"params": ["author", "text", "rank"], "returns": ["id", "version"]},
        "update": {"params": ["id", "version", "text", "rank"], "returns": ["id", "version"]},
        "delete": {"params": ["id", "version"]},
    },
    "queries": {
        "by_id": {"params": ["id"], "max_limit": 1, "filter": ["id"]},
        "by_author": {
            "params": ["author"],
            "filter": ["author"],
            "order_by": ["-rank", "id"],
            "max_limit": 50,
        },
        "ranked": {
            "params": ["least", "authors"],
            "where": {
                "least": {"field": "rank", "op": "gte"},
                "authors": {"field": "author", "op": "in"},
            },
            "order_by": ["rank", "id"],
        },
        "window": {
            "params": ["author", "above", "upto"],
            "filter": ["author"],
            "where": {
                "above": {"field": "rank", "op": "gt"},
                "upto": {"field": "rank", "op": "lte"},
            },
            "order_by": ["rank", "id"],
        },
        "picked": {
            "params": ["ids"],
            "where": {"ids": {"field": "id", "op": "in"}},
            "projection": ["id", "text"],
            "sort": [["text", 1]],
        },
        "recent": {
            "params": ["author", "since"],
            "filter": ["author"],
            "where": {"since": {"field": "created_at", "op": "gte"}},
            "order_by": ["-created_at", "id"],
        },
        "below": {
            "params": ["author", "under"],
            "filter": ["author"],
            "where": {"under": {"field": "rank", "op": "lt"}},
            "order_by": ["id"],
        },
    },
    "capabilities": {"locking": True, "journal": True},
    "rec": {"collection": "rnt_notes", "indexes": ["rnt_author_rank_ix"]},
}

NOTE_SCHEMA = SchemaFile(
    name="001_rnt_notes.json",
    text=json.dumps(
        {
            "collection": "rnt_notes",
            "validator": {
                "$jsonSchema": {
                    "bsonType": "object",
                    "required": ["author", "text", "rank", "version", "created_at"],
                    # Strict: apply_schema declares the fields keyed writes add (_beds_key,
                    # _beds_updates), which verify checks.
                    "additionalProperties": False,
                    "properties": {
                        "_id": {"bsonType": "objectId"},
                        "author": {"bsonType": "string"},
                        "text": {"bsonType": "string"},
                        "rank": {"bsonType": ["int", "long"]},
                        "version": {"bsonType": ["int", "long"]},
                        "created_at": {"bsonType": "date"},
                    },
                }
            },
            "indexes": [
                {
                    "name": "rnt_author_rank_ix",
                    "keys": [["author", 1], ["rank", -1], ["_id", 1]],
                }
            ],
        }
    ),
)


def template(declaration: dict[str, Any] | None = None, **changes: Any) -> Template:
    return parse_template(tomlkit.dumps({**(declaration or NOTE), **changes}), source="note.toml")


NOTE_TEMPLATE = template()


def store_settings(uri: str, database: str) -> StoreSettings:
    return StoreSettings(
        store="rec",
        options={"uri": uri, "database": database, "server_selection_timeout": 5},
        file="beds.toml",
    )


async def drop(uri: str, database: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        await client.drop_database(database)
    finally:
        await client.close()


@pytest.fixture
async def rec(mongo_server_uri: str) -> AsyncIterator[RecAdapter]:
    """A started adapter serving ``rec_note`` on a database of its own, schema applied."""
    database = unique_name("beds_caps")
    adapter = RecAdapter(store_settings(mongo_server_uri, database))
    adapter.prepare(NOTE_TEMPLATE)
    await adapter.start()
    try:
        await adapter.apply_schema([NOTE_SCHEMA])
        await adapter.verify(NOTE_TEMPLATE)
        yield adapter
    finally:
        await adapter.aclose()
        await drop(mongo_server_uri, database)


class Node(LocalNode):
    """A node serving ``templates`` from the REC store (requests vouched for as ``ORIGIN``)."""

    def __init__(self, templates: list[Template], store: RecAdapter) -> None:
        super().__init__(templates, {"rec": store}, identity=IDENTITY, origin=ORIGIN)

    async def call(  # type: ignore[override]
        self,
        operation: str,
        payload: dict[str, Any],
        who: str = "ann",
        template: str = "rec_note",
    ) -> Response:
        return await super().call(template, operation, payload, who=who)

    async def data(self, operation: str, payload: dict[str, Any], **options: Any) -> Any:
        response = await self.call(operation, payload, **options)
        assert response.ok, response.error
        return response.data


@pytest.fixture
def node(rec: RecAdapter) -> Node:
    return Node([NOTE_TEMPLATE], rec)


def code(response: Response) -> str | None:
    return response.error.code if response.error is not None else None


async def documents(rec: RecAdapter, collection: str = "rnt_notes") -> list[dict[str, Any]]:
    return [doc async for doc in rec._database[collection].find({}, sort=[("_id", 1)])]


# -- what the adapter offers -------------------------------------------------------------------


def test_the_rec_store_offers_every_feature_the_note_needs() -> None:
    assert RecAdapter.features == {
        "locking",
        "journal",
        "pagination",
        "filters",
        "long_operations",
        "batch",
    }
    assert NOTE_TEMPLATE.needs() <= RecAdapter.features


# -- optimistic locking ---------------------------------------------------------------------------


async def test_a_stale_version_is_refused_with_the_current_one_and_nothing_is_written(
    node: Node, rec: RecAdapter
) -> None:
    created = await node.data("create", {"author": "ann", "text": "one", "rank": 1})
    assert created["version"] == 1
    note = created["id"]
    first = await node.call("update", {"id": note, "version": 1, "text": "two"})
    assert first.data == {"id": note, "version": 2}
    written = await documents(rec)
    stale = await node.call("update", {"id": note, "version": 1, "text": "lost update"})
    assert (stale.status, code(stale)) == (409, "BEDS-409V")
    assert stale.error is not None
    assert stale.error.details == ("current_version: 2",)
    missing = await node.call("update", {"id": note, "text": "no version"})
    assert code(missing) == "BEDS-422"
    assert missing.error is not None
    assert "$.payload.version: is required" in missing.error.details
    gone = await node.call("delete", {"id": note, "version": 1})
    assert code(gone) == "BEDS-409V"
    assert gone.error is not None
    assert gone.error.details == ("current_version: 2",)
    assert await documents(rec) == written  # nothing written by the refused ones
    read = await node.data("fetch", {"query": "by_id", "params": {"id": note}})
    assert [(row["text"], row["version"]) for row in read] == [("two", 2)]
    deleted = await node.call("delete", {"id": note, "version": 2})
    assert deleted.ok, deleted.error
    nowhere = await node.call("update", {"id": note, "version": 2, "text": "late"})
    assert code(nowhere) == "BEDS-404"
    entries = await node.data("fetch", {"query": "history", "params": {"id": note}})
    assert [e["operation"] for e in entries] == ["create", "update", "delete"]  # no refused one


async def test_concurrent_updates_at_one_version_change_the_record_once(node: Node) -> None:
    created = await node.data("create", {"author": "ann", "text": "one", "rank": 1})
    answers = await asyncio.gather(
        *(
            node.call("update", {"id": created["id"], "version": 1, "text": f"t{n}"})
            for n in range(6)
        )
    )
    assert sorted(code(answer) or "ok" for answer in answers) == ["BEDS-409V"] * 5 + ["ok"]
    read = await node.data("fetch", {"query": "by_id", "params": {"id": created["id"]}})
    assert read[0]["version"] == 2


# -- keyed locked writes: a lost attempt's recovery ----------------------------------------


def keyed(operation: Operation, payload: dict[str, Any], event_id: str = "") -> CallContext:
    request = Request(operation=operation, template=NOTE_TEMPLATE.name, payload=payload)
    return CallContext(
        event_id=event_id or f"test.rec.caps.{uuid.uuid4().hex}",
        idempotency_key=f"k-{uuid.uuid4().hex}",
        fingerprint=fingerprint(request),
        idempotency_ttl=60.0,
        attempt=uuid.uuid4().hex,
        journal=True,
    )


def handling(context: CallContext) -> CallContext:
    """Another handling of the same request (a redelivery, or the client's resend)."""
    return attrs.evolve(context, attempt=uuid.uuid4().hex)


async def lost_claim(rec: RecAdapter, context: CallContext, target: Any = None) -> None:
    """Leave what an attempt leaves when its node dies before recording its result."""
    now = dt.datetime.now(dt.UTC)
    claim = {
        "_id": context.idempotency_key,
        "fingerprint": context.fingerprint,
        "result": None,
        "attempt": "a-node-that-died",
        "lease_until": now - dt.timedelta(seconds=1),
        "expires_at": now + dt.timedelta(minutes=5),
    }
    if target is not None:
        claim["target"] = target
    keys = rec._database["beds_idempotency"]
    await keys.replace_one({"_id": context.idempotency_key}, claim, upsert=True)


async def write(rec: RecAdapter, operation: Operation, payload: dict[str, Any], ctx: Any) -> Any:
    record = validate_write(NOTE_TEMPLATE, operation, payload)
    if operation is Operation.CREATE:
        return await rec.create(NOTE_TEMPLATE, record, ctx)
    if operation is Operation.UPDATE:
        return await rec.update(NOTE_TEMPLATE, record, ctx)
    return await rec.delete(NOTE_TEMPLATE, record, ctx)


async def history(rec: RecAdapter, note: str) -> list[Record]:
    return await rec.read_journal(NOTE_TEMPLATE, {"id": note}, limit=100, after=None)


def plain() -> CallContext:
    """An unkeyed write's context: an event of its own, journaled."""
    return CallContext(event_id=f"test.rec.caps.{uuid.uuid4().hex}", journal=True)


async def test_a_keyed_locked_update_that_applied_is_answered_from_the_document(
    rec: RecAdapter,
) -> None:
    created = await write(rec, Operation.CREATE, {"author": "a", "text": "1", "rank": 1}, plain())
    payload = {"id": created["id"], "version": 1, "text": "two"}
    context = keyed(Operation.UPDATE, payload)
    first = await write(rec, Operation.UPDATE, payload, context)
    assert first == {"id": created["id"], "version": 2}
    # As if the node died after the update, before recording its result on the claim.
    await lost_claim(rec, context)
    again = await write(rec, Operation.UPDATE, payload, handling(context))
    assert again == first  # from the document that holds the update's key: not BEDS-409V
    (document,) = await documents(rec)
    assert (document["text"], document["version"]) == ("two", 2)
    assert len(document["_beds_updates"]) == 1
    assert [e["operation"] for e in await history(rec, created["id"])] == ["create", "update"]
    # The claim now holds the result: a third handling is answered from it.
    assert await write(rec, Operation.UPDATE, payload, handling(context)) == first


async def test_a_keyed_locked_update_that_never_ran_runs_on_recovery(rec: RecAdapter) -> None:
    created = await write(rec, Operation.CREATE, {"author": "a", "text": "1", "rank": 1}, plain())
    payload = {"id": created["id"], "version": 1, "text": "two"}
    context = keyed(Operation.UPDATE, payload)
    await lost_claim(rec, context)  # it claimed the key and died before writing
    assert await write(rec, Operation.UPDATE, payload, handling(context)) == {
        "id": created["id"],
        "version": 2,
    }
    # A lost attempt at a version already gone did not apply either: stale, and released.
    late = {"id": created["id"], "version": 1, "text": "three"}
    stale = keyed(Operation.UPDATE, late)
    await lost_claim(rec, stale)
    with pytest.raises(StaleVersion) as caught:
        await write(rec, Operation.UPDATE, late, handling(stale))
    assert caught.value.details == ("current_version: 2",)
    keys = rec._database["beds_idempotency"]
    assert await keys.find_one({"_id": stale.idempotency_key}) is None


async def test_a_document_remembers_its_last_keyed_updates_only(rec: RecAdapter) -> None:
    created = await write(rec, Operation.CREATE, {"author": "a", "text": "1", "rank": 1}, plain())
    for version in range(1, 12):
        payload = {"id": created["id"], "version": version, "text": f"v{version}"}
        await write(rec, Operation.UPDATE, payload, keyed(Operation.UPDATE, payload))
    (document,) = await documents(rec)
    assert document["version"] == 12
    assert len(document["_beds_updates"]) == 8
    fetched = await rec.fetch(
        NOTE_TEMPLATE,
        validate_fetch(NOTE_TEMPLATE, {"query": "by_id", "params": {"id": created["id"]}}),
        plain(),
    )
    assert "_beds_updates" not in fetched[0]


async def test_a_keyed_locked_delete_recovers_by_its_pin_and_version(rec: RecAdapter) -> None:
    created = await write(rec, Operation.CREATE, {"author": "a", "text": "1", "rank": 1}, plain())
    (document,) = await documents(rec)
    key = {"id": created["id"], "version": 1}
    # The lost delete pinned the document at version 1, but an update won the race.
    deleting = keyed(Operation.DELETE, key)
    await lost_claim(rec, deleting, target=document["_id"])
    await write(rec, Operation.UPDATE, {"id": created["id"], "version": 1, "text": "2"}, plain())
    with pytest.raises(StaleVersion):
        await write(rec, Operation.DELETE, key, handling(deleting))
    assert len(await documents(rec)) == 1
    # Pinned at the current version: recovery deletes it, and journals that it did.
    current = {"id": created["id"], "version": 2}
    deleting = keyed(Operation.DELETE, current)
    await lost_claim(rec, deleting, target=document["_id"])
    assert await write(rec, Operation.DELETE, current, handling(deleting)) == {"deleted": 1}
    assert await documents(rec) == []
    operations = [e["operation"] for e in await history(rec, created["id"])]
    assert operations == ["create", "update", "delete"]
    with pytest.raises(NotFound):
        await write(rec, Operation.DELETE, current, keyed(Operation.DELETE, current))


# -- journal ------------------------------------------------------------------------------------


async def test_every_write_leaves_a_journal_entry_read_back_with_history(node: Node) -> None:
    created = await node.data("create", {"author": "ann", "text": "one", "rank": 1})
    note = created["id"]
    await node.call("update", {"id": note, "version": 1, "text": "two"}, who="bob")
    await node.call("delete", {"id": note, "version": 2})
    entries = await node.data("fetch", {"query": "history", "params": {"id": note}})
    assert [e["operation"] for e in entries] == ["create", "update", "delete"]
    assert [e["principal"] for e in entries] == ["ann", "bob", "ann"]
    assert {e["origin"] for e in entries} == {ORIGIN}
    assert all(e["key"] == {"id": note} for e in entries)
    assert entries[0]["before"] is None
    assert entries[0]["after"]["text"] == "one"
    assert entries[0]["after"]["id"] == note
    assert entries[1]["before"]["text"] == "one"
    assert entries[1]["before"]["version"] == 1
    assert entries[1]["after"]["text"] == "two"
    assert entries[1]["after"]["version"] == 2
    assert entries[1]["after"]["created_at"] == entries[0]["after"]["created_at"]
    assert entries[2]["before"]["version"] == 2
    assert entries[2]["after"] is None
    assert len({e["event_id"] for e in entries}) == 3
    for entry in entries:
        assert set(entry) == {
            "event_id",
            "operation",
            "key",
            "before",
            "after",
            "principal",
            "origin",
            "at",
        }
        assert entry["at"].endswith("Z")  # ISO 8601 text, UTC
        dt.datetime.fromisoformat(entry["at"])
    page = await node.call("fetch", {"query": "history", "params": {"id": note}, "limit": 2})
    assert page.data is not None
    assert len(page.data) == 2
    rest = await node.call(
        "fetch", {"query": "history", "params": {"id": note}, "cursor": page.meta.next}
    )
    assert rest.data is not None
    assert [e["operation"] for e in page.data + rest.data] == ["create", "update", "delete"]
    assert rest.meta.next is None


async def test_history_pages_through_entries_written_in_the_same_millisecond(
    rec: RecAdapter, node: Node
) -> None:
    created = await node.data("create", {"author": "ann", "text": "one", "rank": 1})
    journal = rec._database["beds_journal"]
    same = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    await journal.update_many({}, {"$set": {"at": same}})
    for n in range(5):  # more entries at the very same `at`: event_id orders them
        ctx = CallContext(event_id=f"test.rec.caps.same.{n}", journal=True)
        await rec._journal_store.append(
            NOTE_TEMPLATE, "update", {"id": created["id"]}, None, None, ctx
        )
    await journal.update_many({}, {"$set": {"at": same}})
    seen: list[str] = []
    payload: dict[str, Any] = {"query": "history", "params": {"id": created["id"]}, "limit": 2}
    while True:
        page = await node.call("fetch", payload)
        assert page.data is not None, page.error
        seen += [entry["event_id"] for entry in page.data]
        if page.meta.next is None:
            break
        payload["cursor"] = page.meta.next
    assert len(seen) == 6
    assert seen[1:] == [f"test.rec.caps.same.{n}" for n in range(5)]


async def test_a_write_repeated_for_the_same_event_adds_no_second_entry(rec: RecAdapter) -> None:
    payload = {"author": "a", "text": "1", "rank": 1}
    context = keyed(Operation.CREATE, payload)
    first = await write(rec, Operation.CREATE, payload, context)
    # The node died after the insert (and its entry), before recording the result: the
    # recovery finds the document, and its entry again for the same event adds nothing.
    await lost_claim(rec, context)
    assert await write(rec, Operation.CREATE, payload, handling(context)) == first
    entries = await history(rec, first["id"])
    assert [(e["operation"], e["event_id"]) for e in entries] == [("create", context.event_id)]
    # And an entry lost with its node is written by the recovery (the create's key finds it).
    await rec._database["beds_journal"].delete_many({})
    await lost_claim(rec, context)
    assert await write(rec, Operation.CREATE, payload, handling(context)) == first
    assert [e["operation"] for e in await history(rec, first["id"])] == ["create"]


async def test_a_write_whose_entry_fails_is_in_doubt_and_a_keyed_repeat_mends_it(
    rec: RecAdapter,
) -> None:
    from beds_rec.journal import schema_file

    database = rec._database
    await database.command(
        "collMod", "beds_journal", validator={"$jsonSchema": {"required": ["x"]}}
    )
    payload = {"author": "a", "text": "1", "rank": 1}
    context = keyed(Operation.CREATE, payload)
    with pytest.raises(StoreUnavailable) as caught:
        await write(rec, Operation.CREATE, payload, context)
    assert caught.value.message == "the write applied, but its journal entry could not be written"
    assert len(await documents(rec)) == 1  # the insert applied; its entry did not
    held = await database["beds_idempotency"].find_one({"_id": context.idempotency_key})
    assert held is not None  # kept, not released: the repeat must not insert again
    assert held["result"] is None
    validator = json.loads(schema_file().text)["validator"]
    await database.command("collMod", "beds_journal", validator=validator)
    again = await write(rec, Operation.CREATE, payload, handling(context))
    assert len(await documents(rec)) == 1
    assert [e["operation"] for e in await history(rec, again["id"])] == ["create"]


async def test_a_template_without_journal_writes_no_entry(rec: RecAdapter) -> None:
    def unjournaled() -> CallContext:
        return attrs.evolve(plain(), journal=False)

    created = await write(
        rec, Operation.CREATE, {"author": "a", "text": "1", "rank": 1}, unjournaled()
    )
    note = created["id"]
    changed = {"id": note, "version": 1, "rank": 7}
    assert await write(rec, Operation.UPDATE, changed, unjournaled()) == {"id": note, "version": 2}
    with pytest.raises(StaleVersion):
        await write(rec, Operation.DELETE, {"id": note, "version": 1}, unjournaled())
    deleted = await write(rec, Operation.DELETE, {"id": note, "version": 2}, unjournaled())
    assert deleted == {"deleted": 1}
    assert await history(rec, note) == []


async def test_the_journal_collection_is_checked_for_journaled_templates(
    mongo_server_uri: str,
) -> None:
    database = unique_name("beds_caps")
    adapter = RecAdapter(store_settings(mongo_server_uri, database))
    adapter.prepare(NOTE_TEMPLATE)
    await adapter.start()
    try:
        await adapter.apply_schema([NOTE_SCHEMA])
        journal = adapter._database["beds_journal"]
        indexes = {index["name"]: index async for index in await journal.list_indexes()}
        assert indexes["beds_journal_event_uq"]["unique"] is True
        assert dict(indexes["beds_journal_event_uq"]["key"]) == {"template": 1, "event_id": 1}
        assert dict(indexes["beds_journal_key_ix"]["key"]) == {
            "template": 1,
            "key": 1,
            "at": 1,
            "event_id": 1,
        }
        await journal.drop_index("beds_journal_key_ix")
        with pytest.raises(DatabaseObjectMissing) as caught:
            await adapter.verify(NOTE_TEMPLATE)
        assert caught.value.details == ("beds_journal.beds_journal_key_ix",)
        await journal.drop()
        with pytest.raises(DatabaseObjectMissing) as caught:
            await adapter.verify(NOTE_TEMPLATE)
        assert caught.value.details == ("beds_journal",)
        await adapter.verify(template(capabilities={"locking": True}))  # not journaled: fine
    finally:
        await adapter.aclose()
        await drop(mongo_server_uri, database)


async def test_the_marker_fields_must_pass_a_strict_validator(mongo_server_uri: str) -> None:
    database = unique_name("beds_caps")
    adapter = RecAdapter(store_settings(mongo_server_uri, database))
    adapter.prepare(NOTE_TEMPLATE)
    await adapter.start()
    try:
        await adapter.apply_schema([NOTE_SCHEMA])
        await adapter.verify(NOTE_TEMPLATE)
        strict = json.loads(NOTE_SCHEMA.text)["validator"]  # as a DBA installs it by hand
        await adapter._database.command("collMod", "rnt_notes", validator=strict)
        with pytest.raises(DatabaseObjectMissing) as caught:
            await adapter.verify(NOTE_TEMPLATE)
        assert caught.value.details == (
            "rnt_notes validator property _beds_key",
            "rnt_notes validator property _beds_updates",
        )
    finally:
        await adapter.aclose()
        await drop(mongo_server_uri, database)


async def test_a_journal_entry_the_validator_refuses_is_a_store_error(rec: RecAdapter) -> None:
    from beds.errors import StoreError

    ctx = CallContext(event_id="test.rec.caps.bad", journal=True)
    with pytest.raises(StoreError):
        await rec._journal_store.append(NOTE_TEMPLATE, "rename", {"id": "x"}, None, None, ctx)


# -- pagination -----------------------------------------------------------------------------------


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ranks=st.lists(st.integers(0, 5), min_size=0, max_size=20),
    limit=st.integers(1, 7),
    inserted=st.lists(st.integers(0, 5), max_size=8),
)
async def test_paging_under_concurrent_inserts_shows_every_earlier_record_exactly_once(
    node: Node, ranks: list[int], limit: int, inserted: list[int]
) -> None:
    author = f"a{uuid.uuid4().hex[:12]}"  # this example's records only
    before = set()
    for rank in ranks:
        created = await node.data("create", {"author": author, "text": "t", "rank": rank})
        before.add(created["id"])
    seen: list[str] = []
    ranks_seen: list[tuple[int, str]] = []
    payload: dict[str, Any] = {"query": "by_author", "params": {"author": author}}
    late = list(inserted)
    while True:
        page = await node.call("fetch", {**payload, "limit": limit})
        assert page.ok, page.error
        assert page.data is not None
        assert len(page.data) <= limit
        seen += [row["id"] for row in page.data]
        ranks_seen += [(-row["rank"], row["id"]) for row in page.data]
        if late:  # another writer inserts between two pages
            await node.call("create", {"author": author, "text": "t", "rank": late.pop()})
        if page.meta.next is None:
            break
        payload["cursor"] = page.meta.next
    assert len(seen) == len(set(seen))
    assert before <= set(seen)
    assert ranks_seen == sorted(ranks_seen)  # -rank, then id: the declared order


async def test_a_datetime_order_pages_by_its_cursor(node: Node) -> None:
    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    made = [
        await node.data("create", {"author": "dt", "text": str(n), "rank": n}) for n in range(5)
    ]
    payload: dict[str, Any] = {
        "query": "recent",
        "params": {"author": "dt", "since": since.isoformat()},
        "limit": 2,
    }
    seen: list[str] = []
    while True:
        page = await node.call("fetch", payload)
        assert page.data is not None, page.error
        seen += [row["id"] for row in page.data]
        if page.meta.next is None:
            break
        payload["cursor"] = page.meta.next
    assert sorted(seen) == sorted(row["id"] for row in made)
    assert len(seen) == 5
    later = {
        "author": "dt",
        "since": (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)).isoformat(),
    }
    assert await node.data("fetch", {"query": "recent", "params": later}) == []


# -- conditions ---------------------------------------------------------------------------------


async def test_conditions_and_order_of_a_declared_query(node: Node) -> None:
    made: dict[tuple[str, int], str] = {}
    for author, rank in [("ann", 3), ("bob", 1), ("cy", 2), ("ann", 2), ("bob", 5)]:
        created = await node.data("create", {"author": author, "text": "t", "rank": rank})
        made[(author, rank)] = created["id"]
    ranked = await node.data(
        "fetch", {"query": "ranked", "params": {"least": 2, "authors": ["ann", "bob"]}}
    )
    assert [(row["author"], row["rank"]) for row in ranked] == [("ann", 2), ("ann", 3), ("bob", 5)]
    bad = await node.call("fetch", {"query": "ranked", "params": {"least": 2, "authors": "ann"}})
    assert bad.error is not None
    assert bad.error.details == ("$.payload.params.authors: must be a list of 1 to 100 values",)
    window = await node.data(
        "fetch", {"query": "window", "params": {"author": "bob", "above": 1, "upto": 5}}
    )
    assert [row["rank"] for row in window] == [5]  # gt 1 and lte 5: both on rank
    below = await node.data("fetch", {"query": "below", "params": {"author": "ann", "under": 3}})
    assert [row["rank"] for row in below] == [2]
    ids = [made[("ann", 3)], made[("cy", 2)], "0" * 24]
    picked = await node.data("fetch", {"query": "picked", "params": {"ids": ids}})
    assert sorted(row["id"] for row in picked) == sorted(ids[:2])
    assert all(set(row) == {"id", "text"} for row in picked)
    not_hex = await node.call("fetch", {"query": "picked", "params": {"ids": ["nope"]}})
    assert code(not_hex) == "BEDS-422"
    assert not_hex.error is not None
    assert not_hex.error.details == ("$.payload.params.ids[0]: must be 24 hexadecimal characters",)


# -- where fetches read ------------------------------------------------------------------------


class Commands(monitoring.CommandListener):
    """The commands a client sends (the ``find`` documents, with their ``$readPreference``)."""

    def __init__(self) -> None:
        self.events: list[monitoring.CommandStartedEvent] = []

    def finds(self, collection: str = "rnt_notes") -> list[monitoring.CommandStartedEvent]:
        return [
            event
            for event in self.events
            if event.command_name == "find" and event.command.get("find") == collection
        ]

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.events.append(event)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None


class Listened(RecAdapter):
    """The REC adapter, with a command listener on its client."""

    def __init__(self, settings: StoreSettings, commands: Commands) -> None:
        super().__init__(settings)
        self.commands = commands

    def _client_options(self) -> dict[str, Any]:
        return {**super()._client_options(), "event_listeners": [self.commands]}


@pytest.fixture(scope="module")
def replica_set_uri() -> Iterator[str]:
    """A SecantusDB server in replica-set mode (a one-member set: reads carry their preference).

    Few writes here, so its oplog does not slow it down.
    """
    from secantus import SecantusDBServer

    storage = tempfile.mkdtemp(prefix="beds-secantus-rs-")
    server = SecantusDBServer(storage_path=storage, replica_set_name="rs0")
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()
        shutil.rmtree(storage, ignore_errors=True)


@pytest.fixture
async def listened(replica_set_uri: str) -> AsyncIterator[Listened]:
    database = unique_name("beds_caps")
    adapter = Listened(store_settings(replica_set_uri, database), Commands())
    adapter.prepare(NOTE_TEMPLATE)
    await adapter.start()
    try:
        await adapter.apply_schema([NOTE_SCHEMA])
        yield adapter
    finally:
        await adapter.aclose()
        await drop(replica_set_uri, database)


async def test_consistency_secondary_reads_with_secondary_preferred(listened: Listened) -> None:
    n = Node([NOTE_TEMPLATE], listened)
    created = await n.data("create", {"author": "ann", "text": "t", "rank": 1})
    query = {"query": "by_id", "params": {"id": created["id"]}}
    listened.commands.events.clear()
    assert await n.data("fetch", {**query, "consistency": "secondary"})
    assert await n.data("fetch", {**query, "consistency": "primary"})
    assert await n.data("fetch", query)  # the template's default: primary
    preferences = [event.command.get("$readPreference") for event in listened.commands.finds()]
    assert preferences == [{"mode": "secondaryPreferred"}, None, None]


@pytest.fixture(scope="module")
def any_replica_set_uri(replica_set_uri: str) -> str:
    """``BEDS_TEST_MONGO_URI`` when set (a real mongod), else the SecantusDB replica set."""
    return os.environ.get("BEDS_TEST_MONGO_URI", "") or replica_set_uri


async def test_secondary_reads_reach_a_secondary_of_a_real_replica_set(
    any_replica_set_uri: str,
) -> None:
    uri = any_replica_set_uri
    probe: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        hello = await probe.admin.command("hello")
    finally:
        await probe.close()
    if "setName" not in hello:
        pytest.skip("BEDS_TEST_MONGO_URI is not a replica set: this test needs one")
    database = unique_name("beds_caps")
    adapter = Listened(store_settings(uri, database), Commands())
    adapter.prepare(NOTE_TEMPLATE)
    await adapter.start()
    try:
        await adapter.apply_schema([NOTE_SCHEMA])
        n = Node([NOTE_TEMPLATE], adapter)
        created = await n.data("create", {"author": "ann", "text": "t", "rank": 1})
        query = {"query": "by_id", "params": {"id": created["id"]}, "consistency": "secondary"}
        rows: list[Any] = []
        for _ in range(100):  # a secondary may lag: ask until it has the record (10 s at most)
            adapter.commands.events.clear()
            rows = await n.data("fetch", query)
            if rows:
                break
            await asyncio.sleep(0.1)
        assert rows, "no secondary had the record after 10 s"
        (find,) = adapter.commands.finds()
        assert find.command["$readPreference"] == {"mode": "secondaryPreferred"}
        assert adapter._client is not None
        servers = adapter._client.topology_description.server_descriptions()
        secondaries = {a for a, s in servers.items() if s.server_type == SERVER_TYPE.RSSecondary}
        if secondaries:
            assert find.connection_id in secondaries
    finally:
        await adapter.aclose()
        await drop(uri, database)


# -- the example domain ------------------------------------------------------------------------


@pytest.fixture
async def spew(mongo_server_uri: str) -> AsyncIterator[tuple[Node, RecAdapter]]:
    registry = TemplateRegistry()
    registry.add_package("beds_templates_example")
    profile = registry.templates["spew_profile"]
    database = unique_name("beds_caps")
    adapter = RecAdapter(store_settings(mongo_server_uri, database))
    adapter.prepare(profile)
    await adapter.start()
    try:
        await adapter.apply_schema(registry.schema["rec"])
        await adapter.verify(profile)
        yield Node([profile], adapter), adapter
    finally:
        await adapter.aclose()
        await drop(mongo_server_uri, database)


async def test_the_example_profiles_page_filter_and_keep_a_history(
    spew: tuple[Node, RecAdapter],
) -> None:
    n, adapter = spew
    profile = "spew_profile"
    handles = [f"p{n}_{uuid.uuid4().hex[:6]}" for n in range(5)]
    for handle in handles:
        created = await n.call(
            "create", {"handle": handle, "display_name": "Twin"}, handle, profile
        )
        assert created.ok, created.error
    await n.call("update", {"handle": handles[0], "bio": "hello"}, handles[0], profile)
    assert RecAdapter.features >= adapter._plans[profile].template.needs()

    pages: list[list[str]] = []
    payload: dict[str, Any] = {"query": "by_display_name", "params": {"display_name": "Twin"}}
    while True:
        page = await n.call("fetch", {**payload, "limit": 2}, template=profile)
        assert page.data is not None, page.error
        pages.append([row["handle"] for row in page.data])
        if page.meta.next is None:
            break
        payload["cursor"] = page.meta.next
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [handle for page in pages for handle in page] == sorted(handles)

    wanted = [handles[3], handles[0], "nobody"]
    found = await n.data(
        "fetch", {"query": "by_handles", "params": {"handles": wanted}}, template=profile
    )
    assert [row["handle"] for row in found] == sorted(wanted[:2])
    assert found[[row["handle"] for row in found].index(handles[0])]["bio"] == "hello"

    history = {"query": "history", "params": {"handle": handles[0]}}
    entries = await n.data("fetch", history, who=handles[0], template=profile)
    stranger = await n.call("fetch", history, who="someone_else", template=profile)
    assert code(stranger) == "BEDS-403"  # a profile's history is its owner's
    assert [(e["operation"], e["principal"]) for e in entries] == [
        ("create", handles[0]),
        ("update", handles[0]),
    ]
    assert entries[1]["before"]["bio"] is None
    assert entries[1]["after"]["bio"] == "hello"
    assert entries[1]["after"]["id"] == entries[0]["after"]["id"]
