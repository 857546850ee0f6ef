"""The SPEW product's DBA objects on the real MariaDB: hashtags, replies, likes and follows.

The adapter calls them outside any transaction here (the procedures then open their own);
tests/e2e/test_spew_product.py runs them under the client's idempotency keys, inside the
adapter's. Each test uses handles of its own, so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beds.errors import Conflict, NotFound
from beds.namaste import CallContext, Query, StoreSettings
from beds.registry import TemplateRegistry
from beds.templates import Template
from beds_rel import RelAdapter

pytestmark = pytest.mark.mariadb

CTX = CallContext(event_id="test.spew.0")
REGISTRY = TemplateRegistry()
REGISTRY.add_package("beds_templates_example")
POST, LIKE, FOLLOW = (REGISTRY.templates[n] for n in ("spew_post", "spew_like", "spew_follow"))


def handle() -> str:
    return f"s_{uuid.uuid4().hex[:12]}"


def query(template: Template, name: str, **params: Any) -> Query:
    spec = template.queries[name]
    return Query(spec=spec, params=params, limit=spec.max_limit)


@pytest.fixture(scope="module")
def rel(mariadb_url: str, loop: asyncio.AbstractEventLoop) -> Iterator[RelAdapter]:
    adapter = RelAdapter.from_settings(
        StoreSettings(store="rel", options={"url": mariadb_url, "connect_timeout": 2})
    )
    for template in (POST, LIKE, FOLLOW):
        adapter.prepare(template)
    loop.run_until_complete(adapter.apply_schema(REGISTRY.schema["rel"]))
    loop.run_until_complete(adapter.start())
    for template in (POST, LIKE, FOLLOW):
        loop.run_until_complete(adapter.verify(template))
    yield adapter
    loop.run_until_complete(adapter.aclose())


@pytest.fixture
def run(loop: asyncio.AbstractEventLoop) -> Any:
    return loop.run_until_complete


async def _ids(rel: RelAdapter, template: Template, name: str, **params: Any) -> list[Any]:
    return [row["id"] for row in await rel.fetch(template, query(template, name, **params), CTX)]


def test_hashtags_are_indexed_once_per_post_and_found_in_any_case(
    rel: RelAdapter, run: Any
) -> None:
    who, tag = handle(), uuid.uuid4().hex[:10]
    body = f"#{tag} and #{tag.upper()} again, then x#{tag}b and #Ünï_{tag}"
    created = run(rel.create(POST, {"author": who, "body": body, "parent_id": None}, CTX))
    for asked in (tag, tag.upper(), f"{tag}b", f"ünï_{tag}".upper()):
        assert run(_ids(rel, POST, "by_hashtag", tag=asked)) == [created["id"]], asked
    # An edit re-indexes: the old tag no longer finds the post.
    run(rel.update(POST, {"id": created["id"], "body": "no tags now"}, CTX))
    assert run(_ids(rel, POST, "by_hashtag", tag=tag)) == []
    # A delete takes its hashtags and likes along; its replies stay.
    tagged = run(rel.create(POST, {"author": who, "body": f"#{tag}", "parent_id": None}, CTX))
    reply = run(rel.create(POST, {"author": who, "body": "re", "parent_id": tagged["id"]}, CTX))
    run(rel.create(LIKE, {"liker": who, "post_id": tagged["id"]}, CTX))
    assert run(rel.delete(POST, {"id": tagged["id"]}, CTX)) == {"deleted": 1}
    assert run(_ids(rel, POST, "by_hashtag", tag=tag)) == []
    count = run(rel.fetch(LIKE, query(LIKE, "count_by_post", post_id=tagged["id"]), CTX))
    assert count == [{"like_count": 0}]
    assert run(_ids(rel, POST, "replies", parent_id=tagged["id"])) == [reply["id"]]


def test_a_reply_to_a_missing_post_is_a_conflict_and_writes_nothing(
    rel: RelAdapter, run: Any
) -> None:
    who = handle()
    with pytest.raises(Conflict) as refused:
        run(rel.create(POST, {"author": who, "body": "#orphan", "parent_id": 2**62}, CTX))
    assert "the post replied to (parent_id) does not exist" in refused.value.details[0]
    assert run(rel.fetch(POST, query(POST, "count_by_author", author=who), CTX)) == [
        {"post_count": 0}
    ]


def test_likes_and_follows_are_idempotent(rel: RelAdapter, run: Any) -> None:
    ann, bob = handle(), handle()
    post = run(rel.create(POST, {"author": bob, "body": "like me", "parent_id": None}, CTX))
    first = run(rel.create(LIKE, {"liker": ann, "post_id": post["id"]}, CTX))
    assert run(rel.create(LIKE, {"liker": ann, "post_id": post["id"]}, CTX)) == first
    [row] = run(rel.fetch(POST, query(POST, "by_id", id=post["id"]), CTX))
    assert row["like_count"] == 1
    with pytest.raises(Conflict):
        run(rel.create(LIKE, {"liker": ann, "post_id": 2**62}, CTX))

    follow = run(rel.create(FOLLOW, {"follower": ann, "followee": bob}, CTX))
    assert run(rel.create(FOLLOW, {"follower": ann, "followee": bob}, CTX)) == follow
    followers = run(rel.fetch(FOLLOW, query(FOLLOW, "followers", followee=bob), CTX))
    assert [r["follower"] for r in followers] == [ann]
    with pytest.raises(Conflict):
        run(rel.create(FOLLOW, {"follower": ann, "followee": ann}, CTX))
    assert run(rel.delete(FOLLOW, {"follower": ann, "followee": bob}, CTX)) == {"deleted": 1}
    with pytest.raises(NotFound):
        run(rel.delete(FOLLOW, {"follower": ann, "followee": bob}, CTX))
    with pytest.raises(NotFound):
        run(rel.delete(LIKE, {"liker": bob, "post_id": post["id"]}, CTX))


# Letters and digits both Python's \w and PCRE's \p{L}\p{N} agree on (the BMP's assigned
# letters, not marks), so the tag the test expects is the tag MariaDB indexes.
_TAG_CHARS = st.characters(categories=("Lu", "Ll", "Lo", "Nd"), max_codepoint=0xFFFF)
_TEXT = st.text(
    st.characters(codec="utf-8", exclude_characters="#\x00"),
    max_size=80,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(before=_TEXT, tag=st.text(_TAG_CHARS, min_size=1, max_size=30), after=_TEXT)
def test_any_body_round_trips_and_its_hashtag_finds_it(
    rel: RelAdapter, run: Any, before: str, tag: str, after: str
) -> None:
    body = f"{before} #{tag} {after}"[:280]
    who = handle()
    created = run(rel.create(POST, {"author": who, "body": body, "parent_id": None}, CTX))
    [row] = run(rel.fetch(POST, query(POST, "by_id", id=created["id"]), CTX))
    assert row["body"] == body
    if f"#{tag}" in body:  # not cut off at 280 characters
        found = run(_ids(rel, POST, "by_hashtag", tag=tag))
        assert created["id"] in found
    run(rel.delete(POST, {"id": created["id"]}, CTX))
