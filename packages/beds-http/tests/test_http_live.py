"""The live hub: who sees which event, slow clients dropped, Last-Event-ID replay, SSE framing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from beds.transport.control_event import ControlEvent
from beds_http.auth import AuthRoutes, Caller
from beds_http.live import PUBLIC_KEYS, LiveHub, LiveRoutes
from beds_http.metrics import EdgeMetrics
from beds_http.settings import parse_settings
from beds_http.sse import sse_event

ANN = Caller(id="ann", handle="ann", roles=frozenset({"member"}))
BOB = Caller(id="bob", handle="bob", roles=frozenset({"member"}))
ADMIN = Caller(id="root", handle="root", roles=frozenset({"member", "admin"}))


@pytest.fixture
def hub(app_with: Any) -> LiveHub:
    app = app_with(stream_queue=2, replay_events=3, keepalive_seconds=0.05)
    found: LiveHub = app.state.hub
    return found


def changed(template: str, author: str = "ann", n: int = 1) -> ControlEvent:
    return ControlEvent(
        kind="record.changed",
        data={
            "template": template,
            "operation": "create",
            "key": {"id": n},
            "record": {"id": n, "author": author, "text": "hi"},
            "principal": author,
            "trace_id": "n1.test.0123",
            "at": "2026-01-01T00:00:00Z",
        },
    )


def queued(subscriber: Any) -> list[Any]:
    items = []
    while not subscriber.queue.empty():
        items.append(subscriber.queue.get_nowait())
    return items


def test_only_live_templates_are_streamed(hub: LiveHub) -> None:
    assert set(hub.templates) == {"memo", "board"}
    hub.deliver(changed("not_live"))
    assert hub.metrics.live_ignored == 1
    assert not hub.recent


def test_owners_see_their_own_records_and_admins_all(hub: LiveHub) -> None:
    ann = hub.subscribe(["memo"], ANN, None)
    bob = hub.subscribe(["memo"], BOB, None)
    admin = hub.subscribe(["memo"], ADMIN, None)
    board_only = hub.subscribe(["board"], ANN, None)
    hub.deliver(changed("memo", "ann", 1))
    hub.deliver(changed("memo", "bob", 2))
    assert [e.data["key"]["id"] for e in queued(ann)] == [1]
    assert [e.data["key"]["id"] for e in queued(bob)] == [2]
    assert len(queued(admin)) == 2
    assert queued(board_only) == []


def test_a_record_without_its_owner_field_goes_to_no_owner(hub: LiveHub) -> None:
    ann = hub.subscribe(["memo"], ANN, None)
    event = changed("memo", "ann", 1)
    del event.data["record"]  # trimmed: too large for the control channel
    hub.deliver(event)
    assert queued(ann) == []


def test_anyone_may_follow_a_template_anyone_may_fetch(hub: LiveHub) -> None:
    anonymous = hub.subscribe(["board"], None, None)
    hub.deliver(changed("board", "bob", 7))
    (event,) = queued(anonymous)
    assert set(event.data) <= set(PUBLIC_KEYS)  # the node's lineage id stays inside
    assert "trace_id" not in event.data
    assert not hub.may_fetch(hub.templates["memo"], None)
    assert hub.may_fetch(hub.templates["memo"], ANN)


def test_a_slow_client_is_dropped_and_the_others_keep_going(hub: LiveHub) -> None:
    slow = hub.subscribe(["board"], None, None)
    fast = hub.subscribe(["board"], None, None)
    for n in range(3):
        hub.deliver(changed("board", n=n))
        queued(fast)  # this one keeps up
    assert slow.dropped
    assert queued(slow) == [None]  # its stream ends at once
    assert hub.metrics.stream_dropped == 1
    assert fast in hub.subscribers
    assert slow not in hub.subscribers
    hub.deliver(changed("board", n=9))
    assert [e.data["key"]["id"] for e in queued(fast)] == [9]


def test_last_event_id_replays_what_came_after_it(hub: LiveHub) -> None:
    events = [changed("board", n=n) for n in range(4)]
    for event in events:
        hub.deliver(event)
    assert [e.id for e in hub.recent] == [e.id for e in events[1:]]  # replay_events = 3
    after = hub.subscribe(["board"], None, events[2].id)
    assert [e.id for e in queued(after)] == [events[3].id]
    latest = hub.subscribe(["board"], None, events[3].id)
    assert queued(latest) == []
    # An id the hub no longer holds: everything it holds (at least once); the queue holds 2.
    unknown = hub.subscribe(["board"], None, events[0].id)
    assert unknown.dropped
    fresh = hub.subscribe(["board"], None, None)
    assert queued(fresh) == []


async def test_the_stream_frames_events_keeps_alive_and_ends_when_dropped(
    hub: LiveHub, app_with: Any
) -> None:
    routes = LiveRoutes(hub, AuthRoutes.__new__(AuthRoutes))
    subscriber = hub.subscribe(["board"], None, None)
    stream = routes._stream(subscriber)
    assert await anext(stream) == b"retry: 3000\n\n"
    assert await anext(stream) == b": keep-alive\n\n"  # keepalive_seconds = 0.05
    event = changed("board", n=5)
    hub.deliver(event)
    chunk = await anext(stream)
    assert chunk == sse_event("record.changed", hub.recent[-1].data, event.id)
    lines = chunk.decode().splitlines()
    assert lines[0] == f"id: {event.id}"
    assert lines[1] == "event: record.changed"
    assert orjson.loads(lines[2].removeprefix("data: "))["key"] == {"id": 5}
    assert hub.metrics.stream_clients == 1
    for n in range(3):
        hub.deliver(changed("board", n=n))
    assert (await anext(stream)).startswith(b": dropped: this client fell behind")
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert hub.metrics.stream_clients == 0
    await asyncio.sleep(0)


def test_events_replayed_after_a_reconnect_are_not_sent_twice(hub: LiveHub) -> None:
    client = hub.subscribe(["board"], None, None)
    events = [changed("board", n=n) for n in range(4)]
    hub.deliver(events[0])
    hub.deliver(events[0])  # the control stream replays it after a reconnect
    assert [e.id for e in queued(client)] == [events[0].id]
    for event in events[1:]:
        hub.deliver(event)  # events[0] leaves the hub's memory (replay_events = 3)
    queued(client)
    hub.deliver(events[1])
    assert queued(client) == []


def test_a_revoked_session_ends_its_streams(hub: LiveHub) -> None:
    ann = hub.subscribe(["board"], ANN, None, {"sid": "s1", "sub": "ann", "iat": 1})
    bob = hub.subscribe(["board"], BOB, None, {"sid": "s2", "sub": "bob", "iat": 1})
    hub.deliver(changed("board", n=1))
    hub.revoked(ControlEvent(kind="auth.revoke", data={"sid": "s1", "until": 4e9}))
    assert ann.ended == "closed: the session was revoked"
    assert queued(ann) == [None]  # what it had waiting is discarded; its stream ends
    assert bob in hub.subscribers
    hub.revoked(ControlEvent(kind="auth.revoke", data={"nonsense": True}))
    assert bob in hub.subscribers


async def test_a_stream_ends_when_its_token_expires(hub: LiveHub) -> None:
    routes = LiveRoutes(hub, AuthRoutes.__new__(AuthRoutes))
    subscriber = hub.subscribe(["board"], ANN, None, {"exp": time.time() + 0.2})
    chunks = [chunk async for chunk in routes._stream(subscriber)]
    assert chunks[0] == b"retry: 3000\n\n"
    assert chunks[-1] == b": closed: the token expired\n\n"
    assert subscriber not in hub.subscribers


def test_settings_bound_the_queues() -> None:
    settings = parse_settings({"stream_queue": 5})
    hub = LiveHub({}, settings, EdgeMetrics())
    assert hub.subscribe([], None, None).queue.maxsize == 5


def test_a_batch_s_items_are_each_an_event_with_an_id_within_the_batch(hub: LiveHub) -> None:
    ann = hub.subscribe(["memo"], ANN, None)
    items: list[Any] = [changed("memo", "ann", 1).data, changed("memo", "bob", 2).data]
    items += [changed("memo", "ann", 3).data, "not an event", changed("not_live").data]
    batch = ControlEvent(kind="records.changed", data={"events": items})
    hub.deliver_many(batch)
    # In item order, each filtered like a record.changed: bob's record is not ann's to see.
    assert [(e.id, e.data["key"]) for e in queued(ann)] == [
        (f"{batch.id}.0", {"id": 1}),
        (f"{batch.id}.2", {"id": 3}),
    ]
    assert hub.metrics.live_ignored == 2  # the malformed item and the template that is not live
    hub.deliver_many(batch)  # replayed after a reconnect: not sent twice
    assert queued(ann) == []
    assert hub.metrics.live_ignored == 4
    resumed = hub.subscribe(["memo"], ANN, f"{batch.id}.0")  # Last-Event-ID within the batch
    assert [e.id for e in queued(resumed)] == [f"{batch.id}.2"]
    hub.deliver_many(ControlEvent(kind="records.changed", data={"events": "nope"}))
    assert hub.metrics.live_ignored == 5
