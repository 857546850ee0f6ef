"""What the edge refuses itself: problem+json with the catalogue code, and the node never sees it.

Hypothesis sends arbitrary bodies, headers and paths: never a 500, and a request the edge
refuses never reaches the node.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beds.testing import TestIdentity

TOKEN_HEADER = "Authorization"


def member(identity: TestIdentity) -> dict[str, str]:
    return {TOKEN_HEADER: f"Bearer {identity.token('ann')}"}


def refused_total(edge: httpx.AsyncClient) -> int:
    return sum(edge.app.state.metrics.refused.values())  # type: ignore[attr-defined]


JSON = {"Content-Type": "application/json"}

CASES: list[tuple[str, str, dict[str, str], bytes, int, str, str]] = [
    # method, path, headers, body, status, code, reason
    ("POST", "/v1/memo", JSON, b"{not json", 400, "BEDS-400", "json"),
    ("POST", "/v1/memo", JSON, b"[1, 2]", 400, "BEDS-400", "json"),
    ("POST", "/v1/memo", JSON, b"\xff\xfe", 400, "BEDS-400", "json"),
    ("POST", "/v1/memo", {"Content-Type": "text/plain"}, b"{}", 415, "BEDS-400", "content_type"),
    ("POST", "/v1/memo", {}, b"{}", 415, "BEDS-400", "content_type"),
    (
        "POST",
        "/v1/memo",
        {"Content-Type": "application/json; charset=latin-1"},
        b"{}",
        415,
        "BEDS-400",
        "content_type",
    ),
    ("POST", "/v1/memo", JSON, b'{"text": "' + b"x" * 4000 + b'"}', 413, "BEDS-413", "body_size"),
    ("POST", "/v1/memo", JSON, b'{"a":' * 20 + b"1" + b"}" * 20, 400, "BEDS-400", "json_depth"),
    ("GET", "/v1/nothing/here", {}, b"", 404, "BEDS-404T", "route"),
    ("GET", "/v1/memo/no_such_query", {}, b"", 404, "BEDS-404", "route"),
    ("GET", "/v1/memo/hidden?id=1", {}, b"", 404, "BEDS-404", "route"),
    ("PUT", "/v1/memo", JSON, b"{}", 405, "BEDS-405", "method"),
    ("PATCH", "/v1/board", JSON, b"{}", 405, "BEDS-405", "method"),
    ("GET", "/v1/memo/by_id?id=abc", {}, b"", 422, "BEDS-422", "params"),
    ("GET", "/v1/memo/by_id", {}, b"", 422, "BEDS-422", "params"),
    ("GET", "/v1/memo/by_id?id=1&id=2", {}, b"", 422, "BEDS-422", "params"),
    ("GET", "/v1/memo/by_id?id=1&nope=2", {}, b"", 422, "BEDS-422", "params"),
    ("GET", "/v1/memo/by_author?author=a&limit=0", {}, b"", 422, "BEDS-422", "params"),
    ("GET", "/v1/memo/by_author?author=a&limit=51", {}, b"", 422, "BEDS-422", "params"),
    ("GET", "/v1/memo/flagged?done=yes&ratio=nan", {}, b"", 422, "BEDS-422", "params"),
    ("GET", "/v1/memo/by_author?author=a&cursor=%3Cscript%3E", {}, b"", 400, "BEDS-400", "cursor"),
    (
        "GET",
        "/v1/memo/by_id?id=1",
        {TOKEN_HEADER: "Basic dXNlcjpwYXNz"},
        b"",
        401,
        "BEDS-401",
        "token",
    ),
    ("GET", "/v1/memo/by_id?id=1", {TOKEN_HEADER: "Bearer a b c"}, b"", 401, "BEDS-401", "token"),
    (
        "GET",
        "/v1/memo/by_id?id=1",
        {"Origin": "https://evil.example"},
        b"",
        403,
        "BEDS-403",
        "cors",
    ),
    (
        "OPTIONS",
        "/v1/memo",
        {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        b"",
        403,
        "BEDS-403",
        "cors",
    ),
    ("POST", "/v1/memo", {**JSON, "Idempotency-Key": " padded "}, b"{}", 400, "BEDS-400", "header"),
    ("POST", "/v1/memo", {**JSON, "Idempotency-Key": "k" * 201}, b"{}", 400, "BEDS-400", "header"),
    ("GET", "/v1/memo/by_id?id=1", {"X-Request-Id": "has space"}, b"", 400, "BEDS-400", "header"),
    ("GET", "/v1/tickets/not-a-uuid", {}, b"", 400, "BEDS-400", "path"),
    ("GET", "/v1/events", {}, b"", 400, "BEDS-400", "params"),
    ("GET", "/v1/events?template=nope", {}, b"", 404, "BEDS-404T", "template"),
    ("GET", "/v1/events?template=board", {"Last-Event-ID": "x\ty"}, b"", 400, "BEDS-400", "header"),
    ("POST", "/v1/auth/login", JSON, b'{"handle": "a"}', 422, "BEDS-422", "body"),
    (
        "POST",
        "/v1/auth/signup",
        JSON,
        b'{"handle": "a", "roles": "admin"}',
        422,
        "BEDS-422",
        "body",
    ),
    ("POST", "/v1/auth/logout", {}, b"", 401, "BEDS-401", "token"),
    ("GET", "/v1/auth/me", {}, b"", 401, "BEDS-401", "token"),
]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "code", "reason"),
    CASES,
    ids=[f"{c[0]} {c[1][:40]} {c[6]}" for c in CASES],
)
async def test_refused_at_the_edge(
    edge: httpx.AsyncClient,
    caller: Any,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    code: str,
    reason: str,
) -> None:
    reply = await edge.request(method, path, headers=headers, content=body)
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    problem = reply.json()
    assert problem["code"] == code
    assert problem["status"] == status
    assert problem["type"] == f"urn:beds:error:{code}"
    assert problem["title"]
    assert problem["instance"] == path.split("?")[0]
    assert len(problem["trace_id"]) == 32
    assert reply.headers["traceparent"].split("-")[1] == problem["trace_id"]
    assert caller.calls == []  # the node never saw it
    assert edge.app.state.metrics.refused[reason] == 1  # type: ignore[attr-defined]


async def test_unauthenticated_responses_say_how_to_authenticate(edge: httpx.AsyncClient) -> None:
    reply = await edge.get("/v1/auth/me")
    assert reply.headers["www-authenticate"].startswith("Bearer")


async def test_allowed_origins_get_cors_headers(app_with: Any) -> None:
    app = app_with(cors_origins=["https://app.example"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge.test") as client:
        preflight = await client.options(
            "/v1/board",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        reply = await client.get("/v1/board/all", headers={"Origin": "https://app.example"})
        assert reply.status_code == 200
        assert reply.headers["access-control-allow-origin"] == "https://app.example"
        # Same origin is always allowed.
        reply = await client.get("/v1/board/all", headers={"Origin": "http://edge.test"})
        assert reply.status_code == 200


async def test_metrics_count_routes_and_refusals(edge: httpx.AsyncClient) -> None:
    await edge.get("/v1/board/all")
    await edge.get("/v1/board/all?x=1")
    text = (await edge.get("/metrics")).text
    assert 'beds_http_requests_total{route="/v1/board/all",status="200"} 1.0' in text
    assert 'beds_http_requests_total{route="/v1/board/all",status="422"} 1.0' in text
    assert 'beds_http_refused_total{reason="params"} 1.0' in text


_TEXT = st.text(max_size=30)
_JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | _TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=20,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "POST", "PATCH", "DELETE", "PUT"]),
    path=st.sampled_from(
        [
            "/v1/memo",
            "/v1/board",
            "/v1/memo/by_id",
            "/v1/memo/among",
            "/v1/board/all",
            "/v1/tickets/x",
            "/v1/auth/login",
            "/v1/x/y/z",
            "/v1/",
        ]
    )
    | st.text(alphabet="/abcdefghijklmnopqrstuvwxyz_0123456789.%-", max_size=40).map(
        lambda p: "/v1/" + p
    ),
    query=st.dictionaries(
        st.sampled_from(["id", "ids", "limit", "cursor", "text", "author", "x"]), _TEXT, max_size=3
    ),
    body=st.one_of(st.binary(max_size=200), _JSONISH.map(orjson.dumps)),
    content_type=st.sampled_from(
        ["application/json", "text/plain", "", "application/json; charset=utf-8"]
    ),
    header=st.sampled_from(
        ["Authorization", "Idempotency-Key", "traceparent", "X-Request-Id", "Origin"]
    ),
    header_value=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
)
async def test_random_requests_never_fail_with_500_and_refusals_never_reach_the_node(
    edge: httpx.AsyncClient,
    caller: Any,
    method: str,
    path: str,
    query: dict[str, str],
    body: bytes,
    content_type: str,
    header: str,
    header_value: str,
) -> None:
    headers = {header: header_value}
    if content_type:
        headers["Content-Type"] = content_type
    before_calls, before_refused = len(caller.calls), refused_total(edge)
    reply = await edge.request(method, path, params=query, headers=headers, content=body)
    assert reply.status_code < 500 or reply.json()["code"] != "BEDS-500", reply.text
    if reply.status_code >= 400:
        assert reply.headers["content-type"] == "application/problem+json", reply.text
    if refused_total(edge) > before_refused:
        assert len(caller.calls) == before_calls  # refused by the edge: the node never saw it
