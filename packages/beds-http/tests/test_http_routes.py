"""Template routes end to end through a real dispatcher: writes, typed fetches, paging, errors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from beds.testing import TestIdentity

if TYPE_CHECKING:
    import httpx

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def auth(
    identity: TestIdentity, handle: str = "ann", roles: tuple[str, ...] = ("member",)
) -> dict[str, str]:
    return {"Authorization": f"Bearer {identity.token(handle, roles)}"}


async def post(edge: httpx.AsyncClient, headers: dict[str, str], record: dict[str, Any]) -> Any:
    reply = await edge.post("/v1/memo", json=record, headers=headers)
    assert reply.status_code == 201, reply.text
    return reply.json()["data"]


async def test_create_then_fetch_by_typed_params(
    edge: httpx.AsyncClient, identity: TestIdentity, caller: Any
) -> None:
    ann = auth(identity)
    created = await post(edge, ann, {"author": "ann", "text": "hi", "stars": 3})
    assert created == {"id": 1}
    reply = await edge.get("/v1/memo/by_id", params={"id": "1"}, headers=ann)
    assert reply.status_code == 200
    body = reply.json()
    assert body["meta"] == {"next": None}
    assert body["data"][0]["text"] == "hi"
    assert body["data"][0]["stars"] == 3
    # The node saw the typed int, the query and no extra keys.
    assert caller.calls[-1].payload == {"query": "by_id", "params": {"id": 1}}


async def test_list_params_are_repeated_query_parameters(
    edge: httpx.AsyncClient, identity: TestIdentity
) -> None:
    ann = auth(identity)
    for text in ("a", "b", "c"):
        await post(edge, ann, {"author": "ann", "text": text})
    reply = await edge.get("/v1/memo/among?ids=1&ids=3", headers=ann)
    assert reply.status_code == 200, reply.text
    assert sorted(r["text"] for r in reply.json()["data"]) == ["a", "c"]


async def test_bool_and_float_params_are_typed(
    edge: httpx.AsyncClient, identity: TestIdentity, caller: Any
) -> None:
    ann = auth(identity)
    await post(edge, ann, {"author": "ann", "text": "x", "done": True, "ratio": 0.5})
    reply = await edge.get("/v1/memo/flagged?done=true&ratio=0.5", headers=ann)
    assert reply.status_code == 200, reply.text
    assert caller.calls[-1].payload["params"] == {"done": True, "ratio": 0.5}
    assert [r["text"] for r in reply.json()["data"]] == ["x"]


async def test_pages_follow_meta_next(edge: httpx.AsyncClient, identity: TestIdentity) -> None:
    ann = auth(identity)
    for n in range(5):
        await post(edge, ann, {"author": "ann", "text": f"t{n}"})
    seen: list[int] = []
    params: dict[str, str] = {"author": "ann", "limit": "2"}
    while True:
        reply = await edge.get("/v1/memo/by_author", params=params, headers=ann)
        assert reply.status_code == 200, reply.text
        page = reply.json()
        assert len(page["data"]) <= 2
        seen += [r["id"] for r in page["data"]]
        if page["meta"]["next"] is None:
            break
        params["cursor"] = page["meta"]["next"]
    assert seen == [1, 2, 3, 4, 5]


async def test_update_and_delete(edge: httpx.AsyncClient, identity: TestIdentity) -> None:
    ann = auth(identity)
    await post(edge, ann, {"author": "ann", "text": "old"})
    reply = await edge.patch("/v1/memo", json={"id": 1, "text": "new"}, headers=ann)
    assert reply.status_code == 200, reply.text
    reply = await edge.get("/v1/memo/by_id?id=1", headers=ann)
    assert reply.json()["data"][0]["text"] == "new"
    reply = await edge.delete("/v1/memo?id=1", headers=ann)
    assert reply.status_code == 200, reply.text
    reply = await edge.get("/v1/memo/by_id?id=1", headers=ann)
    assert reply.json()["data"] == []


async def test_node_errors_keep_their_code_and_status(
    edge: httpx.AsyncClient, identity: TestIdentity, caller: Any
) -> None:
    # Anonymous: the template's create rule is for members (the node decides, not the edge).
    reply = await edge.post("/v1/memo", json={"author": "x", "text": "hi"})
    assert reply.status_code == 401
    problem = reply.json()
    assert reply.headers["content-type"] == "application/problem+json"
    assert problem["code"] == "BEDS-401"
    assert problem["type"] == "urn:beds:error:BEDS-401"
    assert problem["instance"] == "/v1/memo"
    assert len(caller.calls) == 1
    # A forged token has the shape of one: the node refuses it, with the same code.
    forged = TestIdentity(env="test").token("ann")
    reply = await edge.post(
        "/v1/memo",
        json={"author": "ann", "text": "hi"},
        headers={"Authorization": f"Bearer {forged}"},
    )
    assert (reply.status_code, reply.json()["code"]) == (401, "BEDS-401")
    # The node validates the record: an unknown field is its BEDS-422, with details.
    reply = await edge.post(
        "/v1/memo", json={"author": "ann", "txet": "hi"}, headers=auth(identity)
    )
    assert reply.status_code == 422
    assert reply.json()["code"] == "BEDS-422"
    assert reply.json()["details"]


async def test_trace_context_flows_into_lineage_and_back(
    edge: httpx.AsyncClient, identity: TestIdentity, caller: Any
) -> None:
    reply = await edge.post(
        "/v1/memo",
        json={"author": "ann", "text": "traced"},
        headers={
            **auth(identity),
            "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01",
            "X-Request-Id": "r-1",
        },
    )
    assert reply.status_code == 201
    version, trace_id, span, flags = reply.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE, "01")
    assert span != "00f067aa0ba902b7"  # the edge's own span
    assert reply.headers["x-request-id"] == "r-1"
    assert reply.headers["x-beds-event-id"] == caller.calls[-1].meta.event_id
    assert caller.calls[-1].meta.parent_id == f"http.dev.{TRACE}-{span}"  # this HTTP request
    assert caller.calls[-1].meta.depth == 1


async def test_a_malformed_traceparent_starts_a_new_trace(
    edge: httpx.AsyncClient, identity: TestIdentity
) -> None:
    reply = await edge.get(
        "/v1/memo/by_id?id=1", headers={**auth(identity), "traceparent": "00-xyz"}
    )
    assert reply.status_code == 200
    trace_id = reply.headers["traceparent"].split("-")[1]
    assert len(trace_id) == 32
    assert trace_id != "0" * 32


async def test_idempotency_key_header_becomes_the_request_key(
    edge: httpx.AsyncClient, identity: TestIdentity, caller: Any
) -> None:
    headers = {**auth(identity), "Idempotency-Key": "order-42"}
    first = await edge.post("/v1/memo", json={"author": "ann", "text": "once"}, headers=headers)
    again = await edge.post("/v1/memo", json={"author": "ann", "text": "once"}, headers=headers)
    assert first.json() == again.json()
    assert caller.calls[-1].meta.idempotency_key == "order-42"


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/metrics", "/healthz"])
async def test_edge_routes_answer(edge: httpx.AsyncClient, path: str) -> None:
    reply = await edge.get(path)
    assert reply.status_code == 200, reply.text


async def test_the_static_page_is_served_at_the_root(edge: httpx.AsyncClient) -> None:
    reply = await edge.get("/")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")
