"""The edge's ``http`` lineage events: one per forwarded request, the parent of its BEDS requests.

The events go to a list here (``app.state.lineage.sink``); tests/integration/http/
test_http_lineage.py publishes them through RabbitMQ to an admin node and reads the tree back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import pytest

from beds.lineage import Event, decode_events, encode_events, format_tree
from beds.testing import TestIdentity

if TYPE_CHECKING:
    import httpx

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


class Broken:
    def emit(self, event: Event) -> None:
        raise RuntimeError("the buffer is gone")


@pytest.fixture
def sink(edge: httpx.AsyncClient) -> Sink:
    collected = Sink()
    edge.app.state.lineage.sink = collected  # type: ignore[attr-defined]
    return collected


def bearer(identity: TestIdentity, handle: str = "ann") -> dict[str, str]:
    return {"Authorization": f"Bearer {identity.token(handle, ('member',))}"}


async def test_a_forwarded_request_is_the_root_of_its_beds_requests(
    edge: httpx.AsyncClient, sink: Sink, identity: TestIdentity, caller: Any
) -> None:
    token = bearer(identity)
    reply = await edge.post(
        "/v1/memo",
        json={"author": "ann", "text": "secret-ish body"},
        headers={**token, "traceparent": TRACEPARENT},
    )
    assert reply.status_code == 201, reply.text
    [event] = sink.events
    span = reply.headers["traceparent"].split("-")[2]
    assert event.event_id == f"http.dev.{TRACE}-{span}"
    assert (event.kind, event.parent_id, event.depth, event.node) == ("http", "", 0, "http")
    assert (event.operation, event.message, event.status, event.code) == (
        "POST",
        "/v1/memo",
        201,
        "",
    )
    assert event.data == {"trace_id": TRACE, "principal": "ann"}
    assert event.ms is not None
    assert event.ms > 0
    [sent] = caller.calls
    assert (sent.meta.parent_id, sent.meta.depth) == (event.event_id, 1)
    stored = orjson.dumps(event.to_record()).decode()
    assert token["Authorization"].split()[1] not in stored
    assert "secret-ish body" not in stored
    # It crosses the wire and reads back as the first line of a tree.
    assert decode_events(encode_events([event])) == [event]
    assert format_tree([event]).startswith(f"http    POST /v1/memo → 201 by ann trace {TRACE}")


async def test_the_route_is_the_template_never_the_query_values(
    edge: httpx.AsyncClient, sink: Sink, identity: TestIdentity
) -> None:
    reply = await edge.get(
        "/v1/memo/by_author", params={"author": "someone_private"}, headers=bearer(identity)
    )
    assert reply.status_code == 200, reply.text
    [event] = sink.events
    assert (event.operation, event.message) == ("GET", "/v1/memo/by_author")
    trace_id = reply.headers["traceparent"].split("-")[1]
    assert event.data == {"trace_id": trace_id, "principal": "ann"}
    assert "someone_private" not in orjson.dumps(event.to_record()).decode()


async def test_a_node_error_is_recorded_with_its_code_and_no_principal(
    edge: httpx.AsyncClient, sink: Sink, identity: TestIdentity
) -> None:
    # A member writing a memo as someone else: the node refuses (the token was accepted, but
    # the request failed, so the edge does not claim to know who asked).
    reply = await edge.post(
        "/v1/memo", json={"author": "bob", "text": "x"}, headers=bearer(identity, "ann")
    )
    assert reply.status_code == 403, reply.text
    [event] = sink.events
    assert (event.status, event.code) == (403, reply.json()["code"])
    assert event.data is not None
    assert "principal" not in event.data


async def test_a_request_the_edge_refused_itself_leaves_no_event(
    edge: httpx.AsyncClient, sink: Sink
) -> None:
    refused = [
        await edge.post("/v1/memo", content=b"{not", headers={"content-type": "application/json"}),
        await edge.get("/v1/memo/by_author", params={"nope": "1"}),
        await edge.get("/v1/nothing_here/q"),
        await edge.get("/openapi.json"),
    ]
    assert [r.status_code for r in refused] == [400, 422, 404, 200]
    assert sink.events == []


async def test_lineage_failing_never_fails_the_request(
    edge: httpx.AsyncClient, identity: TestIdentity
) -> None:
    lineage = edge.app.state.lineage  # type: ignore[attr-defined]
    lineage.sink = Broken()
    record = {"author": "ann", "text": "x"}
    reply = await edge.post("/v1/memo", json=record, headers=bearer(identity))
    assert reply.status_code == 201, reply.text
    assert (lineage.recorded, lineage.failed, lineage.failures) == (0, 1, 1)
    metrics = (await edge.get("/metrics")).text
    assert "beds_http_lineage_failures_total 1.0" in metrics
    assert 'beds_http_lineage_events_total{outcome="recorded"} 0.0' in metrics


async def test_without_a_sink_nothing_is_recorded(edge: httpx.AsyncClient) -> None:
    # An application given a client publishes no lineage unless create_app(lineage=True).
    assert edge.app.state.lineage.sink is None  # type: ignore[attr-defined]
    reply = await edge.get("/v1/board/all")
    assert reply.status_code == 200, reply.text
    assert edge.app.state.lineage.recorded == 0  # type: ignore[attr-defined]
