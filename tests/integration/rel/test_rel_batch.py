"""REL batches on the real MariaDB: spp_create_many in one call, fetch_many in one SELECT.

The adapter is called directly (the node's side is tests/integration/test_batch_core.py). Each
test uses handles of its own, so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beds.errors import Conflict, IdempotencyKeyReused, RequestError
from beds.namaste import CallContext, Query, StoreSettings
from beds.registry import TemplateRegistry
from beds_rel import RelAdapter

pytestmark = pytest.mark.mariadb

CTX = CallContext(event_id="test.batch.0")
REGISTRY = TemplateRegistry()
REGISTRY.add_package("beds_templates_example")
POST = REGISTRY.templates["spew_post"]
ATOMIC = attrs.evolve(POST, batch=attrs.evolve(POST.batch, atomic=True))
"""The same template, all or nothing (its plan is POST's: the adapter plans by name)."""


def handle() -> str:
    return f"b_{uuid.uuid4().hex[:12]}"


def keyed(key: str, fingerprint: str = "f" * 64) -> CallContext:
    return attrs.evolve(
        CTX,
        idempotency_key=key,
        fingerprint=fingerprint,
        idempotency_ttl=600.0,
        idempotency_lease=30.0,
        attempt=os.urandom(12).hex(),
    )


@pytest.fixture(scope="module")
def rel(mariadb_url: str, loop: asyncio.AbstractEventLoop) -> Iterator[RelAdapter]:
    adapter = RelAdapter.from_settings(
        StoreSettings(store="rel", options={"url": mariadb_url, "connect_timeout": 2})
    )
    adapter.prepare(POST)
    loop.run_until_complete(adapter.apply_schema(REGISTRY.schema["rel"]))
    loop.run_until_complete(adapter.start())
    loop.run_until_complete(adapter.verify(POST))
    yield adapter
    loop.run_until_complete(adapter.aclose())


@pytest.fixture
def run(loop: asyncio.AbstractEventLoop) -> Any:
    return loop.run_until_complete


def posts(who: str, n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"author": who, "body": f"post {i}", "parent_id": None, **extra} for i in range(n)]


def by_author(rel: RelAdapter, run: Any, who: str) -> list[dict[str, Any]]:
    spec = POST.queries["by_author"]
    return list(run(rel.fetch(POST, Query(spec=spec, params={"author": who}, limit=100), CTX)))


def test_create_many_is_one_call_in_order_with_hashtags(rel: RelAdapter, run: Any) -> None:
    who, tag = handle(), uuid.uuid4().hex[:10]
    records = posts(who, 5)
    records[2]["body"] = f"tagged #{tag}"
    created = run(rel.create_many(POST, records, CTX))
    assert all(not isinstance(c, RequestError) for c in created)
    ids = [c["id"] for c in created]
    assert ids == sorted(ids)
    stored = {p["id"]: p["body"] for p in by_author(rel, run, who)}
    assert [stored[i] for i in ids] == [r["body"] for r in records]
    spec = POST.queries["by_hashtag"]
    found = run(rel.fetch(POST, Query(spec=spec, params={"tag": tag}, limit=10), CTX))
    assert [p["id"] for p in found] == [ids[2]]


def test_a_refused_record_fails_alone_and_the_others_are_written(rel: RelAdapter, run: Any) -> None:
    who = handle()
    records = posts(who, 3)
    records[1]["parent_id"] = 2**62  # a reply to no post: spp_create_many refuses the batch
    created = run(rel.create_many(POST, records, CTX))
    assert isinstance(created[1], Conflict)
    assert not isinstance(created[0], RequestError)
    assert not isinstance(created[2], RequestError)
    assert sorted(p["body"] for p in by_author(rel, run, who)) == ["post 0", "post 2"]


def test_a_keyed_batch_runs_once_and_its_key_is_its_own(rel: RelAdapter, run: Any) -> None:
    who, key = handle(), f"k-{uuid.uuid4().hex}"
    first = run(rel.create_many(POST, posts(who, 4), keyed(key)))
    again = run(rel.create_many(POST, posts(who, 4), keyed(key)))
    assert again == first
    assert len(by_author(rel, run, who)) == 4
    with pytest.raises(IdempotencyKeyReused):
        run(rel.create_many(POST, posts(who, 1), keyed(key, "e" * 64)))


def test_a_keyed_batch_with_a_refused_record_repeats_item_by_item(
    rel: RelAdapter, run: Any
) -> None:
    who, key = handle(), f"k-{uuid.uuid4().hex}"
    records = posts(who, 3)
    records[0]["parent_id"] = 2**62
    first = run(rel.create_many(POST, records, keyed(key)))
    again = run(rel.create_many(POST, records, keyed(key)))
    assert isinstance(first[0], Conflict)
    assert isinstance(again[0], Conflict)
    assert first[1:] == again[1:]
    assert len(by_author(rel, run, who)) == 2


