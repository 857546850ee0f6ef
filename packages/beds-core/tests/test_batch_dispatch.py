"""Batch operations through the dispatcher: per-item results, limits, access, keys, atomicity.

Two in-memory stores serve them: ``BatchMemory`` has the ``batch`` feature (one store call per
batch, as REL and REC do), ``MemoryAdapter`` without it takes the node's fallback (one single
call per record). What a caller sees must not depend on which one serves it, except where the
contract says (an idempotency key, or all-or-nothing, needs the feature).
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import pytest
import tomlkit
from hypothesis import given
from hypothesis import strategies as st

from beds.codec import encode_request
from beds.config.model import ReliabilitySettings
from beds.dispatch import Dispatcher
from beds.dispatch.live import LivePublisher
from beds.envelopes import MAX_IDEMPOTENCY_KEY, Operation, Request, RequestMeta, Response
from beds.errors import RequestError, StoreBusy, StoreUnavailable
from beds.factory import Factory
from beds.idempotency import encode_outcomes, item_key, repeat_outcomes
from beds.lineage import Event
from beds.namaste import FEATURES, BatchStore, CallContext, Record
from beds.templates import parse_template
from beds.testing import MemoryAdapter, TestIdentity
from beds.values import to_wire_record

if TYPE_CHECKING:
    from collections.abc import Sequence

    from beds.templates.model import Template

IDENTITY = TestIdentity(env="test")
ANN = IDENTITY.credential("ann")
BOB = IDENTITY.credential("bob")
ADMIN = IDENTITY.credential("root", ("member", "admin"))
NOTE = "demo_item"


@attrs.define
class _Claim:
    fingerprint: str
    result: bytes | None = None


class BatchMemory(MemoryAdapter):
    """The in-memory store with the ``batch`` feature: a batch is one call, all or nothing when
    the template says, at most once per idempotency key."""

    features = frozenset(FEATURES)

    def __init__(self) -> None:
        super().__init__("memory")
        self.batches: list[tuple[str, int]] = []
        self.claims: dict[str, _Claim] = {}

    async def create_many(
        self, template: Template, records: Sequence[Record], ctx: CallContext
    ) -> list[Record | RequestError]:
        return await self._many("create", template, records, ctx)

    async def update_many(
        self, template: Template, records: Sequence[Record], ctx: CallContext
    ) -> list[Record | RequestError]:
        return await self._many("update", template, records, ctx)

    async def delete_many(
        self, template: Template, keys: Sequence[Record], ctx: CallContext
    ) -> list[Record | RequestError]:
        return await self._many("delete", template, keys, ctx)

    async def fetch_many(
        self, template: Template, keys: Sequence[Record], ctx: CallContext
    ) -> list[Record | None]:
        self.batches.append(("fetch", len(keys)))
        table = self.tables.get(template.name, {})
        rows = [table.get(tuple(key[name] for name in template.key)) for key in keys]
        return [None if row is None else to_wire_record(row) for row in rows]

    async def _many(
        self, operation: str, template: Template, records: Sequence[Record], ctx: CallContext
    ) -> list[Record | RequestError]:
        key = ctx.idempotency_key
        if key is not None and key in self.claims:
            claim = self.claims[key]
            return repeat_outcomes(ctx, claim.fingerprint, claim.result)
        if key is not None:
            self.claims[key] = _Claim(ctx.fingerprint)
        self.batches.append((operation, len(records)))
        single = getattr(self, f"_{operation}")
        before = copy.deepcopy(self.tables.get(template.name, {}))
        outcomes: list[Record | RequestError] = []
        for record in records:
            try:
                outcomes.append(await single(template, record))
            except RequestError as exc:
                outcomes.append(exc)
        if template.batch.atomic and any(isinstance(o, RequestError) for o in outcomes):
            self.tables[template.name] = before
        if key is not None:
            self.claims[key].result = encode_outcomes(outcomes)
        return outcomes


class SingleMemory(MemoryAdapter):
    """The in-memory store without the ``batch`` feature (the node's fallback serves it)."""

    features = frozenset(FEATURES) - {"batch"}


class Sink:
    """Collects the lineage and audit events a dispatcher leaves."""

    token = 0

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.published: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    async def publish_now(self, *events: Event) -> None:
        self.published.extend(events)


def node(
    template: Template,
    adapter: MemoryAdapter,
    *,
    limit: int = 500,
    events: Sink | None = None,
    live: LivePublisher | None = None,
) -> Dispatcher:
    return Dispatcher(
        Factory({template.name: template}, {"memory": adapter}),
        node="n1",
        env="test",
        max_message_bytes=1 << 22,
        max_batch_records=limit,
        reliability=ReliabilitySettings(retry_initial_delay=0.001),
        authenticator=IDENTITY.authenticator,
        events=events,
        live=live,
    )


async def send(
    target: Dispatcher,
    operation: str,
    payload: dict[str, Any],
    *,
    template: str = NOTE,
    credential: str | None = ANN,
    key: str | None = None,
) -> Response:
    body = encode_request(
        Request(
            operation=Operation(operation),
            template=template,
            payload=payload,
            meta=RequestMeta(idempotency_key=key),
        )
    )
    _, response = await target.handle(body, "application/json", credential=credential)
    return response


def item(n: int) -> dict[str, Any]:
    return {"title": "abc", "count": n % 11, "active": True}


@pytest.fixture(params=["batch", "fallback"])
def store(request: pytest.FixtureRequest) -> MemoryAdapter:
    return BatchMemory() if request.param == "batch" else SingleMemory()


def writes(adapter: MemoryAdapter) -> list[tuple[str, int]]:
    """The batch writes a ``BatchMemory`` ran (its reads for audits left out)."""
    return [call for call in getattr(adapter, "batches", []) if call[0] != "fetch"]


def codes(response: Response) -> list[str | None]:
    return [
        None if result["ok"] else result["error"]["code"] for result in response.data["results"]
    ]


# -- the answer ---------------------------------------------------------------------------------


async def test_a_batch_creates_every_record_in_order_with_one_result_each(
    demo_template: Template, store: MemoryAdapter
) -> None:
    target = node(demo_template, store)
    response = await send(target, "create_many", {"records": [item(n) for n in range(5)]})
    assert (response.ok, response.status) == (True, 201), response.error
    data = response.data
    assert (data["succeeded"], data["failed"]) == (5, 0)
    assert [r["status"] for r in data["results"]] == [201] * 5
    ids = [r["data"]["id"] for r in data["results"]]
    assert ids == sorted(ids)
    assert [store.tables[NOTE][(i,)]["count"] for i in ids] == [0, 1, 2, 3, 4]
    if isinstance(store, BatchMemory):
        assert writes(store) == [("create", 5)]


async def test_bad_records_fail_alone_with_their_own_paths_and_never_reach_the_store(
    demo_template: Template, store: MemoryAdapter
) -> None:
    target = node(demo_template, store)
    records = [item(0), {"title": "X", "count": 1, "active": True}, "nope", item(3)]
    response = await send(target, "create_many", {"records": records})
    assert (response.ok, response.status) == (True, 207)
    assert codes(response) == [None, "BEDS-422", "BEDS-422", None]
    bad = response.data["results"][1]
    assert bad["status"] == 422
    assert bad["error"]["details"] == [
        "$.records[1].title: must be at least 2 characters, got 1",
        "$.records[1].title: must match [a-z]+",
    ]
    assert response.data["results"][2]["error"]["details"] == [
        "$.records[2]: must be an object, got string"
    ]
    assert (response.data["succeeded"], response.data["failed"]) == (2, 2)
    assert len(store.tables[NOTE]) == 2
    if isinstance(store, BatchMemory):
        assert writes(store) == [("create", 2)]


async def test_an_item_error_is_exactly_what_the_single_operation_answers(
    demo_template: Template, store: MemoryAdapter
) -> None:
    target = node(demo_template, store)
    single = await send(target, "create", {"title": "abc", "count": 99, "active": "yes"})
    batch = await send(
        target,
        "create_many",
        {"records": [item(1), {"title": "abc", "count": 99, "active": "yes"}]},
    )
    assert single.error is not None
    error = batch.data["results"][1]["error"]
    assert error["code"] == single.error.code
    assert error["message"] == single.error.message
    assert error["details"] == [
        d.replace("$.payload", "$.records[1]") for d in single.error.details
    ]


async def test_store_failures_are_per_item_and_the_others_are_written(
    demo_template: Template, store: MemoryAdapter
) -> None:
    target = node(demo_template, store)
    created = await send(target, "create_many", {"records": [item(n) for n in range(3)]})
    ids = [r["data"]["id"] for r in created.data["results"]]
    response = await send(
        target,
        "update_many",
        {
            "records": [
                {"id": ids[0], "count": 7},
                {"id": 10**9, "count": 7},
                {"id": ids[2], "count": 8},
            ]
        },
    )
    assert (response.status, codes(response)) == (207, [None, "BEDS-404", None])
    assert [store.tables[NOTE][(i,)]["count"] for i in ids] == [7, 1, 8]
    deleted = await send(target, "delete_many", {"records": [{"id": ids[1]}, {"id": ids[1]}]})
    assert codes(deleted) == [None, "BEDS-404"]
    assert deleted.data["results"][0] == {"ok": True, "status": 200, "data": {"deleted": 1}}


async def test_fetch_many_answers_each_key_in_order_and_404_for_a_missing_one(
    demo_template: Template, store: MemoryAdapter
) -> None:
    target = node(demo_template, store)
    created = await send(target, "create_many", {"records": [item(n) for n in range(2)]})
    ids = [r["data"]["id"] for r in created.data["results"]]
    keys = [{"id": ids[1]}, {"id": 424242}, {"id": ids[0]}, {"id": "x"}]
    response = await send(target, "fetch_many", {"keys": keys}, credential=None)
    assert (response.ok, response.status) == (True, 207)
    assert codes(response) == [None, "BEDS-404", None, "BEDS-422"]
    results = response.data["results"]
    assert [results[0]["data"]["id"], results[2]["data"]["id"]] == [ids[1], ids[0]]
    assert results[0]["status"] == 200
    assert results[3]["error"]["details"] == ["$.keys[3].id: must be an integer, got string"]
    every = await send(target, "fetch_many", {"keys": keys[:1], "consistency": "secondary"})
    assert (every.status, every.data["succeeded"]) == (200, 1)


# -- request-level refusals: nothing runs ---------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        ({"records": []}, "$.records: must hold 1 to 3 items, got 0"),
        ({"records": [{}] * 4}, "$.records: must hold 1 to 3 items, got 4"),
        ({"records": {"title": "abc"}}, "$.records: must be an array, got object"),
        ({}, "$.records: is required"),
        ({"records": [{}], "keys": []}, "$.keys: is not a create_many key (records)"),
    ],
)
async def test_a_bad_or_oversized_batch_is_refused_whole(
    demo_template: Template, payload: dict[str, Any], detail: str
) -> None:
    adapter = BatchMemory()
    response = await send(node(demo_template, adapter, limit=3), "create_many", payload)
    assert (response.ok, response.status) == (False, 400)
    assert response.error is not None
    assert response.error.code == "BEDS-400"
    assert detail in response.error.details
    assert writes(adapter) == []
    assert adapter.tables.get(NOTE, {}) == {}


