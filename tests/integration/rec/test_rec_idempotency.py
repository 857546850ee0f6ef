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

from beds.envelopes import Operation, Request
from beds.errors import Conflict, IdempotencyKeyReused, NotFound, WriteInDoubt
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
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server_uri)
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


async def lost_claim(keys: Any, context: CallContext, *, lease_left: float) -> None:
    """What an attempt leaves when its node dies between the write and the record of its result."""
    now = dt.datetime.now(dt.UTC)
    await keys.insert_one(
        {
            "_id": context.idempotency_key,
            "fingerprint": context.fingerprint,
            "result": None,
            "attempt": "a-node-that-died",
            "lease_until": now + dt.timedelta(seconds=lease_left),
            "expires_at": now + dt.timedelta(minutes=5),
        }
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


async def test_a_lapsed_delete_that_applied_answers_its_first_outcome(
    rec: RecAdapter, keys: Any
) -> None:
    who = handle()
    await create(rec, {"handle": who, "display_name": "Doomed"}, ctx({}))
    key = {"handle": who}
    deleting = ctx(key, Operation.DELETE)
    await lost_claim(keys, deleting, lease_left=-1)
    # The lost attempt did delete it (a DBA removes the record the same way).
    await rec.delete(PROFILE, key, CallContext(event_id="test.rec.idem"))
    assert await rec.delete(PROFILE, key, handling(deleting)) == {"deleted": 1}


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
