"""REC batches against a real MongoDB wire server: per-item outcomes, all or nothing, keys.

The server is SecantusDB as a one-member replica set (all-or-nothing batches need its
transactions), started for this module; ``BEDS_TEST_MONGO_REPLSET_URI`` names a real replica
set instead. One test starts a standalone server too, which refuses all-or-nothing batches. Each
test uses its own database, dropped afterwards.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import uuid
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient

from beds.envelopes import Operation, Request
from beds.errors import (
    Conflict,
    IdempotencyKeyReused,
    NotFound,
    RequestError,
    StaleVersion,
    StoreError,
    UnsupportedOperation,
    ValidationFailed,
)
from beds.idempotency import fingerprint
from beds.namaste import CallContext, Record, SchemaFile, StoreSettings
from beds.templates.loader import parse_template
from beds.templates.validate import validate_fetch, validate_write
from beds_rec import RecAdapter

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from beds.templates.model import Template

pytestmark = pytest.mark.mongodb

FIELDS = """
[fields.code]
type = "str"
[fields.name]
type = "str"
[fields.qty]
type = "int"
required = false
nullable = true
[fields.meta]
type = "json"
required = false
nullable = true
[fields.id]
type = "str"
generated = true
[fields.created_at]
type = "datetime"
generated = true
"""

ITEM = (
    """
name = "sbt_item"
store = "rec"
tla = "sbt"
key = ["code"]
[capabilities]
journal = true
[access]
create = ["member"]
update = ["member"]
delete = ["member"]
fetch = ["member"]
[rec]
collection = "sbt_items"
indexes = ["sbt_code_uq"]
[operations.create]
params = ["code", "name", "qty", "meta"]
returns = ["id", "code", "created_at"]
[operations.update]
params = ["code", "name", "qty"]
returns = ["code", "name", "qty"]
[operations.delete]
params = ["code"]
[queries.by_code]
params = ["code"]
max_limit = 1
filter = ["code"]
projection = ["id", "code", "name", "qty"]
"""
    + FIELDS
)

ATOMIC = (
    """