async def test_the_templates_max_records_lowers_the_nodes_limit(
    demo_declaration: dict[str, Any],
) -> None:
    demo_declaration["batch"] = {"max_records": 2}
    template = parse_template(tomlkit.dumps(demo_declaration), source="demo.toml")
    target = node(template, BatchMemory(), limit=500)
    refused = await send(target, "create_many", {"records": [item(n) for n in range(3)]})
    assert refused.error is not None
    assert refused.error.details == ("$.records: must hold 1 to 2 items, got 3",)
    assert (await send(target, "create_many", {"records": [item(1), item(2)]})).status == 201


async def test_fetch_many_refuses_an_unknown_consistency(demo_template: Template) -> None:
    response = await send(
        node(demo_template, BatchMemory()),
        "fetch_many",
        {"keys": [{"id": 1}], "consistency": "cached"},
    )
    assert response.error is not None
    assert (response.status, response.error.details) == (
        400,
        ("$.consistency: template 'demo_item' caches nothing",),
    )


async def test_an_undeclared_single_operation_has_no_batch(
    demo_declaration: dict[str, Any],
) -> None:
    del demo_declaration["operations"]["delete"]
    template = parse_template(tomlkit.dumps(demo_declaration), source="demo.toml")
    response = await send(node(template, BatchMemory()), "delete_many", {"records": [{"id": 1}]})
    assert response.error is not None
    assert (response.status, response.error.code) == (405, "BEDS-405")


