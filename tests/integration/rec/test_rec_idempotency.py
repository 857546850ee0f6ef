"""Idempotent writes on a real MongoDB wire server: claim, write, record; at most once.

Each test uses its own handles and keys in the session database, so tests neither clean up after
each other nor depend on order (the database is dropped at the end of the session).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError, NetworkTimeout, ServerSelectionTimeoutError

from beds.envelopes import Operation, Request
from beds.errors import (
    Conflict,
    DeadlineExceeded,
    IdempotencyKeyReused,
    NotFound,
    StoreUnavailable,
    WriteInDoubt,
)
from beds.idempotency import fingerprint
from beds.namaste import CallContext, Record, StoreSettings
from beds.registry import TemplateRegistry
from beds.templates.model import Template
from beds.templates.validate import validate_fetch, validate_write
from beds_rec import RecAdapter

pytestmark = pytest.mark.mongodb

REGISTRY = TemplateRegistry()
REGISTRY.add_package("beds_templates_example")
PROFILE: Template = REGISTRY.templates["spew_profile"]


@pytest.fixture
async def rec(mongo_server_uri: str, mongo_database: str) -> AsyncIterator[RecAdapter]:
    adapter = RecAdapter(
        StoreSettings(
            store="rec",
            options={"uri": mongo_server_uri, "database": mongo_database},
            file="beds.toml",
        )
    )
    adapter.prepare(PROFILE)
    await adapter.start()
    try:
        await adapter.apply_schema(REGISTRY.schema["rec"])
        yield adapter
    finally:
        await adapter.aclose()


@pytest.fixture
async def keys(mongo_server_uri: str, mongo_database: str) -> AsyncIterator[Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server_uri, tz_aware=True)
    try:
        yield client[mongo_database]["beds_idempotency"]
    finally:
        await client.close()


def handle() -> str:
    return f"h_{uuid.uuid4().hex[:12]}"


def ctx(
    payload: dict[str, Any], operation: Operation = Operation.CREATE, ttl: float = 60.0
) -> CallContext:
    request = Request(operation=operation, template=PROFILE.name, payload=payload)
    return CallContext(
        event_id="test.rec.idem",
        idempotency_key=f"k-{uuid.uuid4().hex}",
        fingerprint=fingerprint(request),
        idempotency_ttl=ttl,
    )


def handling(context: CallContext) -> CallContext:
    """The context of one handling of the request: each delivery gets its own attempt."""
    return attrs.evolve(context, attempt=uuid.uuid4().hex)


async def create(rec: RecAdapter, payload: dict[str, Any], context: CallContext) -> Record:
    record = validate_write(PROFILE, Operation.CREATE, payload)
    return await rec.create(PROFILE, record, handling(context))


async def profiles(rec: RecAdapter, who: str) -> int:
    query = validate_fetch(PROFILE, {"query": "by_handle", "params": {"handle": who}})
    return len(await rec.fetch(PROFILE, query, CallContext(event_id="test.rec.idem")))


async def test_a_repeat_gets_the_first_result_and_writes_nothing(rec: RecAdapter) -> None:
    who = handle()
    payload = {"handle": who, "display_name": "Once"}
    context = ctx(payload)
    first = await create(rec, payload, context)
    assert await create(rec, payload, context) == first
    assert await profiles(rec, who) == 1


async def test_concurrent_repeats_write_once_the_others_are_in_doubt_or_answered(
    rec: RecAdapter, keys: Any
) -> None:
    who = handle()
    payload = {"handle": who, "display_name": "Race"}
    context = ctx(payload)
    answers = await asyncio.gather(
        *(create(rec, payload, context) for _ in range(10)), return_exceptions=True
    )
    results = [answer for answer in answers if not isinstance(answer, BaseException)]
    doubts = [answer for answer in answers if isinstance(answer, WriteInDoubt)]
    assert len(results) + len(doubts) == 10
    assert results
    assert all(result == results[0] for result in results)
    assert await profiles(rec, who) == 1
    held = await keys.find_one({"_id": context.idempotency_key})
    assert held is not None
    assert held["result"] is not None


async def test_a_key_reused_for_another_request_is_refused(rec: RecAdapter) -> None:
    who = handle()
    payload = {"handle": who, "display_name": "One"}
    context = ctx(payload)
    await create(rec, payload, context)
    other = {"handle": handle(), "display_name": "Two"}
    reused = attrs.evolve(ctx(other), idempotency_key=context.idempotency_key)
    with pytest.raises(IdempotencyKeyReused):
        await create(rec, other, reused)


async def test_a_refused_write_releases_its_key(rec: RecAdapter, keys: Any) -> None:
    who = handle()
    await create(rec, {"handle": who, "display_name": "First"}, ctx({}))
    payload = {"handle": who, "display_name": "Second"}
    context = ctx(payload)
    with pytest.raises(Conflict):
        await create(rec, payload, context)  # duplicate handle
    assert await keys.find_one({"_id": context.idempotency_key}) is None


async def test_delete_runs_once_per_key(rec: RecAdapter) -> None:
    who = handle()
    await create(rec, {"handle": who, "display_name": "Gone"}, ctx({}))
    key = {"handle": who}
    deleting = ctx(key, Operation.DELETE)
    assert await rec.delete(PROFILE, key, handling(deleting)) == {"deleted": 1}
    assert await rec.delete(PROFILE, key, handling(deleting)) == {"deleted": 1}
    with pytest.raises(NotFound):
        await rec.delete(PROFILE, key, ctx(key, Operation.DELETE))


async def test_a_claim_without_a_result_is_in_doubt_until_it_expires(
    rec: RecAdapter, keys: Any
) -> None:
    # What a node killed between its write and the record of its result leaves behind.
    who = handle()
    payload = {"handle": who, "display_name": "Doubt"}
    context = ctx(payload)
    now = dt.datetime.now(dt.UTC)
    claim = {"fingerprint": context.fingerprint, "result": None}
    await keys.insert_one(
        {"_id": context.idempotency_key, **claim, "expires_at": now + dt.timedelta(minutes=1)}
    )
    with pytest.raises(WriteInDoubt):
        await create(rec, payload, context)
    await keys.update_one(
        {"_id": context.idempotency_key}, {"$set": {"expires_at": now - dt.timedelta(seconds=1)}}
    )
    assert (await create(rec, payload, context))["handle"] == who
    assert await profiles(rec, who) == 1


async def test_the_keys_collection_has_a_ttl_index(rec: RecAdapter, keys: Any) -> None:
    indexes = {index["name"]: index async for index in await keys.list_indexes()}
    assert indexes["beds_idempotency_ttl"]["expireAfterSeconds"] == 0
    assert dict(indexes["beds_idempotency_ttl"]["key"]) == {"expires_at": 1}


# -- lost attempts: a leased claim without a result ------------------------------------------


async def lost_claim(
    keys: Any, context: CallContext, *, lease_left: float, target: Any = None
) -> None:
    """What an attempt leaves when its node dies between the write and the record of its result.

    ``target``: what it pinned before writing (a delete pins its document's ``_id``).
    """
    now = dt.datetime.now(dt.UTC)
    claim = {
        "_id": context.idempotency_key,
        "fingerprint": context.fingerprint,
        "result": None,
        "attempt": "a-node-that-died",
        "lease_until": now + dt.timedelta(seconds=lease_left),
        "expires_at": now + dt.timedelta(minutes=5),
    }
    await keys.replace_one(
        {"_id": context.idempotency_key},
        claim if target is None else {**claim, "target": target},
        upsert=True,
    )


async def test_a_live_lease_is_in_doubt_and_says_when_to_ask_again(
    rec: RecAdapter, keys: Any
) -> None:
    payload = {"handle": handle(), "display_name": "Running"}
    context = ctx(payload)
    await lost_claim(keys, context, lease_left=20)
    with pytest.raises(WriteInDoubt) as caught:
        await create(rec, payload, context)
    assert caught.value.details == ("ask again in 20 s",)


async def test_a_lapsed_claim_whose_create_applied_is_answered_from_the_document(
    rec: RecAdapter, keys: Any
) -> None:
    who = handle()
    payload = {"handle": who, "display_name": "Applied"}
    context = ctx(payload)
    first = await create(rec, payload, context)
    # As if the node died after the insert, before recording the result.
    await keys.delete_one({"_id": context.idempotency_key})
    await lost_claim(keys, context, lease_left=-1)
    again = await create(rec, payload, context)
    assert again == first  # the same id and created_at, built from the stored document
    assert await profiles(rec, who) == 1
    held = await keys.find_one({"_id": context.idempotency_key})
    assert held is not None
    assert held["result"] is not None


async def test_a_lapsed_claim_whose_create_never_ran_runs_it_once(
    rec: RecAdapter, keys: Any
) -> None:
    who = handle()
    payload = {"handle": who, "display_name": "Never ran"}
    context = ctx(payload)
    await lost_claim(keys, context, lease_left=-1)
    answers = await asyncio.gather(
        *(create(rec, payload, context) for _ in range(8)), return_exceptions=True
    )
    results = [answer for answer in answers if not isinstance(answer, BaseException)]
    assert all(isinstance(a, WriteInDoubt) for a in answers if isinstance(a, BaseException))
    assert results
    assert all(result == results[0] for result in results)
    assert await profiles(rec, who) == 1


async def stored_profile(rec: RecAdapter, who: str) -> dict[str, Any] | None:
    """The raw document of a profile (``_id``, ``_beds_key`` and all)."""
    collection = rec._database["spf_profiles"]
    document: dict[str, Any] | None = await collection.find_one({"handle": who})
    return document


async def test_a_lapsed_delete_that_applied_answers_its_first_outcome(
    rec: RecAdapter, keys: Any
) -> None:
    who = handle()
    await create(rec, {"handle": who, "display_name": "Doomed"}, ctx({}))
    document = await stored_profile(rec, who)
    assert document is not None
    key = {"handle": who}
    deleting = ctx(key, Operation.DELETE)
    # The lost attempt pinned the document on its claim, deleted it, and died.
    await lost_claim(keys, deleting, lease_left=-1, target=document["_id"])
    await rec.delete(PROFILE, key, CallContext(event_id="test.rec.idem"))
    assert await rec.delete(PROFILE, key, handling(deleting)) == {"deleted": 1}
    held = await keys.find_one({"_id": deleting.idempotency_key})
    assert held is not None
    assert held["result"] is not None


async def test_a_lapsed_delete_never_deletes_a_record_created_after_it(
    rec: RecAdapter, keys: Any
) -> None:
    who = handle()
    await create(rec, {"handle": who, "display_name": "First life"}, ctx({}))
    document = await stored_profile(rec, who)
    assert document is not None
    key = {"handle": who}
    deleting = ctx(key, Operation.DELETE)
    await lost_claim(keys, deleting, lease_left=-1, target=document["_id"])
    await rec.delete(PROFILE, key, CallContext(event_id="test.rec.idem"))  # the lost delete
    await create(rec, {"handle": who, "display_name": "Second life"}, ctx({}))
    assert await rec.delete(PROFILE, key, handling(deleting)) == {"deleted": 1}
    reborn = await stored_profile(rec, who)
    assert reborn is not None  # the record created since is not deleted by the recovery
    assert reborn["display_name"] == "Second life"


async def test_a_lapsed_delete_that_pinned_its_record_but_did_not_run_deletes_it(
    rec: RecAdapter, keys: Any
) -> None:
    who = handle()
    await create(rec, {"handle": who, "display_name": "Pinned"}, ctx({}))
    document = await stored_profile(rec, who)
    assert document is not None
    key = {"handle": who}
    deleting = ctx(key, Operation.DELETE)
    await lost_claim(keys, deleting, lease_left=-1, target=document["_id"])
    assert await rec.delete(PROFILE, key, handling(deleting)) == {"deleted": 1}
    assert await profiles(rec, who) == 0


async def test_a_lapsed_delete_without_a_pin_never_ran_and_runs_now(
    rec: RecAdapter, keys: Any
) -> None:
    who = handle()
    key = {"handle": who}
    deleting = ctx(key, Operation.DELETE)
    await lost_claim(keys, deleting, lease_left=-1)
    with pytest.raises(NotFound):  # nothing to delete: it did not delete anything either
        await rec.delete(PROFILE, key, handling(deleting))
    assert await keys.find_one({"_id": deleting.idempotency_key}) is None  # released
    await create(rec, {"handle": who, "display_name": "Now"}, ctx({}))
    await lost_claim(keys, deleting, lease_left=-1)
    assert await rec.delete(PROFILE, key, handling(deleting)) == {"deleted": 1}
    assert await profiles(rec, who) == 0


async def test_an_attempt_whose_key_was_taken_over_does_not_delete(
    rec: RecAdapter, keys: Any
) -> None:
    who = handle()
    await create(rec, {"handle": who, "display_name": "Kept"}, ctx({}))
    key = {"handle": who}
    slow = handling(ctx(key, Operation.DELETE))
    paused, resume = asyncio.Event(), asyncio.Event()
    assert rec._keys is not None

    async def write(pin: Any) -> Record:
        paused.set()
        await resume.wait()  # meanwhile its lease lapses and another attempt takes the key
        await pin("the document it would delete")
        raise AssertionError("the write ran without its claim")

    running = asyncio.create_task(rec._keys.once(slow, write, lambda pinned: asyncio.sleep(0)))
    await paused.wait()
    await keys.update_one({"_id": slow.idempotency_key}, {"$set": {"attempt": "another"}})
    resume.set()
    with pytest.raises(WriteInDoubt):
        await running
    assert await profiles(rec, who) == 1
    held = await keys.find_one({"_id": slow.idempotency_key})
    assert held is not None
    assert held["attempt"] == "another"  # the other attempt's claim is left alone
    assert "target" not in held


async def test_an_unknown_outcome_shortens_the_lease_so_a_repeat_recovers_at_once(
    rec: RecAdapter, keys: Any
) -> None:
    who = handle()
    payload = {"handle": who, "display_name": "Unknown"}
    context = handling(ctx(payload))
    assert rec._keys is not None

    async def write(pin: Any) -> Record:
        await rec._create(PROFILE, validate_write(PROFILE, Operation.CREATE, payload), context)
        raise asyncio.CancelledError  # the handler is stopped after the write applied

    with pytest.raises(asyncio.CancelledError):
        await rec._keys.once(context, write, lambda pinned: asyncio.sleep(0))
    held = await keys.find_one({"_id": context.idempotency_key})
    assert held is not None
    assert held["lease_until"] <= dt.datetime.now(dt.UTC)
    # Another handling does not wait for the lease: it recovers the created document at once.
    recovered = await create(rec, payload, context)
    document = await stored_profile(rec, who)
    assert document is not None
    assert recovered["id"] == str(document["_id"])
    assert await profiles(rec, who) == 1


async def test_a_recovery_that_fails_keeps_the_lost_attempts_claim_and_pin(
    rec: RecAdapter, keys: Any
) -> None:
    key = {"handle": handle()}
    deleting = handling(ctx(key, Operation.DELETE))
    await lost_claim(keys, deleting, lease_left=-1, target="the pinned _id")
    assert rec._keys is not None

    async def recover(pinned: Any) -> Record | None:
        assert pinned == "the pinned _id"
        raise StoreUnavailable("no server") from ServerSelectionTimeoutError("none")

    async def write(pin: Any) -> Record:
        raise AssertionError("ran before recovery told whether the lost one applied")

    with pytest.raises(StoreUnavailable):
        await rec._keys.once(deleting, write, recover)
    held = await keys.find_one({"_id": deleting.idempotency_key})
    assert held is not None  # not released: the lost delete may have applied
    assert held["target"] == "the pinned _id"
    assert held["lease_until"] <= dt.datetime.now(dt.UTC)  # the next attempt recovers at once


async def test_a_deadline_reached_mid_call_keeps_the_claim(rec: RecAdapter, keys: Any) -> None:
    context = handling(ctx({"handle": handle(), "display_name": "Late"}))
    assert rec._keys is not None

    async def write(pin: Any) -> Record:
        raise DeadlineExceeded("mid-call") from NetworkTimeout("timed out", {})

    with pytest.raises(DeadlineExceeded):
        await rec._keys.once(context, write, lambda pinned: asyncio.sleep(0))
    held = await keys.find_one({"_id": context.idempotency_key})
    assert held is not None  # it may have applied: kept, for the next attempt to recover
    assert held["lease_until"] <= dt.datetime.now(dt.UTC)

    refused = handling(ctx({"handle": handle(), "display_name": "Early"}))

    async def never_sent(pin: Any) -> Record:
        raise DeadlineExceeded("the request's deadline passed before the database call")

    with pytest.raises(DeadlineExceeded):
        await rec._keys.once(refused, never_sent, lambda pinned: asyncio.sleep(0))
    assert await keys.find_one({"_id": refused.idempotency_key}) is None  # released


async def test_a_forgotten_key_still_finds_the_document_its_create_made(
    rec: RecAdapter, keys: Any
) -> None:
    who = handle()
    payload = {"handle": who, "display_name": "Remembered"}
    context = ctx(payload)
    first = await create(rec, payload, context)
    await keys.delete_one({"_id": context.idempotency_key})  # as MongoDB's TTL monitor does
    assert await create(rec, payload, context) == first  # DuplicateKey on _beds_key: applied
    assert await profiles(rec, who) == 1
    document = await stored_profile(rec, who)
    assert document is not None
    assert document["_beds_key"] == f"{context.idempotency_key}#{context.fingerprint[:16]}"


async def test_an_expired_key_is_a_new_key(rec: RecAdapter, keys: Any) -> None:
    first_payload = {"handle": handle(), "display_name": "Old"}
    context = ctx(first_payload)
    await create(rec, first_payload, context)
    await keys.update_one(
        {"_id": context.idempotency_key},
        {"$set": {"expires_at": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)}},
    )
    # Another request with the key, once it expired, runs (it is no longer the first's key).
    who = handle()
    payload = {"handle": who, "display_name": "New"}
    reused = attrs.evolve(ctx(payload), idempotency_key=context.idempotency_key)
    assert (await create(rec, payload, reused))["handle"] == who
    assert await profiles(rec, who) == 1
    held = await keys.find_one({"_id": context.idempotency_key})
    assert held is not None
    assert held["fingerprint"] == reused.fingerprint


async def test_the_key_index_is_unique_and_sparse(rec: RecAdapter) -> None:
    collection = rec._database["spf_profiles"]
    indexes = {index["name"]: index async for index in await collection.list_indexes()}
    index = indexes["beds_idempotency_key_uq"]
    assert dict(index["key"]) == {"_beds_key": 1}
    assert index["unique"] is True
    assert index["sparse"] is True
    # Unkeyed creates store no key: any number of them.
    for _ in range(3):
        await create(
            rec,
            {"handle": handle(), "display_name": "Unkeyed"},
            CallContext(event_id="test.rec.idem"),
        )

    def keyed_profile() -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC)
        return {"handle": handle(), "display_name": "K", "created_at": now, "_beds_key": "same"}

    await collection.insert_one(keyed_profile())
    with pytest.raises(DuplicateKeyError):
        await collection.insert_one(keyed_profile())


async def test_reads_never_return_the_key_field(rec: RecAdapter) -> None:
    who = handle()
    payload = {"handle": who, "display_name": "Hidden"}
    created = await create(rec, payload, ctx(payload))
    query = validate_fetch(PROFILE, {"query": "by_handle", "params": {"handle": who}})
    (found,) = await rec.fetch(PROFILE, query, CallContext(event_id="test.rec.idem"))
    assert "_beds_key" not in found
    assert "_beds_key" not in created
    update = {"handle": who, "bio": "changed"}
    updated = await rec.update(
        PROFILE,
        validate_write(PROFILE, Operation.UPDATE, update),
        handling(ctx(update, Operation.UPDATE)),
    )
    assert "_beds_key" not in updated


async def test_the_same_handlings_retry_takes_its_claim_back_at_once(
    rec: RecAdapter, keys: Any
) -> None:
    who = handle()
    payload = {"handle": who, "display_name": "Retry"}
    context = handling(ctx(payload))
    await lost_claim(keys, context, lease_left=60)
    await keys.update_one({"_id": context.idempotency_key}, {"$set": {"attempt": context.attempt}})
    record = validate_write(PROFILE, Operation.CREATE, payload)
    assert (await rec.create(PROFILE, record, context))["handle"] == who  # not in doubt
    assert await profiles(rec, who) == 1
