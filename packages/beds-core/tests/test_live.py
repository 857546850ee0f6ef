"""The ``live`` capability: ``record.changed`` after every write, off the reply path.

The dispatcher runs against the in-memory adapter and a recording publish function; the
integration test (tests/integration/amqp/test_live_events.py) reads the real control stream.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import tomlkit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beds.dispatch.live import (
    MAX_PENDING,
    RECORD_CHANGED,
    RECORDS_CHANGED,
    LivePublisher,
    record_changed,
)
from beds.envelopes import Operation, Request
from beds.errors import TemplateError
from beds.templates import Template, parse_template
from beds.testing import MemoryAdapter, TestIdentity
from beds.testing.local import LocalNode
from beds.transport.control_event import MAX_EVENT_BYTES

ROOM = MAX_EVENT_BYTES - 300
"""About what ControlChannel.room leaves for a record.changed event's data."""

IDENTITY = TestIdentity(env="test")

POST: dict[str, Any] = {
    "name": "post",
    "store": "memory",
    "tla": "pst",
    "key": ["id"],
    "fields": {
        "id": {"type": "int", "generated": True},
        "author": {"type": "str", "max_length": 20},
        "body": {"type": "str", "max_length": 100_000},
        "created_at": {"type": "datetime", "generated": True},
    },
    "operations": {
        "create": {"params": ["author", "body"], "returns": ["id", "created_at"]},
        "update": {"params": ["id", "body"], "returns": ["id"]},
        "delete": {"params": ["id"]},
    },
    "queries": {"by_id": {"params": ["id"], "max_limit": 1}},
    "access": {"create": ["member"], "update": ["member"], "delete": ["member"], "owner": "author"},
    "capabilities": {"live": True},
}


def template(declaration: dict[str, Any] | None = None, **changes: Any) -> Template:
    return parse_template(tomlkit.dumps({**(declaration or POST), **changes}), source="post.toml")


