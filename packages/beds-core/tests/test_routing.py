"""Routing keys: RabbitMQ's topic rule, and the check that a body travelled with its own key."""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beds.codec import encode_request, encode_response
from beds.dispatch import Dispatcher
from beds.envelopes import Operation, Request, RequestMeta, Response
from beds.factory import Factory
from beds.routing import Bindings, routing_key, topic_matches
from beds.templates.model import Template
from beds.testing import MemoryAdapter, TestIdentity

IDENTITY = TestIdentity(env="test")
ALICE = IDENTITY.credential("alice")
RECORD = {"title": "abc", "count": 1, "active": True}


@pytest.mark.parametrize(
    ("pattern", "key", "routed"),
    [
        ("*.read", "spew_post.read", True),
        ("*.read", "spew_post.write", False),
        ("*.read", "a.b.read", False),
        ("spew_post.*", "spew_post.write", True),
        ("#", "anything.at.all", True),
        ("#", "", True),
        ("#.read", "read", True),
        ("#.read", "a.b.read", True),
        ("a.#.b", "a.b", True),
        ("a.#.b", "a.x.y.b", True),
        ("a.#.b", "a.x.y.c", False),
        ("beds_lineage.admin", "beds_lineage.admin", True),
    ],
)
def test_topic_rule(pattern: str, key: str, routed: bool) -> None:
    assert topic_matches(pattern, key) is routed


def _reference(pattern: str, key: str) -> bool:
    """RabbitMQ's rule written as a regular expression, to compare the matcher against."""
    words = pattern.split(".")
    regex = ""
    for index, word in enumerate(words):
        dot = r"\." if index else ""
        if word == "#":
            regex += rf"(?:{dot}[^.]*)*" if index else r"(?:[^.]*(?:\.[^.]*)*)?"
            if index == 0 and len(words) > 1:
                regex = r"(?:[^.]*\.)*"  # leading '#.' eats whole words, dot included
        else:
            piece = "[^.]*" if word == "*" else re.escape(word)
            if index and words[index - 1] == "#" and index - 1 == 0:
                regex += piece
            else:
                regex += dot + piece
    return re.fullmatch(regex, key) is not None


words = st.sampled_from(["a", "b", "read", "write", ""])


@given(
    pattern=st.lists(st.sampled_from(["a", "b", "*", "#", "read"]), min_size=1, max_size=4),
    key=st.lists(words, min_size=1, max_size=5),
)
def test_the_matcher_agrees_with_a_regular_expression(pattern: list[str], key: list[str]) -> None:
    if pattern.count("#") > 1:
        return  # the reference handles one '#'
    joined, text = ".".join(pattern), ".".join(key)
    assert topic_matches(joined, text) is _reference(joined, text)


def test_bindings_remember_keys() -> None:
    bindings = Bindings(("*.read", "spew_session.*"))
    assert bindings.route("spew_post.read")
    assert bindings.route("spew_session.write")
    assert not bindings.route("spew_post.write")
    assert not Bindings(()).route("spew_post.read")


def _dispatcher(template: Template, bindings: Bindings | None) -> Dispatcher:
    return Dispatcher(
        Factory({template.name: template}, {"memory": MemoryAdapter()}),
        node="n1",
        env="test",
        max_message_bytes=65536,
        bindings=bindings,
        authenticator=IDENTITY.authenticator,
    )


def _body(template: str, operation: Operation, payload: dict[str, object]) -> bytes:
    return encode_request(
        Request(
            operation=operation,
            template=template,
            payload=payload,
            meta=RequestMeta(principal="alice"),
        )
    )


async def _handle(target: Dispatcher, body: bytes, route: str | None) -> Response:
    _, response = await target.handle(body, "application/json", route, credential=ALICE)
    return response