def test_fetch_many_answers_in_key_order_with_none_for_missing(rel: RelAdapter, run: Any) -> None:
    who = handle()
    created = run(rel.create_many(POST, posts(who, 3), CTX))
    ids = [c["id"] for c in created]
    keys = [{"id": ids[2]}, {"id": 2**62}, {"id": ids[0]}, {"id": ids[2]}]
    found = run(rel.fetch_many(POST, keys, CTX))
    assert [f["id"] if f else None for f in found] == [ids[2], None, ids[0], ids[2]]
    assert found[0] is not None
    assert found[0]["author"] == who
    assert found[0]["body"] == "post 2"


def test_update_and_delete_many_give_each_key_its_outcome(rel: RelAdapter, run: Any) -> None:
    who = handle()
    ids = [c["id"] for c in run(rel.create_many(POST, posts(who, 2), CTX))]
    updated = run(
        rel.update_many(POST, [{"id": ids[0], "body": "new"}, {"id": 2**62, "body": "x"}], CTX)
    )
    assert not isinstance(updated[0], RequestError)
    assert isinstance(updated[1], RequestError)
    assert updated[1].STATUS == 404
    deleted = run(rel.delete_many(POST, [{"id": ids[1]}, {"id": ids[1]}], CTX))
    assert deleted[0] == {"deleted": 1}
    assert isinstance(deleted[1], RequestError)
    assert [p["body"] for p in by_author(rel, run, who)] == ["new"]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(refused=st.lists(st.booleans(), min_size=1, max_size=8), with_key=st.booleans())
def test_an_all_or_nothing_create_many_writes_every_record_or_none(
    rel: RelAdapter, run: Any, refused: list[bool], with_key: bool
) -> None:
    rel.prepare(ATOMIC)
    who = handle()
    records = [
        {"author": who, "body": f"p{i}", "parent_id": 2**62 if bad else None}
        for i, bad in enumerate(refused)
    ]
    ctx = keyed(f"k-{uuid.uuid4().hex}") if with_key else CTX
    created = run(rel.create_many(ATOMIC, records, ctx))
    # Every failing record is named (the others ran in the same transaction), nothing is kept.
    assert [isinstance(c, Conflict) for c in created] == refused
    assert all(isinstance(c, dict) for c, bad in zip(created, refused, strict=True) if not bad)
    written = by_author(rel, run, who)
    assert len(written) == (0 if any(refused) else len(records))
    again = run(rel.create_many(ATOMIC, records, ctx))
    if with_key and not any(refused):
        assert again == created  # answered from the key: nothing written twice
    else:  # unkeyed it runs again; a failed keyed batch released its key with the rollback
        assert [isinstance(c, Conflict) for c in again] == refused
    twice = 1 if with_key or any(refused) else 2
    assert len(by_author(rel, run, who)) == (0 if any(refused) else twice * len(records))


def test_an_all_or_nothing_update_or_delete_many_changes_nothing_unless_all_apply(
    rel: RelAdapter, run: Any
) -> None:
    who = handle()
    ids = [c["id"] for c in run(rel.create_many(POST, posts(who, 2), CTX))]
    missing = {"id": 2**62, "body": "x"}
    updated = run(rel.update_many(ATOMIC, [{"id": ids[0], "body": "new"}, missing], CTX))
    assert not isinstance(updated[0], RequestError)
    assert isinstance(updated[1], RequestError)
    assert updated[1].STATUS == 404
    deleted = run(rel.delete_many(ATOMIC, [{"id": ids[1]}, {"id": ids[1]}], keyed(handle())))
    assert deleted[0] == {"deleted": 1}  # the second delete sees the first's: it fails
    assert isinstance(deleted[1], RequestError)
    assert sorted(p["body"] for p in by_author(rel, run, who)) == ["post 0", "post 1"]
    both = [{"id": ident, "body": "both"} for ident in ids]
    assert all(isinstance(u, dict) for u in run(rel.update_many(ATOMIC, both, keyed(handle()))))
    assert [p["body"] for p in by_author(rel, run, who)] == ["both", "both"]
    gone = run(rel.delete_many(ATOMIC, [{"id": ident} for ident in ids], CTX))
    assert gone == [{"deleted": 1}, {"deleted": 1}]
    assert by_author(rel, run, who) == []


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(refused=st.lists(st.booleans(), min_size=1, max_size=12))
def test_create_many_matches_single_creates(rel: RelAdapter, run: Any, refused: list[bool]) -> None:
    who = handle()
    records = [
        {"author": who, "body": f"p{i}", "parent_id": 2**62 if bad else None}
        for i, bad in enumerate(refused)
    ]
    created = run(rel.create_many(POST, records, CTX))
    assert [isinstance(c, Conflict) for c in created] == refused
    assert sorted(p["body"] for p in by_author(rel, run, who)) == sorted(
        str(r["body"]) for r, bad in zip(records, refused, strict=True) if not bad
    )