name = "sbt_whole"
store = "rec"
tla = "sbt"
key = ["code"]
[batch]
atomic = true
[rec]
collection = "sbt_wholes"
[operations.create]
params = ["code", "name", "qty", "meta"]
returns = ["id", "code"]
[operations.update]
params = ["code", "name"]
returns = ["code", "name"]
[operations.delete]
params = ["code"]
[queries.by_code]
params = ["code"]
max_limit = 1
filter = ["code"]
projection = ["code", "name"]
"""
    + FIELDS
)

LOCKED = """
name = "sbt_lock"
store = "rec"
tla = "sbt"
key = ["code"]
[capabilities]
locking = true
journal = true
[rec]
collection = "sbt_locks"
[fields.code]
type = "str"
[fields.name]
type = "str"
[fields.version]
type = "int"
generated = true
[operations.create]
params = ["code", "name"]
returns = ["code", "version"]
[operations.update]
params = ["code", "name", "version"]
returns = ["code", "name", "version"]
[operations.delete]
params = ["code", "version"]
[queries.by_code]
params = ["code"]
max_limit = 1
filter = ["code"]
projection = ["code", "name", "version"]
"""

PAIR = """
name = "sbt_pair"
store = "rec"
tla = "sbt"
key = ["shelf", "slot"]
[rec]
collection = "sbt_pairs"
[fields.shelf]
type = "str"
[fields.slot]
type = "int"
[fields.label]
type = "str"
[operations.create]
params = ["shelf", "slot", "label"]
[queries.at]
params = ["shelf", "slot"]
max_limit = 1
filter = ["shelf", "slot"]
projection = ["label", "slot"]
"""

BY_ID = """
name = "sbt_item_by_id"
store = "rec"
tla = "sbt"
key = ["id"]
[rec]
collection = "sbt_items"
[fields.id]
type = "str"
generated = true
[fields.code]
type = "str"
[fields.name]
type = "str"
[operations.update]
params = ["id", "name"]
returns = ["id", "name"]
[operations.delete]
params = ["id"]
[queries.by_id]
params = ["id"]
max_limit = 1
filter = ["id"]
projection = ["id", "code"]
"""

SCHEMA = [
    SchemaFile(
        name="001_sbt_items.json",
        text='{"collection": "sbt_items", "validator": {"$jsonSchema": {"properties": '
        '{"qty": {"bsonType": ["int", "null"], "minimum": 0}}}}, "indexes": '
        '[{"name": "sbt_code_uq", "keys": [["code", 1]], "unique": true}]}',
    ),
    SchemaFile(
        name="002_sbt_wholes.json",
        text='{"collection": "sbt_wholes", "validator": {"$jsonSchema": {"properties": '
        '{"name": {"bsonType": "string", "minLength": 1}}}}, "indexes": '
        '[{"name": "sbt_whole_code_uq", "keys": [["code", 1]], "unique": true}]}',
    ),
    SchemaFile(
        name="003_sbt_locks.json",
        text='{"collection": "sbt_locks", "indexes": '
        '[{"name": "sbt_lock_code_uq", "keys": [["code", 1]], "unique": true}]}',
    ),
    SchemaFile(
        name="004_sbt_pairs.json",
        text='{"collection": "sbt_pairs", "indexes": '
        '[{"name": "sbt_pair_uq", "keys": [["shelf", 1], ["slot", 1]], "unique": true}]}',
    ),
]

TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        parse_template(text, source=f"{n}.toml")
        for n, text in enumerate([ITEM, ATOMIC, LOCKED, PAIR, BY_ID])
    )
}
ITEMS, WHOLES, LOCKS, PAIRS, IDS = TEMPLATES.values()


def _server(replica_set: str | None) -> Iterator[str]:
    from secantus import SecantusDBServer

    storage = tempfile.mkdtemp(prefix="beds-rec-batch-")
    server = SecantusDBServer(storage_path=storage, replica_set_name=replica_set)
    server.start()
    try:
        yield str(server.uri)
    finally:
        server.stop()
        shutil.rmtree(storage, ignore_errors=True)


@pytest.fixture(scope="module")
def replica_set_uri() -> Iterator[str]:
    """A MongoDB wire server with transactions (a replica set)."""
    uri = os.environ.get("BEDS_TEST_MONGO_REPLSET_URI")
    if uri:
        yield uri
        return
    yield from _server("rs0")


async def _open(uri: str, database: str) -> RecAdapter:
    adapter = RecAdapter(
        StoreSettings(store="rec", options={"uri": uri, "database": database}, file="beds.toml")
    )
    for template in TEMPLATES.values():
        adapter.prepare(template)
    await adapter.start()
    return adapter


@pytest.fixture
async def rec(replica_set_uri: str) -> AsyncIterator[RecAdapter]:
    database = f"beds_batch_{uuid.uuid4().hex[:10]}"
    adapter = await _open(replica_set_uri, database)
    try:
        await adapter.apply_schema(SCHEMA)
        yield adapter
    finally:
        await adapter.aclose()
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(replica_set_uri)
        try:
            await client.drop_database(database)
        finally:
            await client.close()


def ctx(**changes: Any) -> CallContext:
    return CallContext(event_id=f"ev-{uuid.uuid4().hex[:8]}", **changes)


def keyed(template: Template, operation: Operation, items: list[dict[str, Any]]) -> CallContext:
    payload = {"keys" if operation is Operation.FETCH_MANY else "records": items}
    request = Request(operation=operation, template=template.name, payload=payload)
    return ctx(
        idempotency_key=f"k-{uuid.uuid4().hex}",
        fingerprint=fingerprint(request),
        attempt=uuid.uuid4().hex,
    )


def records(template: Template, operation: Operation, items: list[dict[str, Any]]) -> list[Record]:
    return [validate_write(template, operation, item) for item in items]


async def create_many(
    rec: RecAdapter,
    template: Template,
    items: list[dict[str, Any]],
    context: CallContext | None = None,
) -> list[Record | RequestError]:
    valid = records(template, Operation.CREATE, items)
    return await rec.create_many(template, valid, context or ctx())


async def fetch(rec: RecAdapter, template: Template, **key: Any) -> list[Record]:
    spec = template.key_query()
    assert spec is not None
    query = validate_fetch(template, {"query": spec.name, "params": key})
    return await rec.fetch(template, query, ctx())


async def count(rec: RecAdapter, template: Template) -> int:
    collection = rec._database[template.store_options["collection"]]
    return await collection.count_documents({})


def codes(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"{tag}-{i}" for i in range(n)]


# -- create_many ---------------------------------------------------------------------------------


async def test_create_many_answers_each_item_and_a_duplicate_in_the_middle_is_its_conflict(
    rec: RecAdapter,
) -> None:
    a, b, c, d = codes(4)
    await create_many(rec, ITEMS, [{"code": b, "name": "first"}])
    single = None
    try:
        await rec.create(
            ITEMS, validate_write(ITEMS, Operation.CREATE, {"code": b, "name": "x"}), ctx()
        )
    except Conflict as exc:
        single = exc
    assert single is not None
    items: list[dict[str, Any]] = [
        {"code": a, "name": "A"},
        {"code": b, "name": "B"},  # exists already
        {"code": c, "name": "C", "qty": 3},
        {"code": a, "name": "A again"},  # duplicates item 0
        {"code": d, "name": "D"},
    ]
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    out = await create_many(rec, ITEMS, items)
    assert [type(o).__name__ for o in out] == ["dict", "Conflict", "dict", "Conflict", "dict"]
    for error in (out[1], out[3]):
        assert isinstance(error, Conflict)
        assert error.to_error() == single.to_error()  # exactly what the single create says
    for index, outcome in ((0, out[0]), (2, out[2]), (4, out[4])):
        assert isinstance(outcome, dict)
        assert set(outcome) == {"id", "code", "created_at"}
        assert outcome["code"] == items[index]["code"]
        assert len(outcome["id"]) == 24
        assert int(outcome["id"], 16) >= 0
        assert dt.datetime.fromisoformat(outcome["created_at"]) >= before
        (stored,) = await fetch(rec, ITEMS, code=items[index]["code"])
        assert stored["id"] == outcome["id"]
        assert stored["name"] == items[index]["name"]
    assert await count(rec, ITEMS) == 4


async def test_an_item_mongodb_cannot_store_is_its_validation_error(rec: RecAdapter) -> None:
    a, b = codes(2)
    out = await create_many(
        rec, ITEMS, [{"code": a, "name": "A", "meta": {"$where": 1}}, {"code": b, "name": "B"}]
    )
    assert isinstance(out[0], ValidationFailed)
    assert out[0].details[0].startswith("$.payload.meta: must have object keys")
    assert isinstance(out[1], dict)
    assert await count(rec, ITEMS) == 1


async def test_the_journal_gets_one_entry_per_written_item(rec: RecAdapter) -> None:
    a, b = codes(2)
    await create_many(rec, ITEMS, [{"code": b, "name": "B"}])
    context = ctx(journal=True)
    out = await create_many(
        rec, ITEMS, [{"code": a, "name": "A"}, {"code": b, "name": "dup"}], context
    )
    assert isinstance(out[0], dict)
    assert isinstance(out[1], Conflict)
    journal = rec._database["beds_journal"]
    entries = await journal.find({"event_id": {"$regex": f"^{context.event_id}/"}}).to_list()
    assert [(e["event_id"], e["operation"], e["key"]) for e in entries] == [
        (f"{context.event_id}/0", "create", {"code": a})
    ]
    assert entries[0]["after"]["name"] == "A"
    assert entries[0]["before"] is None

    # Update and delete by the same batch event: one entry each, before and after exact.
    update = ctx(journal=True)
    await rec.update_many(
        ITEMS, records(ITEMS, Operation.UPDATE, [{"code": a, "name": "A2"}]), update
    )
    (entry,) = await journal.find({"event_id": f"{update.event_id}/0"}).to_list()
    assert (entry["before"]["name"], entry["after"]["name"]) == ("A", "A2")
    # The same batch event run again (a redelivery without a key) adds no entry.
    await rec.update_many(
        ITEMS, records(ITEMS, Operation.UPDATE, [{"code": a, "name": "A2"}]), update
    )
    assert await journal.count_documents({"event_id": {"$regex": f"^{update.event_id}/"}}) == 1
    delete = ctx(journal=True)
    await rec.delete_many(ITEMS, [{"code": a}, {"code": "nope"}], delete)
    entries = await journal.find({"event_id": {"$regex": f"^{delete.event_id}/"}}).to_list()
    assert [(e["event_id"], e["before"]["name"], e["after"]) for e in entries] == [
        (f"{delete.event_id}/0", "A2", None)
    ]


# -- all or nothing ------------------------------------------------------------------------------


async def test_an_atomic_batch_with_failing_items_writes_nothing_and_names_each(
    rec: RecAdapter,
) -> None:
    a, b, c, d = codes(4)
    assert rec.transactions
    await create_many(rec, WHOLES, [{"code": b, "name": "there"}])
    items: list[dict[str, Any]] = [
        {"code": a, "name": "A"},
        {"code": b, "name": "B"},  # exists
        {"code": c, "name": "C"},
        {"code": c, "name": "C twice"},  # duplicates item 2
        {"code": d, "name": "D", "meta": {"a.b": 1}},  # MongoDB cannot store it
    ]
    out = await create_many(rec, WHOLES, items)
    assert [type(o).__name__ for o in out] == [
        "dict",
        "Conflict",
        "dict",
        "Conflict",
        "ValidationFailed",
    ]
    assert await count(rec, WHOLES) == 1  # rolled back: only the one made before
    assert await fetch(rec, WHOLES, code=a) == []

    good = await create_many(rec, WHOLES, [{"code": a, "name": "A"}, {"code": c, "name": "C"}])
    assert all(isinstance(o, dict) for o in good)
    assert await count(rec, WHOLES) == 3

    # update_many and delete_many: one missing key, nothing written.
    changes = [{"code": a, "name": "A2"}, {"code": "missing", "name": "M"}]
    out = await rec.update_many(WHOLES, records(WHOLES, Operation.UPDATE, changes), ctx())
    assert isinstance(out[0], dict)
    assert isinstance(out[1], NotFound)
    assert (await fetch(rec, WHOLES, code=a))[0]["name"] == "A"
    # An item the server refuses (the validator) rolls back the ones written before it.
    changes = [{"code": a, "name": "A3"}, {"code": c, "name": ""}]
    out = await rec.update_many(WHOLES, records(WHOLES, Operation.UPDATE, changes), ctx())
    assert out[0] == {"code": a, "name": "A3"}  # would have been: the node ignores it
    assert isinstance(out[1], StoreError)
    assert (await fetch(rec, WHOLES, code=a))[0]["name"] == "A"
    out = await rec.delete_many(WHOLES, [{"code": a}, {"code": "missing"}], ctx())
    assert isinstance(out[1], NotFound)
    assert await count(rec, WHOLES) == 3
    out = await rec.delete_many(WHOLES, [{"code": a}, {"code": c}], ctx())
    assert out == [{"deleted": 1}, {"deleted": 1}]
    assert await count(rec, WHOLES) == 1


async def test_a_standalone_server_refuses_atomic_batches_at_start_and_call() -> None:
    for uri in _server(None):
        adapter = await _open(uri, "beds_batch_standalone")
        try:
            assert not adapter.transactions
            with pytest.raises(UnsupportedOperation, match="atomic = true, which needs MongoDB"):
                await adapter.verify(WHOLES)
            with pytest.raises(UnsupportedOperation, match="use a replica set"):
                await create_many(adapter, WHOLES, [{"code": "x", "name": "X"}])
            # Batches that are not all or nothing are served.
            await adapter.apply_schema(SCHEMA)
            (out,) = await create_many(adapter, ITEMS, [{"code": "x", "name": "X"}])
            assert isinstance(out, dict)
        finally:
            await adapter.aclose()


# -- idempotency keys ----------------------------------------------------------------------------


async def test_a_keyed_batch_runs_once_and_a_repeat_gets_the_same_items(rec: RecAdapter) -> None:
    a, b = codes(2)
    await create_many(rec, ITEMS, [{"code": b, "name": "B"}])
    items = [{"code": a, "name": "A"}, {"code": b, "name": "dup"}]
    context = keyed(ITEMS, Operation.CREATE_MANY, items)
    first = await create_many(rec, ITEMS, items, context)
    again = await create_many(rec, ITEMS, items, attrs.evolve(context, attempt="another"))
    assert again[0] == first[0]
    assert isinstance(again[1], Conflict)
    assert isinstance(first[1], Conflict)
    assert again[1].to_error() == first[1].to_error()
    assert await count(rec, ITEMS) == 2
    other = attrs.evolve(context, fingerprint="f" * 64, attempt="third")
    with pytest.raises(IdempotencyKeyReused):
        await create_many(rec, ITEMS, items, other)


async def _lose_result(rec: RecAdapter, context: CallContext) -> None:
    """Make the key look like its attempt died after writing: no result, lease lapsed."""
    keys = rec._database["beds_idempotency"]
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    await keys.update_one(
        {"_id": context.idempotency_key}, {"$set": {"result": None, "lease_until": past}}
    )


async def test_a_lost_keyed_batch_is_recovered_not_written_twice(rec: RecAdapter) -> None:
    a, b, c = codes(3)
    items = [{"code": a, "name": "A"}, {"code": b, "name": "B"}]
    context = keyed(ITEMS, Operation.CREATE_MANY, items)
    first = await create_many(rec, ITEMS, items, context)
    await _lose_result(rec, context)
    again = await create_many(rec, ITEMS, items, attrs.evolve(context, attempt="second"))
    assert again == first  # the same documents, found by their markers
    assert await count(rec, ITEMS) == 2

    # The same on an all-or-nothing template (its lost attempt committed in one transaction).
    wholes = [{"code": c, "name": "C"}, {"code": a, "name": "A"}]
    context = keyed(WHOLES, Operation.CREATE_MANY, wholes)
    first = await create_many(rec, WHOLES, wholes, context)
    await _lose_result(rec, context)
    assert await create_many(rec, WHOLES, wholes, attrs.evolve(context, attempt="2")) == first
    assert await count(rec, WHOLES) == 2

    # A lost keyed delete answers from what it pinned (the document is gone: deleted by it).
    keys = [{"code": a}, {"code": "nope"}]
    context = keyed(ITEMS, Operation.DELETE_MANY, keys)
    first = await rec.delete_many(ITEMS, keys, context)
    assert first[0] == {"deleted": 1}
    assert isinstance(first[1], NotFound)
    await _lose_result(rec, context)
    again = await rec.delete_many(ITEMS, keys, attrs.evolve(context, attempt="2"))
    assert again[0] == {"deleted": 1}  # not NotFound: the pin says this batch deleted it
    assert isinstance(again[1], NotFound)


async def test_a_lost_keyed_locked_update_answers_from_its_marker(rec: RecAdapter) -> None:
    (a,) = codes(1)
    await create_many(rec, LOCKS, [{"code": a, "name": "v1"}])
    changes = [{"code": a, "name": "v2", "version": 1}]
    context = keyed(LOCKS, Operation.UPDATE_MANY, changes)
    valid = records(LOCKS, Operation.UPDATE, changes)
    first = await rec.update_many(LOCKS, valid, context)
    assert first == [{"code": a, "name": "v2", "version": 2}]
    await _lose_result(rec, context)
    assert await rec.update_many(LOCKS, valid, attrs.evolve(context, attempt="2")) == first
    (stored,) = await fetch(rec, LOCKS, code=a)
    assert stored["version"] == 2


# -- update_many / delete_many -------------------------------------------------------------------


async def test_update_many_answers_not_found_and_stale_versions_per_item(rec: RecAdapter) -> None:
    a, b = codes(2)
    await create_many(rec, LOCKS, [{"code": a, "name": "A"}, {"code": b, "name": "B"}])
    changes: list[dict[str, Any]] = [
        {"code": a, "name": "A2", "version": 1},
        {"code": "missing", "name": "M", "version": 1},
        {"code": b, "name": "B2", "version": 7},  # stale
        {"code": a, "name": "A3", "version": 1},  # the first item moved it to version 2
    ]
    out = await rec.update_many(LOCKS, records(LOCKS, Operation.UPDATE, changes), ctx())
    assert out[0] == {"code": a, "name": "A2", "version": 2}
    assert isinstance(out[1], NotFound)
    assert out[1].details == ("$.payload.code",)  # as the single update says
    assert isinstance(out[2], StaleVersion)
    assert out[2].details == ("current_version: 1",)
    assert isinstance(out[3], StaleVersion)
    assert out[3].details == ("current_version: 2",)
    assert (await fetch(rec, LOCKS, code=b))[0] == {"code": b, "name": "B", "version": 1}

    out = await rec.delete_many(
        LOCKS, [{"code": a, "version": 1}, {"code": b, "version": 1}], ctx()
    )
    assert isinstance(out[0], StaleVersion)
    assert out[1] == {"deleted": 1}
    assert await fetch(rec, LOCKS, code=b) == []


async def test_update_many_returns_the_record_after_each_item(rec: RecAdapter) -> None:
    a, b = codes(2)
    await create_many(rec, ITEMS, [{"code": a, "name": "A", "qty": 1}, {"code": b, "name": "B"}])
    changes: list[dict[str, Any]] = [
        {"code": a, "qty": 5},
        {"code": b, "name": "B2"},
        {"code": a, "name": "A2"},
    ]
    out = await rec.update_many(ITEMS, records(ITEMS, Operation.UPDATE, changes), ctx())
    assert out == [
        {"code": a, "name": "A", "qty": 5},
        {"code": b, "name": "B2", "qty": None},
        {"code": a, "name": "A2", "qty": 5},
    ]
    (stored,) = await fetch(rec, ITEMS, code=a)
    assert (stored["name"], stored["qty"]) == ("A2", 5)


# -- fetch_many ----------------------------------------------------------------------------------


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(picks=st.lists(st.integers(0, 9), min_size=1, max_size=25))
async def test_fetch_many_answers_in_input_order_with_none_for_missing_keys(
    rec: RecAdapter, picks: list[int]
) -> None:
    names = codes(10)
    present = names[:6]  # 6..9 are never created
    made = [{"code": c, "name": c.upper(), "qty": n} for n, c in enumerate(present)]
    await create_many(rec, ITEMS, made)
    keys = [{"code": names[p]} for p in picks]
    out = await rec.fetch_many(ITEMS, keys, ctx())
    assert len(out) == len(keys)
    for key, found in zip(keys, out, strict=True):
        single = await fetch(rec, ITEMS, **key)
        assert found == (single[0] if single else None)


async def test_fetch_many_with_a_compound_key_and_a_secondary_read(rec: RecAdapter) -> None:
    shelf = uuid.uuid4().hex[:6]
    await create_many(rec, PAIRS, [{"shelf": shelf, "slot": n, "label": f"L{n}"} for n in range(3)])
    keys = [
        {"shelf": shelf, "slot": 2},
        {"shelf": "elsewhere", "slot": 0},
        {"shelf": shelf, "slot": 0},
        {"shelf": shelf, "slot": 2},
    ]
    from beds.envelopes import Consistency

    out = await rec.fetch_many(PAIRS, keys, ctx(consistency=Consistency.SECONDARY))
    assert out == [
        {"label": "L2", "slot": 2},
        None,
        {"label": "L0", "slot": 0},
        {"label": "L2", "slot": 2},
    ]


async def test_a_record_changed_between_the_find_and_the_bulk_write_is_told_apart(
    rec: RecAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beds_rec import batch

    a, b, c = codes(3)
    await create_many(rec, ITEMS, [{"code": a, "name": "A"}, {"code": b, "name": "B"}])
    await create_many(rec, LOCKS, [{"code": a, "name": "A"}, {"code": b, "name": "B"}])
    await create_many(rec, LOCKS, [{"code": c, "name": "C"}])
    find = batch._find_keys
    meddle: list[Any] = []

    async def find_then_meddle(*args: Any, **kwargs: Any) -> dict[int, Any]:
        found = await find(*args, **kwargs)
        while meddle:  # another writer, between this batch's find and its bulk write
            await meddle.pop()
        return found

    monkeypatch.setattr(batch, "_find_keys", find_then_meddle)
    items, locks = rec._database["sbt_items"], rec._database["sbt_locks"]

    meddle.append(items.delete_one({"code": a}))
    changes: list[dict[str, Any]] = [{"code": a, "name": "A2"}, {"code": b, "name": "B2"}]
    out = await rec.update_many(ITEMS, records(ITEMS, Operation.UPDATE, changes), ctx())
    assert isinstance(out[0], NotFound)  # deleted meanwhile
    assert out[1] == {"code": b, "name": "B2", "qty": None}

    meddle.append(locks.update_one({"code": c}, {"$set": {"version": 9}}))
    changes = [{"code": c, "name": "C1", "version": 1}]
    (stale,) = await rec.update_many(LOCKS, records(LOCKS, Operation.UPDATE, changes), ctx())
    assert isinstance(stale, StaleVersion)
    assert stale.details == ("current_version: 9",)
    await locks.update_one({"code": c}, {"$set": {"version": 1}})

    meddle.append(locks.update_one({"code": a}, {"$set": {"version": 5}}))
    out = await rec.delete_many(
        LOCKS, [{"code": a, "version": 1}, {"code": b, "version": 1}], ctx()
    )
    assert isinstance(out[0], StaleVersion)
    assert out[0].details == ("current_version: 5",)
    assert out[1] == {"deleted": 1}

    # Bumped to the very version this batch would have given it: it cannot be told from a
    # write of this batch, so both items whose record is at that version are in doubt.
    await create_many(rec, LOCKS, [{"code": b, "name": "B"}])
    meddle.append(
        locks.update_one({"code": b}, {"$set": {"name": "other"}, "$inc": {"version": 1}})
    )
    changes = [
        {"code": b, "name": "B2", "version": 1},
        {"code": c, "name": "C2", "version": 1},
    ]
    out = await rec.update_many(LOCKS, records(LOCKS, Operation.UPDATE, changes), ctx())
    assert [type(o).__name__ for o in out] == ["WriteInDoubt", "WriteInDoubt"]
    assert (await fetch(rec, LOCKS, code=c))[0]["name"] == "C2"


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    stored=st.sets(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=12),
    asked=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=20),
)
async def test_fetch_many_of_compound_keys_matches_one_fetch_per_key(
    rec: RecAdapter, stored: set[tuple[int, int]], asked: list[tuple[int, int]]
) -> None:
    """Few distinct values take the product of ``$in`` lists, many the ``$or``: same answers."""
    tag = uuid.uuid4().hex[:6]
    if stored:
        made = [{"shelf": f"{tag}{s}", "slot": n, "label": f"{s}/{n}"} for s, n in stored]
        assert all(isinstance(o, dict) for o in await create_many(rec, PAIRS, made))
    keys = [{"shelf": f"{tag}{s}", "slot": n} for s, n in asked]
    out = await rec.fetch_many(PAIRS, keys, ctx())
    expected = [{"label": f"{s}/{n}", "slot": n} if (s, n) in stored else None for s, n in asked]
    assert out == expected


async def test_items_the_collection_validator_refuses_fail_alone(rec: RecAdapter) -> None:
    a, b, c = codes(3)
    out = await create_many(
        rec, ITEMS, [{"code": a, "name": "A", "qty": -1}, {"code": b, "name": "B", "qty": 1}]
    )
    assert isinstance(out[0], StoreError)
    assert out[0].details == ("qty: rejected by the validator",)
    assert isinstance(out[1], dict)
    changes: list[dict[str, Any]] = [
        {"code": b, "qty": -5},
        {"code": c, "qty": 1},
        {"code": b, "name": "B2"},
    ]
    out = await rec.update_many(ITEMS, records(ITEMS, Operation.UPDATE, changes), ctx())
    assert isinstance(out[0], StoreError)
    assert isinstance(out[1], NotFound)
    assert out[2] == {"code": b, "name": "B2", "qty": 1}
    assert (await fetch(rec, ITEMS, code=b))[0]["qty"] == 1


async def test_fetch_many_of_many_keys_and_of_scattered_compound_keys(rec: RecAdapter) -> None:
    names = codes(250)
    made = await create_many(rec, ITEMS, [{"code": n, "name": n} for n in names[::2]])
    assert all(isinstance(o, dict) for o in made)
    out = await rec.fetch_many(ITEMS, [{"code": n} for n in reversed(names)], ctx())
    assert [o["code"] if o else None for o in out] == [
        n if i % 2 == 0 else None for i, n in reversed(list(enumerate(names)))
    ]
    # Ten shelves by ten slots would be a hundred combinations for ten keys: $or instead.
    tag = uuid.uuid4().hex[:6]
    pairs = [{"shelf": f"{tag}{n}", "slot": n, "label": str(n)} for n in range(10)]
    await create_many(rec, PAIRS, pairs[:8])
    keys = [{"shelf": p["shelf"], "slot": p["slot"]} for p in reversed(pairs)]
    out = await rec.fetch_many(PAIRS, keys, ctx())
    assert out == [None, None, *({"label": str(n), "slot": n} for n in reversed(range(8)))]


async def test_through_the_node_a_batch_answers_each_item_once_per_key(rec: RecAdapter) -> None:
    """The dispatcher (in-process) in front of the adapter: the wire answer of each item."""
    from beds.testing.local import LocalNode

    node = LocalNode([ITEMS], {"rec": rec})
    a, b = codes(2)
    await create_many(rec, ITEMS, [{"code": b, "name": "B"}])
    records_ = [{"code": a, "name": "A"}, {"code": b, "name": "B"}, {"code": 7}]
    first = await node.call("sbt_item", "create_many", {"records": records_}, idempotency_key="k1")
    assert first.status == 207
    assert first.data is not None
    results = first.data["results"]
    assert [r["ok"] for r in results] == [True, False, False]
    assert results[0]["status"] == 201
    assert set(results[0]["data"]) == {"id", "code", "created_at"}
    assert results[1]["error"]["code"] == "BEDS-409"
    assert results[2]["error"]["details"] == [  # refused by the node: never sent to the store
        "$.records[2].code: must be a string, got integer",
        "$.records[2].name: is required",
    ]
    again = await node.call("sbt_item", "create_many", {"records": records_}, idempotency_key="k1")
    assert again.data == first.data
    assert await count(rec, ITEMS) == 2
    fetched = await node.call("sbt_item", "fetch_many", {"keys": [{"code": b}, {"code": "x"}]})
    assert fetched.data is not None
    assert [r["ok"] for r in fetched.data["results"]] == [True, False]
    assert fetched.data["results"][0]["data"]["name"] == "B"
    assert fetched.data["results"][1]["error"]["code"] == "BEDS-404"


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    existing=st.sets(st.integers(0, 7), max_size=4),
    sent=st.lists(st.integers(0, 7), min_size=1, max_size=16),
)
async def test_create_many_answers_as_one_create_after_another(
    rec: RecAdapter, existing: set[int], sent: list[int]
) -> None:
    """Model: a code is created by its first item unless it exists; every other is a conflict."""
    names = codes(8)
    if existing:
        await create_many(rec, ITEMS, [{"code": names[n], "name": "old"} for n in existing])
    out = await create_many(rec, ITEMS, [{"code": names[n], "name": str(n)} for n in sent])
    taken = set(existing)
    for n, outcome in zip(sent, out, strict=True):
        if n in taken:
            assert isinstance(outcome, Conflict)
        else:
            assert isinstance(outcome, dict)
            assert outcome["code"] == names[n]
            taken.add(n)
    for n in set(sent) - existing:
        (stored,) = await fetch(rec, ITEMS, code=names[n])
        assert stored["name"] == str(n)


async def test_a_template_keyed_by_id_finds_updates_and_deletes_by_the_hex_text(
    rec: RecAdapter,
) -> None:
    a, b = codes(2)
    made = await create_many(rec, ITEMS, [{"code": a, "name": "A"}, {"code": b, "name": "B"}])
    ids = [o["id"] for o in made if isinstance(o, dict)]
    absent = "0" * 24
    found = await rec.fetch_many(IDS, [{"id": ids[1]}, {"id": absent}, {"id": ids[0]}], ctx())
    assert found == [{"id": ids[1], "code": b}, None, {"id": ids[0], "code": a}]
    with pytest.raises(ValidationFailed):  # not an id at all: the whole look-up is refused
        await rec.fetch_many(IDS, [{"id": ids[0]}, {"id": "nope"}], ctx())
    changes = [
        {"id": ids[0], "name": "A2"},
        {"id": "nope", "name": "x"},
        {"id": absent, "name": "y"},
    ]
    out = await rec.update_many(IDS, records(IDS, Operation.UPDATE, changes), ctx())
    assert out[0] == {"id": ids[0], "name": "A2"}
    assert isinstance(out[1], ValidationFailed)
    assert out[1].details == ("$.payload.id: must be 24 hexadecimal characters",)
    assert isinstance(out[2], NotFound)
    assert await rec.delete_many(IDS, [{"id": ids[1]}], ctx()) == [{"deleted": 1}]
    assert await fetch(rec, ITEMS, code=b) == []
