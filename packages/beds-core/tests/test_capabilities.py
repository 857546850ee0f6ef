"""Template capabilities in the node, against the in-memory reference adapter.

Locking, journal, pagination (with conditions), the fetch cache and its invalidation across
two nodes, and every declaration that cannot work refused at load. The real stores run the
same contracts in the integration tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import tomlkit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beds.dispatch.cache import INVALIDATE, FetchCache
from beds.envelopes import Response
from beds.errors import TemplateError
from beds.pagination import Cursors
from beds.templates import Template, parse_template
from beds.testing import MemoryAdapter, TestIdentity
from beds.testing.local import LocalNode

IDENTITY = TestIdentity(env="test")

NOTE: dict[str, Any] = {
    "name": "note",
    "store": "memory",
    "tla": "not",
    "key": ["id"],
    "fields": {
        "id": {"type": "int", "generated": True},
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
        "by_id": {"params": ["id"], "max_limit": 1},
        "by_author": {
            "params": ["author"],
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
    },
    "capabilities": {"locking": True, "journal": True, "cache": True, "cache_ttl": 60},
}


def template(declaration: dict[str, Any] | None = None, **changes: Any) -> Template:
    text = tomlkit.dumps({**(declaration or NOTE), **changes})
    return parse_template(text, source="note.toml")


class Node(LocalNode):
    """A node serving ``note`` from ``store``, as one node of an environment."""

    def __init__(self, note: Template, store: MemoryAdapter, cache: FetchCache | None) -> None:
        super().__init__([note], {"memory": store}, identity=IDENTITY, cache=cache)

    async def call(  # type: ignore[override]
        self, operation: str, payload: dict[str, Any], who: str = "ann"
    ) -> Response:
        return await super().call("note", operation, payload, who=who)


def node(note: Template | None = None) -> Node:
    note = note or template()
    return Node(note, MemoryAdapter(), FetchCache({note.name: note}))


def code(response: Response) -> str | None:
    return response.error.code if response.error is not None else None


# -- declarations that cannot work -------------------------------------------------------------


def without(table: str, *names: str) -> dict[str, Any]:
    changed = dict(NOTE)
    changed[table] = {k: v for k, v in NOTE[table].items() if k not in names}
    return changed


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"capabilities": {"retention_days": 3}},
            "capabilities.retention_days needs a [retention] table",
        ),
        ({"capabilities": {"sharding": True}}, "capabilities.sharding is not a capability"),
        ({"capabilities": {"cache_ttl": 5}}, "capabilities.cache_ttl is set without cache"),
        ({"capabilities": {"consistency": "cached"}}, "'cached' without cache = true"),
        ({"capabilities": {"consistency": "nearest"}}, "capabilities.consistency must be one"),
        ({"capabilities": {"cache": True, "cache_ttl": 0}}, "capabilities.cache_ttl must be"),
        ({"capabilities": {"version_field": "v"}}, "version_field is set without locking"),
        ({"capabilities": {"locking": True, "version_field": "rank"}}, "fields.rank is the lock"),
        ({"capabilities": {"journal": True}, "queries": {"history": {"params": ["id"]}}}, ""),
    ],
)
def test_impossible_capabilities_are_refused_at_load(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(TemplateError) as refused:
        template(**changes)
    assert str(refused.value).startswith("template 'note': note.toml: ")
    assert message in str(refused.value)


def test_locking_needs_a_version_field_that_updates_and_deletes_send() -> None:
    no_field = dict(
        NOTE,
        fields={k: v for k, v in NOTE["fields"].items() if k != "version"},
        operations={
            "create": {"params": ["author", "text", "rank"]},
            "update": {"params": ["id", "text"]},
        },
    )
    with pytest.raises(TemplateError, match=r"capabilities.locking needs a version field"):
        template(no_field)
    ops = dict(NOTE["operations"], delete={"params": ["id"]})
    with pytest.raises(TemplateError, match=r"operations.delete.params must include 'version'"):
        template(operations=ops)


def test_cache_and_journal_need_something_to_cache_or_journal() -> None:
    read_only = dict(NOTE, operations={}, capabilities={"journal": True})
    with pytest.raises(TemplateError, match=r"capabilities\.journal is set on a template without"):
        template(read_only)
    no_queries = dict(NOTE, queries={}, capabilities={"cache": True})
    with pytest.raises(TemplateError, match=r"capabilities\.cache is set on a template without"):
        template(no_queries)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"params": ["author"], "order_by": ["rank"]}, "must include the key fields ['id']"),
        ({"params": ["author"], "order_by": ["id", "nope"]}, "names 'nope', which is not"),
        ({"params": ["x"], "where": {"x": {"field": "rank", "op": "near"}}}, "op must be one"),
        ({"params": ["x"], "where": {"y": {"field": "rank"}}}, "is not one of the query's params"),
        ({"params": ["x"], "where": {"x": {"field": "nope"}}}, "names 'nope', which is not"),
        ({"params": ["x"], "where": {"x": "rank"}}, "must be a table with 'field' and 'op'"),
    ],
)
def test_impossible_queries_are_refused_at_load(query: dict[str, Any], message: str) -> None:
    with pytest.raises(TemplateError) as refused:
        template(queries={**NOTE["queries"], "bad": query})
    assert "queries.bad" in str(refused.value)
    assert message in str(refused.value)


def test_a_range_on_a_value_that_does_not_compare_is_refused() -> None:
    fields = dict(NOTE["fields"], flag={"type": "bool"})
    query = {"params": ["f"], "where": {"f": {"field": "flag", "op": "gt"}}}
    with pytest.raises(TemplateError, match="gt cannot compare bool values"):
        template(fields=fields, queries={**NOTE["queries"], "bad": query})


def test_a_template_needs_the_features_of_its_store() -> None:
    assert template().needs() == {"locking", "journal", "pagination", "filters"}
    plain = dict(NOTE, capabilities={}, queries={"by_id": {"params": ["id"]}})
    assert template(plain).needs() == frozenset()


# -- optimistic locking ---------------------------------------------------------------------------


async def test_a_stale_version_is_refused_with_the_current_one_and_nothing_is_written() -> None:
    n = node()
    created = await n.call("create", {"author": "ann", "text": "one", "rank": 1})
    assert created.data == {"id": 1, "version": 1}
    first = await n.call("update", {"id": 1, "version": 1, "text": "two"})
    assert first.data == {"id": 1, "version": 2}
    stale = await n.call("update", {"id": 1, "version": 1, "text": "lost update"})
    assert (stale.status, code(stale)) == (409, "BEDS-409V")
    assert stale.error is not None
    assert stale.error.details == ("current_version: 2",)
    missing = await n.call("update", {"id": 1, "text": "no version"})
    assert code(missing) == "BEDS-422"
    assert missing.error is not None
    assert "$.payload.version: is required" in missing.error.details
    gone = await n.call("delete", {"id": 1, "version": 1})
    assert code(gone) == "BEDS-409V"
    read = await n.call("fetch", {"query": "by_id", "params": {"id": 1}})
    assert read.data is not None
    assert [(row["text"], row["version"]) for row in read.data] == [("two", 2)]
    deleted = await n.call("delete", {"id": 1, "version": 2})
    assert deleted.ok, deleted.error


# -- journal ------------------------------------------------------------------------------------


async def test_every_write_leaves_a_journal_entry_read_back_with_history() -> None:
    n = node()
    await n.call("create", {"author": "ann", "text": "one", "rank": 1})
    await n.call("update", {"id": 1, "version": 1, "text": "two"}, who="bob")
    await n.call("delete", {"id": 1, "version": 2})
    history = await n.call("fetch", {"query": "history", "params": {"id": 1}})
    assert history.ok, history.error
    assert history.data is not None
    entries = history.data
    assert [e["operation"] for e in entries] == ["create", "update", "delete"]
    assert [e["principal"] for e in entries] == ["ann", "bob", "ann"]
    assert entries[0]["before"] is None
    assert entries[1]["before"]["text"] == "one"
    assert entries[1]["after"]["text"] == "two"
    assert entries[2]["after"] is None
    assert len({e["event_id"] for e in entries}) == 3
    page = await n.call("fetch", {"query": "history", "params": {"id": 1}, "limit": 2})
    assert page.data is not None
    assert len(page.data) == 2
    rest = await n.call(
        "fetch", {"query": "history", "params": {"id": 1}, "cursor": page.meta.next}
    )
    assert rest.data is not None
    assert [e["operation"] for e in page.data + rest.data] == ["create", "update", "delete"]
    assert rest.meta.next is None


async def test_the_history_of_an_owned_record_is_its_owners() -> None:
    owned = template(access={"owner": "author", "create": ["member"]})
    n = Node(owned, MemoryAdapter(), None)
    await n.call("create", {"author": "ann", "text": "one", "rank": 1})
    await n.call("delete", {"id": 1, "version": 1})
    query = {"query": "history", "params": {"id": 1}}
    mine = await n.call("fetch", query, who="ann")
    assert mine.data is not None
    assert len(mine.data) == 2
    theirs = await n.call("fetch", query, who="bob")
    assert code(theirs) == "BEDS-403"
    response = await LocalNode.call(n, "note", "fetch", query, who="root", roles=("admin",))
    assert response.ok, response.error


async def test_history_is_no_query_of_a_template_without_a_journal() -> None:
    plain = template(capabilities={"locking": True})
    response = await Node(plain, MemoryAdapter(), None).call(
        "fetch", {"query": "history", "params": {"id": 1}}
    )
    assert code(response) == "BEDS-422"


# -- pagination -----------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ranks=st.lists(st.integers(0, 5), min_size=0, max_size=30),
    limit=st.integers(1, 7),
    inserted=st.lists(st.integers(0, 5), max_size=10),
)
def test_paging_under_concurrent_inserts_shows_every_earlier_record_exactly_once(
    ranks: list[int], limit: int, inserted: list[int]
) -> None:
    async def scenario() -> None:
        n = node(template(capabilities={}))
        before = set()
        for rank in ranks:
            created = await n.call("create", {"author": "ann", "text": "t", "rank": rank})
            assert created.data is not None
            before.add(created.data["id"])
        seen: list[int] = []
        payload: dict[str, Any] = {"query": "by_author", "params": {"author": "ann"}}
        late = list(inserted)
        while True:
            page = await n.call("fetch", {**payload, "limit": limit})
            assert page.ok, page.error
            assert page.data is not None
            seen += [row["id"] for row in page.data]
            if late:  # another writer inserts between two pages
                await n.call("create", {"author": "ann", "text": "t", "rank": late.pop()})
            if page.meta.next is None:
                break
            payload["cursor"] = page.meta.next
        assert len(seen) == len(set(seen))
        assert before <= set(seen)

    asyncio.run(scenario())


async def test_conditions_and_order_of_a_declared_query() -> None:
    n = node(template(capabilities={}))
    for author, rank in [("ann", 3), ("bob", 1), ("cy", 2), ("ann", 2), ("bob", 5)]:
        await n.call("create", {"author": author, "text": "t", "rank": rank})
    ranked = await n.call(
        "fetch", {"query": "ranked", "params": {"least": 2, "authors": ["ann", "bob"]}}
    )
    assert ranked.data is not None
    assert [(row["author"], row["rank"]) for row in ranked.data] == [
        ("ann", 2),
        ("ann", 3),
        ("bob", 5),
    ]
    bad = await n.call("fetch", {"query": "ranked", "params": {"least": 2, "authors": "ann"}})
    assert bad.error is not None
    assert bad.error.details == ("$.payload.params.authors: must be a list of 1 to 100 values",)


async def test_a_cursor_is_refused_when_changed_or_sent_with_other_params() -> None:
    n = node(template(capabilities={}))
    for rank in range(4):
        await n.call("create", {"author": "ann", "text": "t", "rank": rank})
    payload = {"query": "by_author", "params": {"author": "ann"}, "limit": 2}
    first = await n.call("fetch", payload)
    cursor = first.meta.next
    assert cursor is not None
    body, mac = cursor.split(".")
    for forged, why in [
        (body[:-1] + ("A" if body[-1] != "A" else "B") + "." + mac, "was changed"),
        ("x" + cursor, "was changed"),
        (cursor + "x", "was changed"),
        ("", "must be a cursor"),
        (5, "must be a cursor"),
    ]:
        refused = await n.call("fetch", {**payload, "cursor": forged})
        assert code(refused) == "BEDS-400", forged
        assert refused.error is not None
        assert why in refused.error.details[0]
    other = await n.call("fetch", {**payload, "params": {"author": "bob"}, "cursor": cursor})
    assert code(other) == "BEDS-400"
    assert other.error is not None
    assert "belongs to another query or other params" in other.error.details[0]
    one_page = await n.call("fetch", {"query": "by_id", "params": {"id": 1}, "cursor": cursor})
    assert code(one_page) == "BEDS-422"


@settings(max_examples=200)
@given(position=st.integers(0, 200), char=st.characters(codec="ascii"))
def test_no_edit_of_a_cursor_is_accepted(position: int, char: str) -> None:
    spec = template().queries["by_author"]
    cursors = Cursors(b"secret")
    cursor = cursors.make("note", spec, {"author": "ann"}, {"rank": 3, "id": 7})
    index = position % (len(cursor) + 1)
    edited = cursor[:index] + char + cursor[index + 1 :]
    if edited == cursor:
        assert cursors.read(edited, "note", spec, {"author": "ann"}) == [3, 7]
        return
    from beds.errors import MalformedRequest

    with pytest.raises(MalformedRequest):
        cursors.read(edited, "note", spec, {"author": "ann"})


def test_a_cursor_of_another_environment_is_refused() -> None:
    from beds.errors import MalformedRequest

    spec = template().queries["by_author"]
    cursor = Cursors(b"ours").make("note", spec, {"author": "ann"}, {"rank": 3, "id": 7})
    with pytest.raises(MalformedRequest):
        Cursors(b"theirs").read(cursor, "note", spec, {"author": "ann"})


# -- the fetch cache, on two nodes --------------------------------------------------------------


class Bus:
    """The control channel between two nodes' caches: an invalidation reaches every node."""

    def __init__(self) -> None:
        self.caches: list[FetchCache] = []
        self.published: list[dict[str, Any]] = []

    async def publish(self, kind: str, data: dict[str, Any]) -> object:
        assert kind == INVALIDATE
        self.published.append(data)
        for cache in self.caches:
            cache.invalidate(data["template"])
        return None

    def cache(self, note: Template) -> FetchCache:
        cache = FetchCache({note.name: note}, publish=self.publish)
        self.caches.append(cache)
        return cache