# -- idempotency --------------------------------------------------------------------------------


async def test_a_keyed_batch_runs_once_and_a_repeat_gets_the_same_results(
    demo_template: Template,
) -> None:
    adapter = BatchMemory()
    target = node(demo_template, adapter)
    records = {"records": [item(1), {"title": "X"}, item(2)]}
    first = await send(target, "create_many", records, key="load-1")
    again = await send(target, "create_many", records, key="load-1")
    assert (again.status, again.data) == (first.status, first.data)
    assert first.status == 207
    assert writes(adapter) == [("create", 2)]
    assert len(adapter.tables[NOTE]) == 2
    other = await send(target, "create_many", {"records": [item(3)]}, key="load-1")
    assert other.error is not None
    assert other.error.code == "BEDS-409K"
    assert len(adapter.tables[NOTE]) == 2


async def test_a_keyed_batch_runs_each_record_once_where_the_store_runs_it_record_by_record(
    demo_template: Template,
) -> None:
    adapter = SingleMemory()
    target = node(demo_template, adapter)
    records = {"records": [item(1), {"title": ""}, item(3)]}
    first = await send(target, "create_many", records, key="k")
    again = await send(target, "create_many", records, key="k")
    assert first.status == again.status == 207
    assert first.data == again.data  # answered from each item's stored outcome
    assert len(adapter.tables[NOTE]) == 2  # nothing written twice
    other = await send(target, "create_many", {"records": [item(4)]}, key="k")
    assert other.data["results"][0]["error"]["code"] == "BEDS-409K"
    assert len(adapter.tables[NOTE]) == 2


