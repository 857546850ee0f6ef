"""The REC adapter against a real MongoDB wire server (SecantusDB, or BEDS_TEST_MONGO_URI)."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
from typing import TYPE_CHECKING, Any

import pytest
from pymongo import AsyncMongoClient

from beds.envelopes import Operation
from beds.errors import (
    Conflict,
    DatabaseObjectMissing,
    NotFound,
    StoreError,
    StoreUnavailable,
    ValidationFailed,
)
from beds.namaste import CallContext, Record, SchemaFile, StoreSettings
from beds.registry import TemplateRegistry
from beds.templates.validate import validate_fetch, validate_write
from beds.testing import unique_name
from beds_rec import RecAdapter

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from beds.templates.model import Template

pytestmark = pytest.mark.mongodb

CTX = CallContext(event_id="test.dev.rec")
SCHEMA_FILE = "beds_templates_example/schema/rec/001_spew_profile.json"
KEY_INDEX = "spf_profiles.beds_idempotency_key_uq"
"""The unique index on the idempotency key a keyed create stores in its document."""
OWN_SCHEMA_FILES = [  # beds-rec's own collections (idempotency keys, lineage, journal) first
    "beds_rec/schema_files/000_beds_idempotency.json",
    "beds_rec/schema_files/001_beds_mslogs.json",
    "beds_rec/schema_files/002_beds_journal.json",
    "beds_rec/schema_files/003_beds_tickets.json",
    "beds_rec/schema_files/004_beds_ticket_results.json",
    "beds_rec/schema_files/005_beds_schema_migrations.json",
]
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

BY_ID = """
name = "spew_profile_by_id"
store = "rec"
tla = "spf"
key = ["id"]
[rec]
collection = "spf_profiles"
[fields.id]
type = "str"
generated = true
[fields.handle]
type = "str"
[fields.bio]
type = "str"
nullable = true
[operations.update]
params = ["id", "bio"]
returns = ["id", "bio"]
[queries.by_id]
params = ["id"]
max_limit = 1
filter = ["id"]
projection = ["id", "handle"]
"""


@pytest.fixture(scope="module")
def registry() -> TemplateRegistry:
    registry = TemplateRegistry()
    registry.add_package("beds_templates_example")
    registry.add_text(BY_ID, source="test_rec_adapter.py")
    return registry


@pytest.fixture
def profile(registry: TemplateRegistry) -> Template:
    return registry.templates["spew_profile"]


@pytest.fixture
def schema(registry: TemplateRegistry) -> list[SchemaFile]:
    return registry.schema["rec"]


def settings(uri: str | None, database: str, **extra: Any) -> StoreSettings:
    options: dict[str, Any] = {"database": database, "server_selection_timeout": 5, **extra}
    if uri is not None:
        options["uri"] = uri
    return StoreSettings(store="rec", options=options, file="beds.toml")


@pytest.fixture
async def adapter(
    mongo_server_uri: str, mongo_database: str, profile: Template, schema: list[SchemaFile]
) -> AsyncIterator[RecAdapter]:
    adapter = RecAdapter(settings(mongo_server_uri, mongo_database))
    adapter.prepare(profile)
    await adapter.start()
    try:
        await adapter.apply_schema(schema)
        yield adapter
    finally:
        await adapter.aclose()


@pytest.fixture
async def fresh_database(mongo_server_uri: str) -> AsyncIterator[str]:
    """A database no other test uses, dropped afterwards."""
    name = unique_name("beds_rec")
    yield name
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server_uri)
    try:
        await client.drop_database(name)
    finally:
        await client.close()


async def create(adapter: RecAdapter, template: Template, **payload: Any) -> Record:
    record = validate_write(template, Operation.CREATE, payload)
    return await adapter.create(template, record, CTX)


async def fetch(adapter: RecAdapter, template: Template, **payload: Any) -> list[Record]:
    return await adapter.fetch(template, validate_fetch(template, payload), CTX)


async def test_apply_schema_is_idempotent_and_verify_passes(
    adapter: RecAdapter, profile: Template, schema: list[SchemaFile], mongo_server_uri: str
) -> None:
    applied = [*OWN_SCHEMA_FILES, SCHEMA_FILE, KEY_INDEX]
    assert await adapter.apply_schema(schema) == applied
    assert await adapter.apply_schema(schema) == applied
    await adapter.verify(profile)

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server_uri)
    try:
        collection = client[adapter.settings.database]["spf_profiles"]
        indexes = {index["name"]: index async for index in await collection.list_indexes()}
        assert set(indexes) == {
            "_id_",
            "spf_handle_uq",
            "spf_display_name_ix",
            KEY_INDEX.split(".")[1],
        }
        assert indexes["spf_handle_uq"].get("unique") is True
        assert not indexes["spf_display_name_ix"].get("unique", False)
    finally:
        await client.close()


async def test_apply_schema_updates_a_changed_validator_and_index(
    mongo_server_uri: str, fresh_database: str, schema: list[SchemaFile]
) -> None:
    adapter = RecAdapter(settings(mongo_server_uri, fresh_database))
    await adapter.start()
    try:
        await adapter.apply_schema(schema)
        changed = json.loads(schema[0].text)
        changed["validator"]["$jsonSchema"]["required"] = ["handle"]
        changed["indexes"][1]["keys"] = [["display_name", -1]]
        await adapter.apply_schema([SchemaFile(name="002_changed.json", text=json.dumps(changed))])
    finally:
        await adapter.aclose()

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server_uri)
    try:
        database = client[fresh_database]
        (info,) = await (await database.list_collections(filter={"name": "spf_profiles"})).to_list()
        assert info["options"]["validator"]["$jsonSchema"]["required"] == ["handle"]
        indexes = {i["name"]: i async for i in await database["spf_profiles"].list_indexes()}
        assert dict(indexes["spf_display_name_ix"]["key"]) == {"display_name": -1}
    finally:
        await client.close()


async def test_verify_names_the_missing_collection_and_index(
    mongo_server_uri: str, fresh_database: str, profile: Template
) -> None:
    adapter = RecAdapter(settings(mongo_server_uri, fresh_database))
    adapter.prepare(profile)
    await adapter.start()
    try:
        with pytest.raises(DatabaseObjectMissing) as caught:
            await adapter.verify(profile)
        assert caught.value.objects == (
            "spf_profiles",
            "spf_handle_uq",
            "beds_idempotency",
            "beds_journal",  # spew_profile is journaled
        )
        assert fresh_database in caught.value.message

        bare = SchemaFile(name="000_bare.json", text='{"collection": "spf_profiles"}')
        assert await adapter.apply_schema([bare]) == [*OWN_SCHEMA_FILES, "000_bare.json", KEY_INDEX]
        with pytest.raises(DatabaseObjectMissing) as caught:
            await adapter.verify(profile)
        assert caught.value.details == ("spf_handle_uq",)
        # Keyed creates need the unique index on the key they store in the document.
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server_uri)
        try:
            await client[fresh_database]["spf_profiles"].drop_index("beds_idempotency_key_uq")
        finally:
            await client.close()
        with pytest.raises(DatabaseObjectMissing) as caught:
            await adapter.verify(profile)
        assert caught.value.details == ("spf_handle_uq", KEY_INDEX)
    finally:
        await adapter.aclose()


async def test_a_validator_that_forbids_other_fields_is_given_the_key_field(
    mongo_server_uri: str, fresh_database: str, profile: Template, schema: list[SchemaFile]
) -> None:
    strict = json.loads(schema[0].text)
    rules = strict["validator"]["$jsonSchema"]
    rules["additionalProperties"] = False
    rules["properties"]["_id"] = {"bsonType": "objectId"}
    strict_file = SchemaFile(name="001_strict.json", text=json.dumps(strict))
    adapter = RecAdapter(settings(mongo_server_uri, fresh_database))
    adapter.prepare(profile)
    await adapter.start()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server_uri)
    try:
        await adapter.apply_schema([strict_file])
        await adapter.verify(profile)
        database = client[fresh_database]
        (info,) = await (await database.list_collections(filter={"name": "spf_profiles"})).to_list()
        applied = info["options"]["validator"]["$jsonSchema"]
        assert applied["properties"]["_beds_key"] == {"bsonType": "string"}
        assert applied["additionalProperties"] is False
        keyed = CallContext(
            event_id="test.dev.rec", idempotency_key="strict-1", fingerprint="f" * 64
        )
        record = validate_write(
            profile, Operation.CREATE, {"handle": "strict", "display_name": "S"}
        )
        assert (await adapter.create(profile, record, keyed))["handle"] == "strict"

        # A DBA's validator without the field: keyed creates would fail, so verify says so.
        await database.command("collMod", "spf_profiles", validator=strict["validator"])
        with pytest.raises(DatabaseObjectMissing) as caught:
            await adapter.verify(profile)
        assert caught.value.details == ("spf_profiles validator property _beds_key",)
    finally:
        await client.close()
        await adapter.aclose()


async def test_create_returns_the_id_and_created_at(adapter: RecAdapter, profile: Template) -> None:
    handle = unique_name("ada")
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    created = await create(adapter, profile, handle=handle, display_name="Ada")
    assert set(created) == {"id", "handle", "created_at"}
    assert re.fullmatch(r"[0-9a-f]{24}", created["id"])
    assert created["handle"] == handle
    assert ISO_Z.match(created["created_at"])
    assert before <= dt.datetime.fromisoformat(created["created_at"]) <= dt.datetime.now(dt.UTC)

    (found,) = await fetch(adapter, profile, query="by_handle", params={"handle": handle})
    assert found == {
        "id": created["id"],
        "handle": handle,
        "display_name": "Ada",
        "bio": None,
        "created_at": created["created_at"],
    }


async def test_a_duplicate_handle_is_a_conflict(adapter: RecAdapter, profile: Template) -> None:
    handle = unique_name("dup")
    await create(adapter, profile, handle=handle, display_name="First")
    with pytest.raises(Conflict) as caught:
        await create(adapter, profile, handle=handle, display_name="Second")
    assert caught.value.details == ("handle: duplicate value",)
    assert handle not in str(caught.value.to_error())


async def test_fetch_by_display_name_sorts_and_limits(
    adapter: RecAdapter, profile: Template
) -> None:
    name = unique_name("Name")
    handles = sorted(unique_name("h") for _ in range(3))
    for handle in reversed(handles):
        await create(adapter, profile, handle=handle, display_name=name, bio="hi")
    records = await fetch(
        adapter, profile, query="by_display_name", params={"display_name": name}, limit=2
    )
    assert records == [{"handle": h, "display_name": name} for h in handles[:2]]
    everything = await fetch(
        adapter, profile, query="by_display_name", params={"display_name": name}
    )
    assert [r["handle"] for r in everything] == handles
    nothing = await fetch(
        adapter, profile, query="by_display_name", params={"display_name": unique_name("x")}
    )
    assert nothing == []


async def test_update_sets_only_the_sent_fields(adapter: RecAdapter, profile: Template) -> None:
    handle = unique_name("upd")
    await create(adapter, profile, handle=handle, display_name="Before", bio="old")
    record = validate_write(profile, Operation.UPDATE, {"handle": handle, "bio": "new bio"})
    updated = await adapter.update(profile, record, CTX)
    assert updated == {"handle": handle, "display_name": "Before", "bio": "new bio"}

    cleared = validate_write(profile, Operation.UPDATE, {"handle": handle, "bio": None})
    assert (await adapter.update(profile, cleared, CTX))["bio"] is None
    (found,) = await fetch(adapter, profile, query="by_handle", params={"handle": handle})
    assert found["display_name"] == "Before"
    assert found["bio"] is None


async def test_update_of_a_missing_handle_is_not_found(
    adapter: RecAdapter, profile: Template
) -> None:
    record = validate_write(
        profile, Operation.UPDATE, {"handle": unique_name("nobody"), "bio": "x"}
    )
    with pytest.raises(NotFound) as caught:
        await adapter.update(profile, record, CTX)
    assert caught.value.details == ("$.payload.handle",)


async def test_delete_then_not_found(adapter: RecAdapter, profile: Template) -> None:
    handle = unique_name("del")
    await create(adapter, profile, handle=handle, display_name="Gone")
    key = validate_write(profile, Operation.DELETE, {"handle": handle})
    assert await adapter.delete(profile, key, CTX) == {"deleted": 1}
    with pytest.raises(NotFound):
        await adapter.delete(profile, key, CTX)
    assert await fetch(adapter, profile, query="by_handle", params={"handle": handle}) == []


async def test_the_collection_validator_is_a_store_error(
    adapter: RecAdapter, profile: Template
) -> None:
    # Bypass the core's payload validation to reach the DBA's validator.
    record = {"handle": unique_name("bad"), "display_name": 42, "bio": None}
    with pytest.raises(StoreError) as caught:
        await adapter.create(profile, record, CTX)
    assert type(caught.value) is StoreError
    assert caught.value.details == ("display_name: rejected by the validator",)


async def test_id_params_and_keys_are_object_ids(
    adapter: RecAdapter, profile: Template, registry: TemplateRegistry
) -> None:
    by_id = registry.templates["spew_profile_by_id"]
    adapter.prepare(by_id)
    handle = unique_name("byid")
    created = await create(adapter, profile, handle=handle, display_name="Id")
    found = await fetch(adapter, by_id, params={"id": created["id"]})
    assert found == [{"id": created["id"], "handle": handle}]

    record = validate_write(by_id, Operation.UPDATE, {"id": created["id"], "bio": "via id"})
    assert await adapter.update(by_id, record, CTX) == {"id": created["id"], "bio": "via id"}

    with pytest.raises(ValidationFailed) as caught:
        await fetch(adapter, by_id, params={"id": "not-an-object-id"})
    assert caught.value.details == ("$.payload.params.id: must be 24 hexadecimal characters",)
    missing = validate_write(by_id, Operation.UPDATE, {"id": "0" * 24, "bio": "x"})
    with pytest.raises(NotFound):
        await adapter.update(by_id, missing, CTX)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_closed_port_is_store_unavailable(profile: Template) -> None:
    uri = f"mongodb://127.0.0.1:{_closed_port()}/?directConnection=true"
    adapter = RecAdapter(settings(uri, "beds_nowhere", server_selection_timeout=0.3))
    adapter.prepare(profile)
    with pytest.raises(StoreUnavailable) as caught:
        await adapter.start()
    assert caught.value.message == "the MongoDB server cannot be reached"
    with pytest.raises(StoreUnavailable):
        await adapter.verify(profile)
    await adapter.aclose()
    # A refused monitor connect may leave its socket to the GC (PYTHON-5867): see the
    # ResourceWarning filter in the root pyproject.


@pytest.mark.slow
async def test_the_embedded_server_starts_and_serves(
    tmp_path: Path, profile: Template, schema: list[SchemaFile]
) -> None:
    storage = tmp_path / "secantus"
    adapter = RecAdapter(settings(None, "beds_embedded", embedded_path=str(storage)))
    adapter.prepare(profile)
    await adapter.start()
    try:
        await adapter.apply_schema(schema)
        await adapter.verify(profile)
        created = await create(adapter, profile, handle="embedded", display_name="Embedded")
        (found,) = await fetch(adapter, profile, query="by_handle", params={"handle": "embedded"})
        assert found["id"] == created["id"]
    finally:
        await adapter.aclose()
    assert any(storage.iterdir())
    await adapter.aclose()  # twice is fine