async def test_a_write_with_a_read_key_is_refused_and_nothing_is_stored(
    demo_template: Template,
) -> None:
    target = _dispatcher(demo_template, Bindings(("*.read", "*.write")))
    adapter = target.factory.resolve("demo_item")[1]
    assert isinstance(adapter, MemoryAdapter)
    response = await _handle(target, _body("demo_item", Operation.CREATE, RECORD), "demo_item.read")
    assert response.error is not None
    assert response.error.code == "BEDS-405"
    assert "expected 'demo_item.write'" in response.error.details[0]
    assert not any(adapter.tables.values())


async def test_a_body_of_another_template_than_the_key_is_refused(demo_template: Template) -> None:
    target = _dispatcher(demo_template, Bindings(("*.read",)))
    body = _body("demo_item", Operation.FETCH, {"query": "by_id", "params": {"id": 1}})
    response = await _handle(target, body, "spew_post.read")
    assert response.error is not None
    assert response.error.code == "BEDS-400"
    first, again = await _handle(target, body, ""), await _handle(target, body, "")
    assert first.error == again.error  # deterministic
    assert first.error is not None
    assert first.error.code == "BEDS-400"


async def test_a_key_the_broker_is_not_bound_to_is_refused(demo_template: Template) -> None:
    # The key matches the body, but the message reached a read broker's queue directly.
    target = _dispatcher(demo_template, Bindings(("*.read",)))
    response = await _handle(
        target, _body("demo_item", Operation.CREATE, RECORD), "demo_item.write"
    )
    assert response.error is not None
    assert response.error.code == "BEDS-405"
    assert "*.read" in response.error.details[0]


async def test_the_right_key_is_served_and_none_means_embedded(demo_template: Template) -> None:
    target = _dispatcher(demo_template, Bindings(("*.read", "*.write")))
    body = _body("demo_item", Operation.CREATE, RECORD)
    assert (await _handle(target, body, routing_key("demo_item", Operation.CREATE))).ok
    assert (await _handle(target, body, None)).ok


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(route=st.text(max_size=300), operation=st.sampled_from([Operation.CREATE, Operation.FETCH]))
def test_any_key_but_the_bodys_own_is_refused_with_a_code_and_nothing_runs(
    demo_template: Template, route: str, operation: Operation
) -> None:
    target = _dispatcher(demo_template, Bindings(("*.read", "*.write")))
    adapter = target.factory.resolve("demo_item")[1]
    assert isinstance(adapter, MemoryAdapter)
    payload: dict[str, object] = (
        RECORD if operation is Operation.CREATE else {"query": "by_id", "params": {"id": 1}}
    )
    body = _body("demo_item", operation, payload)
    response = asyncio.run(_handle(target, body, route))
    if route == routing_key("demo_item", operation):
        assert response.ok
        return
    assert response.error is not None
    assert response.error.code in ("BEDS-400", "BEDS-405")
    assert not any(adapter.tables.values())
    encode_response(response)  # the reply always encodes, whatever the key held


def _delivered(user_id: object, headers: dict[str, object] | None = None) -> object:
    from types import SimpleNamespace

    properties = SimpleNamespace(user_id=user_id, headers=headers)
    return SimpleNamespace(header=SimpleNamespace(properties=properties))


@pytest.mark.parametrize(
    ("user_id", "headers", "origin"),
    [
        ("beds-client", None, "beds-client"),
        (None, None, ""),
        (7, None, ""),  # not a string: vouched for by nobody
        # A copy the role put back on its queue keeps the first origin...
        ("beds-app", {"x-beds-origin": "beds-client"}, "beds-client"),
        # ...believed only from the role's own user: a client cannot claim one.
        ("beds-client", {"x-beds-origin": "beds-admin"}, "beds-client"),
        ("beds-app", {"x-beds-origin": 12}, "beds-app"),
    ],
)
def test_the_origin_is_the_user_rabbitmq_vouches_for(
    user_id: object, headers: dict[str, object] | None, origin: str
) -> None:
    from beds.broker.messages import origin_of

    assert origin_of(_delivered(user_id, headers), "beds-app") == origin  # type: ignore[arg-type]