@given(key=st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=200))
def test_an_item_key_fits_the_key_limit_and_differs_per_item(key: str) -> None:
    keys = {item_key(key, index) for index in (0, 1, 9999)}
    assert len(keys) == 3
    assert all(len(k) <= MAX_IDEMPOTENCY_KEY for k in keys)


# -- all or nothing -----------------------------------------------------------------------------


@pytest.fixture
def atomic(demo_declaration: dict[str, Any]) -> Template:
    demo_declaration["batch"] = {"atomic": True}
    return parse_template(tomlkit.dumps(demo_declaration), source="demo.toml")


async def test_an_atomic_batch_with_a_bad_record_writes_nothing(atomic: Template) -> None:
    adapter = BatchMemory()
    response = await send(
        node(atomic, adapter), "create_many", {"records": [item(1), {"title": "X"}, item(2)]}
    )
    assert (response.ok, response.status) == (False, 422)
    assert response.error is not None
    assert response.error.code == "BEDS-422"
    assert response.error.message == (
        "the batch is all or nothing and 1 of 3 items failed; nothing was written"
    )
    assert response.error.details == ("records[1]: payload does not match template 'demo_item'",)
    assert writes(adapter) == []
    assert adapter.tables.get(NOTE, {}) == {}


async def test_an_atomic_batch_failing_in_the_store_leaves_nothing_written(
    atomic: Template,
) -> None:
    adapter = BatchMemory()
    target = node(atomic, adapter)
    created = await send(target, "create_many", {"records": [item(1)]})
    [one] = [r["data"]["id"] for r in created.data["results"]]
    response = await send(
        target, "update_many", {"records": [{"id": one, "count": 9}, {"id": 777, "count": 9}]}
    )
    assert response.error is not None
    assert (response.status, response.error.code) == (404, "BEDS-404")
    assert response.error.details == ("records[1]: no record has that key",)
    assert adapter.tables[NOTE][(one,)]["count"] == 1


async def test_an_atomic_template_needs_the_stores_batch_feature(atomic: Template) -> None:
    assert "batch" in atomic.needs()
    response = await send(node(atomic, SingleMemory()), "create_many", {"records": [item(1)]})
    assert response.error is not None
    assert response.error.code == "BEDS-405"


