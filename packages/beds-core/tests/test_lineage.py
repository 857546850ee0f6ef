"""Lineage without services: the events a request leaves, batches, trees, audit records."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import attrs
import pytest
import tomlkit
from hypothesis import given
from hypothesis import strategies as st
from loguru import logger

from beds.codec import encode_request
from beds.dispatch import Dispatcher
from beds.envelopes import Operation, Request, RequestMeta, Response
from beds.errors import TemplateError
from beds.factory import Factory
from beds.lineage import (
    Cause,
    Event,
    EventsNotPublished,
    collect_tree,
    current_cause,
    decode_events,
    encode_events,
    format_tree,
    new_event_id,
)
from beds.namaste import report_created
from beds.templates import Template, parse_template
from beds.testing import MemoryAdapter, TestIdentity
from beds.transport.events import EventPublisher

IDENTITY = TestIdentity(env="t")
ALICE = IDENTITY.credential("alice")
RECORD = {"title": "abc", "count": 1, "active": True}


class Sink:
    """Collects events as the node's publisher would receive them."""

    token = 4242

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.confirmed: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    async def publish_now(self, *events: Event) -> None:
        self.confirmed.extend(events)


class MemoryStore:
    """An EventStore over a list, for tree-walking tests."""

    def __init__(self, events: Sequence[Event]) -> None:
        self.records = [event.to_record() for event in events]

    async def store_events(self, events: Sequence[dict[str, Any]]) -> None:
        self.records.extend(events)

    async def find_events(
        self, *, event_ids: Sequence[str] = (), parent_ids: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        return [
            r for r in self.records if r["event_id"] in event_ids or r["parent_id"] in parent_ids
        ]


def dispatcher(template: Template, sink: Sink) -> tuple[Dispatcher, MemoryAdapter]:
    adapter = MemoryAdapter()
    factory = Factory({template.name: template}, {"memory": adapter})
    return (
        Dispatcher(
            factory,
            node="n1",
            env="t",
            max_message_bytes=65536,
            events=sink,
            authenticator=IDENTITY.authenticator,
        ),
        adapter,
    )


def body(operation: Operation, payload: dict[str, Any], **meta: Any) -> bytes:
    return encode_request(
        Request(
            operation=operation,
            template="demo_item",
            payload=payload,
            meta=RequestMeta(principal="alice", origin="tests", **meta),
        )
    )


async def test_a_request_leaves_a_request_event_and_a_database_call_event(
    demo_template: Template,
) -> None:
    sink = Sink()
    target, _ = dispatcher(demo_template, sink)
    _, response = await target.handle(
        body(
            Operation.FETCH,
            {"query": "by_count", "params": {"count": 1}},
            parent_id="p.t.1",
            depth=2,
        ),
        "application/json",
    )
    assert response.ok
    db, request = sink.events
    assert (request.kind, request.event_id, request.parent_id, request.depth) == (
        "request",
        response.meta.event_id,
        "p.t.1",
        2,
    )
    assert (request.template, request.operation, request.status) == ("demo_item", "fetch", 200)
    assert request.ms == response.meta.timings["total"]
    assert (db.kind, db.parent_id, db.depth, db.message) == (
        "db",
        response.meta.event_id,
        3,
        "memory fetch",
    )
    assert db.ms == response.meta.timings["store"]


async def test_failures_carry_their_code(demo_template: Template) -> None:
    sink = Sink()
    target, _ = dispatcher(demo_template, sink)
    _, response = await target.handle(b"{not json", "application/json", credential=ALICE)
    assert not response.ok
    (request,) = sink.events
    assert (request.kind, request.code, request.status) == ("request", "BEDS-400", 400)
    _, _missing = await target.handle(
        body(Operation.DELETE, {"id": 99}), "application/json", credential=ALICE
    )
    db, failed = sink.events[1:]
    assert (db.code, failed.code) == ("BEDS-404", "BEDS-404")


async def fetch_that_logs(
    target: Dispatcher, adapter: MemoryAdapter, depth: int
) -> tuple[Response, list[dict[str, Any]], list[Cause | None]]:
    """Handle a fetch whose adapter logs a line; return the response, each log line's extras
    and the cause current in the adapter."""
    seen: list[dict[str, Any]] = []
    causes: list[Cause | None] = []
    sink_id = logger.add(lambda message: seen.append(dict(message.record["extra"])), level="INFO")
    logger.enable("beds")
    real_fetch = adapter.fetch

    async def chatty(*args: Any) -> Any:
        logger.info("looking")
        causes.append(current_cause())
        return await real_fetch(*args)

    adapter.fetch = chatty  # type: ignore[method-assign,assignment]
    try:
        _, response = await target.handle(
            body(Operation.FETCH, {"query": "by_count", "params": {"count": 1}}, depth=depth),
            "application/json",
        )
    finally:
        logger.remove(sink_id)
        logger.disable("beds")
    return response, seen, causes


async def test_log_records_made_while_a_request_runs_are_bound_to_it(
    demo_template: Template,
) -> None:
    target, adapter = dispatcher(demo_template, Sink())
    response, seen, _ = await fetch_that_logs(target, adapter, depth=1)
    assert {
        "event_id": response.meta.event_id,
        "event_depth": 1,
        "template": "demo_item",
        "beds_events": 4242,
    } in seen


async def test_audited_writes_publish_before_and_after_confirmed(
    demo_template: Template,
) -> None:
    sink = Sink()
    target, _ = dispatcher(demo_template, sink)
    assert demo_template.capabilities.audit
    _, created = await target.handle(
        body(Operation.CREATE, RECORD), "application/json", credential=ALICE
    )
    assert created.ok, created.error
    key = {"id": created.data["id"]}
    _, updated = await target.handle(
        body(Operation.UPDATE, {**key, **RECORD, "count": 2}), "application/json", credential=ALICE
    )
    _, deleted = await target.handle(
        body(Operation.DELETE, key), "application/json", credential=ALICE
    )
    assert updated.ok
    assert deleted.ok
    create, update, delete = sink.confirmed
    assert all(audit.kind == "audit" for audit in sink.confirmed)
    assert create.parent_id == created.meta.event_id
    assert create.data is not None
    assert update.data is not None
    assert delete.data is not None
    assert (create.data["before"], create.data["after"]["count"]) == (None, 1)
    assert (update.data["before"]["count"], update.data["after"]["count"]) == (1, 2)
    assert (delete.data["before"]["count"], delete.data["after"]) == (2, None)
    assert create.data["principal"] == "alice"
    assert create.data["origin"] == "tests"
    assert delete.data["key"] == key


class Reporting(MemoryAdapter):
    """A memory store whose create reports a record it stored (``report_created``)."""

    def __init__(self, template_name: str) -> None:
        super().__init__()
        self.template_name = template_name
        self.fetched = 0

    async def create(self, template: Template, record: Any, ctx: Any) -> Any:
        result = await super().create(template, record, ctx)
        report_created(self.template_name, lambda: {**result, "reported": True})
        return result

    async def fetch(self, template: Template, query: Any, ctx: Any) -> Any:
        self.fetched += 1
        return await super().fetch(template, query, ctx)


@pytest.mark.parametrize(("reported_for", "read_back"), [("demo_item", False), ("other", True)])
async def test_a_create_audit_takes_after_from_the_adapters_report_else_reads_it(
    demo_template: Template, reported_for: str, read_back: bool
) -> None:
    sink = Sink()
    adapter = Reporting(reported_for)
    factory = Factory({demo_template.name: demo_template}, {"memory": adapter})
    target = Dispatcher(
        factory,
        node="n1",
        env="t",
        max_message_bytes=65536,
        events=sink,
        authenticator=IDENTITY.authenticator,
    )
    _, created = await target.handle(
        body(Operation.CREATE, RECORD), "application/json", credential=ALICE
    )
    assert created.ok, created.error
    (audit,) = sink.confirmed
    assert audit.data is not None
    assert audit.data["after"]["id"] == created.data["id"]
    # A report for another template is not this create's: the record is read back then.
    assert ("reported" in audit.data["after"]) is not read_back
    assert adapter.fetched == (1 if read_back else 0)


def test_audit_needs_a_query_on_the_key(demo_declaration: dict[str, Any]) -> None:
    declaration = demo_declaration
    del declaration["queries"]["by_id"]
    with pytest.raises(TemplateError, match=r"capabilities\.audit needs a query whose params"):
        parse_template(tomlkit.dumps(declaration), source="demo.toml")


events = st.builds(
    Event,
    event_id=st.text(min_size=1, max_size=20),
    parent_id=st.text(max_size=20),
    depth=st.integers(0, 64),
    kind=st.sampled_from(["request", "db", "log", "audit"]),
    node=st.text(max_size=10),
    env=st.text(max_size=10),
    at=st.floats(0, 2e9),
    ms=st.none() | st.floats(0, 1e6),
    message=st.text(max_size=30),
)


@given(batch=st.lists(events, max_size=5))
def test_batches_round_trip(batch: list[Event]) -> None:
    assert decode_events(encode_events(batch)) == batch


@pytest.mark.parametrize("bad", [b"{}", b"not json", b'[{"event_id": "x"}]', b"[1]"])
def test_bad_batches_are_refused_clearly(bad: bytes) -> None:
    with pytest.raises(ValueError, match="not a batch of lineage events"):
        decode_events(bad)


def event(name: str, parent: str, depth: int, at: float) -> Event:
    return Event(
        event_id=name,
        parent_id=parent,
        depth=depth,
        kind="log",
        node="n",
        env="t",
        at=at,
        message=name,
    )


async def test_a_tree_is_found_from_any_of_its_events_depth_first() -> None:
    tree = [
        event("root", "", 0, 1.0),
        event("b", "root", 1, 3.0),
        event("a", "root", 1, 2.0),
        event("a1", "a", 2, 2.5),
        event("other", "", 0, 9.0),
    ]
    store = MemoryStore(tree)
    for start in ("root", "a1", "b"):
        found = await collect_tree(store, start)
        assert [e.event_id for e in found] == ["root", "a", "a1", "b"]
    assert await collect_tree(store, "nope") == []
    assert format_tree(await collect_tree(store, "a")).splitlines() == [
        "log     root  [+0.0 ms] root",
        "  log     a  [+1000.0 ms] a",
        "    log     a1  [+1500.0 ms] a1",
        "  log     b  [+2000.0 ms] b",
    ]


def test_a_record_holds_every_field_but_the_empty_optional_ones() -> None:
    full = Event(
        event_id="n.e.1",
        parent_id="n.e.0",
        depth=3,
        kind="audit",
        node="n",
        env="e",
        at=1.5,
        ms=2.5,
        template="t",
        operation="create",
        status=201,
        code="BEDS-409",
        message="m",
        data={"after": {"id": 1}},
    )
    assert full.to_record() == attrs.asdict(full)
    bare = Event(event_id="n.e.2", kind="log", node="n", env="e", at=1.0)
    assert bare.to_record() == {k: v for k, v in attrs.asdict(bare).items() if v is not None}
    assert Event.from_record(full.to_record()) == full


def test_event_ids_are_node_env_and_32_hex_digits() -> None:
    first, second = new_event_id("n1", "dev"), new_event_id("n1", "dev")
    assert first != second
    node, env, guid = first.split(".")
    assert (node, env, len(guid)) == ("n1", "dev", 32)
    int(guid, 16)


async def test_a_repeat_answered_from_its_key_leaves_no_second_audit_record(
    demo_template: Template,
) -> None:
    sink = Sink()
    target, adapter = dispatcher(demo_template, sink)
    first = body(Operation.CREATE, RECORD, idempotency_key="k1")
    _, created = await target.handle(first, "application/json", credential=ALICE)
    _, repeated = await target.handle(first, "application/json", credential=ALICE)
    assert created.ok
    assert repeated.ok
    assert repeated.data == created.data
    assert len(adapter.tables[demo_template.name]) == 1
    [audit] = sink.confirmed  # the repeat changed nothing: no audit record of its own
    assert audit.parent_id == created.meta.event_id
    # A new key is a new write: audited again.
    _, again = await target.handle(
        body(Operation.CREATE, RECORD, idempotency_key="k2"), "application/json", credential=ALICE
    )
    assert again.ok
    assert len(sink.confirmed) == 2


async def test_log_lines_carry_the_event_id_with_lineage_off(demo_template: Template) -> None:
    adapter = MemoryAdapter()
    factory = Factory({demo_template.name: demo_template}, {"memory": adapter})
    target = Dispatcher(
        factory,
        node="n1",
        env="t",
        max_message_bytes=65536,
        trace=False,
        authenticator=IDENTITY.authenticator,
    )
    response, seen, causes = await fetch_that_logs(target, adapter, depth=3)
    assert {
        "event_id": response.meta.event_id,
        "event_depth": 3,
        "template": "demo_item",
    } in seen
    assert causes == [Cause(response.meta.event_id, 3)]
    assert current_cause() is None, "the cause outlived the request"


class LogsChannel:
    """A confirm-mode channel to the logs exchange that refuses the messages it is told to."""

    is_closed = False

    def __init__(self, refuse: set[int]) -> None:
        self.bodies: list[bytes] = []
        self.refuse = refuse

    async def basic_publish(self, body: bytes, **_: Any) -> None:
        number = len(self.bodies)
        self.bodies.append(body)
        if number in self.refuse:
            raise ConnectionError("nacked")


async def test_audit_records_published_at_once_travel_batch_size_to_a_message() -> None:
    publisher = EventPublisher("beds.logs", node="n1", env="test", batch_size=2)
    events = [
        Event(event_id=f"n1.test.{i:032x}", kind="audit", node="n1", env="test", at=1.0 + i)
        for i in range(5)
    ]
    publisher._channel = channel = LogsChannel(refuse=set())  # type: ignore[assignment]
    await publisher.publish_now(*events)
    assert [len(decode_events(body)) for body in channel.bodies] == [2, 2, 1]
    assert [e for body in channel.bodies for e in decode_events(body)] == events

    publisher._channel = channel = LogsChannel(refuse={1})  # type: ignore[assignment]
    with pytest.raises(EventsNotPublished) as refused:
        await publisher.publish_now(*events)
    assert refused.value.events == events[2:4]  # only the refused message's records wait


class SlowConfirms(LogsChannel):
    """Confirms each message after ``delay`` seconds, as RabbitMQ does once it stored it."""

    def __init__(self, delay: float) -> None:
        super().__init__(refuse=set())
        self.delay = delay

    async def basic_publish(self, body: bytes, **kwargs: Any) -> None:
        await super().basic_publish(body, **kwargs)
        await asyncio.sleep(self.delay)


async def test_under_steady_load_events_travel_once_per_flush_interval() -> None:
    """Not once per confirm: what arrives while a batch waits for its confirm waits too."""
    publisher = EventPublisher("beds.logs", node="n1", env="test", flush_interval=0.05)
    publisher._channel = channel = SlowConfirms(delay=0.005)  # type: ignore[assignment]
    publisher._task = asyncio.create_task(publisher._flush_loop())
    emitted = 0
    started = asyncio.get_running_loop().time()
    while asyncio.get_running_loop().time() - started < 0.4:
        publisher.emit(
            Event(event_id=f"n1.test.{emitted:032x}", kind="db", node="n1", env="test", at=1.0)
        )
        emitted += 1
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.1)  # the last batch confirmed before the loop stops
    await publisher.aclose()
    assert [e.event_id for body in channel.bodies for e in decode_events(body)] == [
        f"n1.test.{i:032x}" for i in range(emitted)
    ]
    # 0.4 s at one message per 50 ms is 8 (+2 for the last); per 5 ms confirm it was about 60.
    assert len(channel.bodies) <= 12, len(channel.bodies)