class Recorder:
    """The control channel's ``publish``, recording what it is given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.fail = False
        self.gate: asyncio.Event | None = None

    async def __call__(self, kind: str, data: dict[str, Any]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("RabbitMQ is away")
        self.events.append((kind, data))


def node(*templates: Template) -> tuple[LocalNode, LivePublisher, Recorder]:
    local = LocalNode(templates, {"memory": MemoryAdapter()}, identity=IDENTITY)
    recorder = Recorder()
    live = LivePublisher(recorder, room=ROOM)
    local.dispatcher.live = live
    return local, live, recorder


async def settle(live: LivePublisher) -> None:
    await live.drain(5)


async def test_each_write_publishes_record_changed_with_key_record_and_principal() -> None:
    local, live, recorder = node(template())
    created = await local.call("post", "create", {"body": "hello #beds"}, who="ann")
    assert created.ok, created.error
    await settle(live)
    [(kind, data)] = recorder.events
    assert kind == RECORD_CHANGED
    post_id = created.data["id"]
    assert data == {
        "template": "post",
        "operation": "create",
        "key": {"id": post_id},
        "record": {
            "id": post_id,
            "author": "ann",  # the owner the node bound, not sent by the caller
            "body": "hello #beds",
            "created_at": created.data["created_at"],
        },
        "principal": "ann",
        "trace_id": created.meta.event_id,
        "at": data["at"],
    }
    assert data["at"].endswith("Z")

    assert (await local.call("post", "update", {"id": post_id, "body": "edited"})).ok
    assert (await local.call("post", "delete", {"id": post_id})).ok
    await settle(live)
    changes = [(d["operation"], d["key"], d["record"]) for _, d in recorder.events[1:]]
    assert changes == [
        ("update", {"id": post_id}, {"id": post_id, "body": "edited"}),
        ("delete", {"id": post_id}, {"id": post_id}),
    ]
    assert (live.published, live.failed) == (3, 0)


async def test_failed_writes_and_fetches_publish_nothing() -> None:
    local, live, recorder = node(template())
    assert not (await local.call("post", "create", {"body": 7})).ok
    assert not (await local.call("post", "delete", {"id": 99})).ok  # BEDS-404
    assert (await local.call("post", "fetch", {"query": "by_id", "params": {"id": 1}})).ok
    await settle(live)
    assert recorder.events == []


async def test_a_template_without_live_publishes_nothing() -> None:
    quiet = template(name="quiet", tla="qui", capabilities={})
    local, live, recorder = node(quiet, template())
    assert (await local.call("quiet", "create", {"body": "shh"})).ok
    assert (await local.call("post", "create", {"body": "loud"})).ok
    await settle(live)
    assert [data["template"] for _, data in recorder.events] == ["post"]


async def test_a_failed_publication_never_fails_the_write() -> None:
    local, live, recorder = node(template())
    recorder.fail = True
    response = await local.call("post", "create", {"body": "still written"})
    assert response.ok
    await settle(live)
    assert (live.published, live.failed) == (0, 1)


async def test_the_reply_does_not_wait_for_the_publication() -> None:
    local, live, recorder = node(template())
    recorder.gate = asyncio.Event()  # RabbitMQ does not confirm
    response = await asyncio.wait_for(local.call("post", "create", {"body": "quick"}), 5)
    assert response.ok
    assert recorder.events == []
    recorder.gate.set()
    await settle(live)
    assert len(recorder.events) == 1


async def test_a_stalled_channel_drops_events_beyond_the_pending_bound() -> None:
    tmpl = template()
    _, live, recorder = node(tmpl)
    recorder.gate = asyncio.Event()
    request = Request(operation=Operation.CREATE, template="post", payload={"body": "x"})
    for _ in range(MAX_PENDING + 3):
        live.written(tmpl, request, {"id": 1}, principal=None, trace_id="t")
    assert live.dropped == 3
    await live.drain(0.01)  # the node stops: what still waits is cancelled
    assert recorder.events == []


class Sender:
    """``ControlChannel.send``: queues at once and returns the confirm future."""

    def __init__(self) -> None:
        self.queued: list[tuple[str, dict[str, Any], asyncio.Future[None]]] = []
        self.closed = False

    def __call__(self, kind: str, data: dict[str, Any]) -> asyncio.Future[None]:
        if self.closed:
            raise ConnectionError("the control channel is not open")
        confirm = asyncio.get_running_loop().create_future()
        # As RabbitMQ receives it: a pack's items are orjson fragments, encoded once.
        self.queued.append((kind, orjson.loads(orjson.dumps(data)), confirm))
        return confirm


def batch_of(n: int, body: str = "b") -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [({"body": f"{body}{i}"}, {"id": i}) for i in range(n)]


async def test_a_batch_packs_its_items_events_in_order_and_counts_each_item() -> None:
    tmpl = template()
    sender = Sender()
    live = LivePublisher(sender, room=ROOM, pack_room=ROOM)
    live.written_many(tmpl, "create", batch_of(3), principal="ann", trace_id="t")
    # One control event, queued at once (no task): it leaves with this loop turn's write.
    [(kind, data, confirm)] = sender.queued
    assert kind == RECORDS_CHANGED
    assert [event["key"] for event in data["events"]] == [{"id": 0}, {"id": 1}, {"id": 2}]
    single = record_changed(
        tmpl,
        Request(operation=Operation.CREATE, template="post", payload={"body": "b0"}),
        {"id": 0},
        principal="ann",
        trace_id="t",
        at=data["events"][0]["at"],
    )
    assert data["events"][0] == single  # each item is the record.changed a write would send
    confirm.set_result(None)
    await live.drain(5)
    assert (live.published, live.failed, live.dropped) == (3, 0, 0)


@given(st.lists(st.text(max_size=300), min_size=1, max_size=40), st.integers(400, 3000))
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_packs_fit_the_channel_and_keep_every_item_once_in_order(
    bodies: list[str], room: int
) -> None:
    async def run() -> None:
        tmpl = template()
        sender = Sender()
        live = LivePublisher(sender, room=room, pack_room=room)
        written = [({"body": body}, {"id": i}) for i, body in enumerate(bodies)]
        live.written_many(tmpl, "create", written, principal=None, trace_id="t")
        events = [event for _, data, _ in sender.queued for event in data["events"]]
        assert [event["key"]["id"] for event in events] == list(range(len(bodies)))
        for _, data, confirm in sender.queued:
            # Within the room, unless one item alone is over it with its record left out.
            fits = len(orjson.dumps(data)) <= room
            assert fits or (len(data["events"]) == 1 and "record" not in data["events"][0])
            confirm.set_result(None)
        await live.drain(5)
        assert live.published == len(bodies)

    asyncio.run(run())


async def test_failed_packs_count_their_items_and_never_fail_the_write() -> None:
    tmpl = template()
    sender = Sender()
    live = LivePublisher(sender, room=ROOM, pack_room=600)  # about two items a pack
    live.written_many(tmpl, "create", batch_of(5, "x" * 100), principal=None, trace_id="t")
    assert len(sender.queued) > 1
    sizes = [len(data["events"]) for _, data, _ in sender.queued]
    sender.queued[0][2].set_exception(ConnectionError("nacked"))
    for _, _, confirm in sender.queued[1:]:
        confirm.set_result(None)
    await live.drain(5)
    assert (live.published, live.failed) == (5 - sizes[0], sizes[0])

    sender.closed = True  # refused before it was queued: counted, the write unaffected
    live.written(
        tmpl,
        Request(operation=Operation.CREATE, template="post"),
        {"id": 9},
        principal=None,
        trace_id="t",
    )
    assert (live.published, live.failed) == (5 - sizes[0], sizes[0] + 1)


async def test_a_record_too_large_for_the_channel_is_left_out_but_the_key_kept() -> None:
    local, live, recorder = node(template())
    body = "é" * 40_000  # 80,000 bytes of UTF-8: over the control channel's 64 KiB
    response = await local.call("post", "create", {"body": body})
    assert response.ok
    await settle(live)
    [(_, data)] = recorder.events
    assert "record" not in data
    assert data["key"] == {"id": response.data["id"]}
    assert live.trimmed == 1
    small = await local.call("post", "create", {"body": "é" * 1000})
    await settle(live)
    assert recorder.events[-1][1]["record"]["id"] == small.data["id"]


def test_an_event_that_fits_is_kept_whole_up_to_the_limit() -> None:
    live = LivePublisher(Recorder(), room=ROOM)
    data = {"template": "post", "record": {"body": "x" * (ROOM - 40)}}
    assert live.fit(data) is data
    assert "record" not in live.fit({"template": "post", "record": {"body": "x" * ROOM}})


SECRET_POST = {
    **POST,
    "fields": {
        **POST["fields"],
        "token": {"type": "str", "secret": True, "required": False, "nullable": True},
    },
    "operations": {
        **POST["operations"],
        "create": {"params": ["author", "body", "token"], "returns": ["id"]},
    },
    "capabilities": {},
}


@given(
    payload=st.dictionaries(
        st.sampled_from(["author", "body", "token", "password", "other"]),
        st.one_of(st.text(max_size=10), st.integers(), st.none()),
    ),
    result=st.dictionaries(
        st.sampled_from(["id", "token", "created_at", "deleted"]), st.integers()
    ),
)
def test_a_record_holds_declared_fields_only_and_never_a_secret_one(
    payload: dict[str, Any], result: dict[str, Any]
) -> None:
    tmpl = template(SECRET_POST)
    request = Request(operation=Operation.CREATE, template="post", payload=payload)
    data = record_changed(tmpl, request, result, principal=None, trace_id="t", at="now")
    assert set(data["record"]) <= {"id", "author", "body", "created_at"}
    assert "token" not in data["record"]
    assert set(data["key"]) == {"id"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"capabilities": {"live": "yes"}}, "capabilities.live must be true or false"),
        (
            {"operations": {}, "access": {}, "capabilities": {"live": True}},
            "capabilities.live is set on a template without writes",
        ),
        (
            {"fields": SECRET_POST["fields"], "capabilities": {"live": True}},
            "capabilities.live cannot be set on a template with a secret field (token)",
        ),
        (
            {"fields": {**POST["fields"], "body": {"type": "str", "secret": 1}}},
            "fields.body.secret must be true or false",
        ),
    ],
)
def test_declarations_that_cannot_be_live_are_refused(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(TemplateError, match=message.replace("(", r"\(").replace(")", r"\)")):
        template(**changes)