# -- access -------------------------------------------------------------------------------------


@pytest.fixture
def post(spew_templates: dict[str, Template]) -> Template:
    return attrs.evolve(spew_templates["spew_post"], store="memory")


async def test_anonymous_batches_are_refused_where_the_single_operation_is(
    post: Template, store: MemoryAdapter
) -> None:
    response = await send(
        node(post, store),
        "create_many",
        {"records": [{"body": "hi"}]},
        template="spew_post",
        credential=None,
    )
    assert response.error is not None
    assert (response.status, response.error.code) == (401, "BEDS-401")
    assert store.tables.get("spew_post", {}) == {}


async def test_a_members_records_get_their_author_bound_and_another_author_is_refused(
    post: Template, store: MemoryAdapter
) -> None:
    target = node(post, store)
    records = [
        {"body": "mine"},
        {"body": "forged", "author": "bob"},
        {"body": "ok", "author": "ann"},
    ]
    response = await send(target, "create_many", {"records": records}, template="spew_post")
    assert codes(response) == [None, "BEDS-403", None]
    assert response.data["results"][1]["error"]["details"] == [
        "$.records[1].author: the caller is 'ann'"
    ]
    assert sorted(row["author"] for row in store.tables["spew_post"].values()) == ["ann", "ann"]
    imported = await send(
        target,
        "create_many",
        {"records": [{"body": "x", "author": "bob"}]},
        template="spew_post",
        credential=ADMIN,
    )
    assert imported.status == 201


async def test_owners_are_checked_with_one_read_for_the_whole_batch(post: Template) -> None:
    adapter = BatchMemory()
    target = node(post, adapter)
    anns = await send(
        target, "create_many", {"records": [{"body": "a1"}, {"body": "a2"}]}, template="spew_post"
    )
    bobs = await send(
        target, "create_many", {"records": [{"body": "b1"}]}, template="spew_post", credential=BOB
    )
    a1, a2 = (r["data"]["id"] for r in anns.data["results"])
    [b1] = [r["data"]["id"] for r in bobs.data["results"]]
    adapter.batches.clear()
    records = [{"id": a1, "body": "new"}, {"id": b1, "body": "stolen"}, {"id": a2, "body": "new"}]
    response = await send(target, "update_many", {"records": records}, template="spew_post")
    assert codes(response) == [None, "BEDS-403", None]
    assert adapter.batches == [("fetch", 3), ("update", 2)]
    assert adapter.tables["spew_post"][(b1,)]["body"] == "b1"
    gone = await send(
        target, "delete_many", {"records": [{"id": b1}, {"id": a1}]}, template="spew_post"
    )
    assert codes(gone) == ["BEDS-403", None]


async def test_a_template_handler_is_never_bypassed_by_a_batch(demo_template: Template) -> None:
    target = node(demo_template, BatchMemory())

    async def handler(call: Any) -> Any:  # pragma: no cover - must not run
        raise AssertionError("the handler ran")

    target.handlers[(NOTE, Operation.CREATE)] = handler
    response = await send(target, "create_many", {"records": [item(1)]})
    assert response.error is not None
    assert response.error.code == "BEDS-405"


# -- lineage, audit, live ---------------------------------------------------------------------


async def test_a_batch_leaves_one_request_event_one_db_event_and_an_audit_per_written_item(
    demo_template: Template, store: MemoryAdapter
) -> None:
    sink = Sink()
    target = node(demo_template, store, events=sink)
    created = await send(target, "create_many", {"records": [item(1), {"title": "X"}, item(2)]})
    kinds = [event.kind for event in sink.events]
    assert kinds.count("request") == 1
    assert kinds.count("db") == 1
    [db] = [event for event in sink.events if event.kind == "db"]
    assert db.message == "memory create_many dmi_create"
    assert len(sink.published) == 2
    audits = [event.data or {} for event in sink.published]
    ids = [r["data"]["id"] for r in created.data["results"] if r["ok"]]
    assert [a["key"] for a in audits] == [{"id": i} for i in ids]
    assert all(a["before"] is None and a["after"]["title"] == "abc" for a in audits)
    sink.published.clear()
    await send(target, "update_many", {"records": [{"id": ids[0], "count": 5}]})
    [audit] = [event.data or {} for event in sink.published]
    assert (audit["before"]["count"], audit["after"]["count"]) == (1, 5)