async def test_a_write_on_one_node_is_never_read_old_from_the_other() -> None:
    note, store, bus = template(), MemoryAdapter(), Bus()
    a, b = Node(note, store, bus.cache(note)), Node(note, store, bus.cache(note))
    await a.call("create", {"author": "ann", "text": "old", "rank": 1})
    query = {"query": "by_id", "params": {"id": 1}}
    miss, hit = await b.call("fetch", query), await b.call("fetch", query)
    assert (miss.meta.cached, hit.meta.cached) == (False, True)
    assert hit.data == miss.data
    await a.call("update", {"id": 1, "version": 1, "text": "new"})
    assert bus.published == [{"template": "note"}] * 2  # the create, then the update
    after = await b.call("fetch", query)
    assert after.data is not None
    assert (after.data[0]["text"], after.meta.cached) == ("new", False)
    primary = await b.call("fetch", {**query, "consistency": "primary"})
    assert primary.meta.cached is False


async def test_a_read_begun_before_an_invalidation_is_not_kept() -> None:
    note = template()
    cache = FetchCache({note.name: note})
    generation = cache.generation("note")
    cache.invalidate("note")  # a write landed while the store was read
    cache.put("note", "k", generation, object())
    assert cache.get("note", "k") is None


async def test_the_cache_serves_nothing_while_the_control_channel_is_away() -> None:
    note, live = template(), [True]
    cache = FetchCache({note.name: note}, live=lambda: live[0])
    n = Node(note, MemoryAdapter(), cache)
    await n.call("create", {"author": "ann", "text": "t", "rank": 1})
    query = {"query": "by_id", "params": {"id": 1}}
    await n.call("fetch", query)
    live[0] = False
    assert (await n.call("fetch", query)).meta.cached is False


async def test_owned_records_are_cached_per_principal() -> None:
    owned = template(access={"owner": "author", "create": ["member"]})
    store, cache = MemoryAdapter(), FetchCache({"note": owned})
    n = Node(owned, store, cache)
    await n.call("create", {"author": "ann", "text": "t", "rank": 1})
    query = {"query": "by_id", "params": {"id": 1}}
    await n.call("fetch", query, who="ann")
    assert (await n.call("fetch", query, who="ann")).meta.cached is True
    assert (await n.call("fetch", query, who="bob")).meta.cached is False


async def test_consistency_cached_needs_a_cached_template() -> None:
    plain = template(capabilities={})
    response = await Node(plain, MemoryAdapter(), None).call(
        "fetch", {"query": "by_id", "params": {"id": 1}, "consistency": "cached"}
    )
    assert code(response) == "BEDS-422"
    assert response.error is not None
    assert response.error.details == ("$.payload.consistency: template 'note' caches nothing",)