async def test_a_keyed_repeat_is_not_audited_again(demo_template: Template) -> None:
    sink = Sink()
    target = node(demo_template, BatchMemory(), events=sink)
    await send(target, "create_many", {"records": [item(1)]}, key="k1")
    await send(target, "create_many", {"records": [item(1)]}, key="k1")
    assert len(sink.published) == 1


async def test_live_templates_publish_a_record_changed_per_written_item_packed(
    post: Template,
) -> None:
    published: list[dict[str, Any]] = []

    async def publish(kind: str, data: dict[str, Any]) -> None:
        assert kind == "records.changed"
        published.extend(orjson.loads(orjson.dumps(data))["events"])  # as RabbitMQ receives it

    live = LivePublisher(publish, room=10_000)
    target = node(post, BatchMemory(), live=live)
    records = [{"body": "one"}, {"body": "two", "author": "zed"}, {"body": "three"}]
    await send(target, "create_many", {"records": records}, template="spew_post")
    await live.drain(1)
    assert [(d["operation"], d["record"]["body"]) for d in published] == [
        ("create", "one"),
        ("create", "three"),
    ]
    assert all(d["record"]["author"] == "ann" and d["key"]["id"] for d in published)


def test_the_batch_store_protocol_is_what_the_fake_implements() -> None:
    assert isinstance(BatchMemory(), BatchStore)
    assert not isinstance(MemoryAdapter(), BatchStore)
    assert "batch" in FEATURES
    assert "batch" not in MemoryAdapter.features  # it does not promise what it lacks


async def test_a_batch_past_its_deadline_is_not_run(demo_template: Template) -> None:
    adapter = BatchMemory()
    body = encode_request(
        Request(
            operation=Operation.CREATE_MANY,
            template=NOTE,
            payload={"records": [item(1)]},
            meta=RequestMeta(deadline=time.time() - 1),
        )
    )
    _, response = await node(demo_template, adapter).handle(
        body, "application/json", credential=ANN
    )
    assert response.error is not None
    assert response.error.code == "BEDS-504"
    assert adapter.batches == []


# -- the fallback's transient failures ----------------------------------------------------------


async def test_the_fallback_tries_a_deadlock_victim_again_and_stops_when_the_store_is_gone(
    demo_template: Template,
) -> None:
    adapter = SingleMemory()
    create = adapter._create
    failures = iter([StoreBusy("deadlock victim"), None, None, StoreUnavailable("gone")])

    async def flaky(template: Template, record: Record) -> Record:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return await create(template, record)

    adapter._create = flaky  # type: ignore[method-assign]
    response = await send(
        node(demo_template, adapter), "create_many", {"records": [item(n) for n in range(4)]}
    )
    results = response.data["results"]
    assert [r["status"] for r in results] == [201, 201, 503, 503]
    assert results[2]["error"]["code"] == "BEDS-503"
    assert results[2]["error"]["details"][-1].startswith(
        "the write may or may not have been executed"
    )
    assert (
        results[3]["error"]["message"] == "not run: an earlier item of the batch failed transiently"
    )
    assert len(adapter.tables[NOTE]) == 2


async def test_the_fallback_journals_each_written_item_under_its_own_event_id(
    demo_template: Template,
) -> None:
    adapter = SingleMemory()
    body = encode_request(
        Request(
            operation=Operation.CREATE_MANY,
            template=NOTE,
            payload={"records": [item(1), {"title": "X"}, item(2)]},
            meta=RequestMeta(event_id="n1.test.batch1"),
        )
    )
    _, response = await node(demo_template, adapter).handle(
        body, "application/json", credential=ANN
    )
    assert response.status == 207
    entries = adapter.journals[NOTE]
    assert [entry["event_id"] for entry in entries] == ["n1.test.batch1/0", "n1.test.batch1/1"]
    assert [entry["operation"] for entry in entries] == ["create", "create"]
