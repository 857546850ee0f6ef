"""The wire limits: every ``meta`` field and every AMQP property the node reads or echoes.

Anything over a limit is refused with ``BEDS-400`` naming the field, deterministically, before
anything executes; anything accepted can be sent back in a reply without failing to encode.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp.commands import Basic

from beds.codec import decode_request
from beds.envelopes import MAX_META_BYTES, Request
from beds.errors import MalformedRequest
from beds.transport.frames import UNDECODABLE_HEADER
from beds.wire_limits import check_request_properties, safe_shortstr

META_TEXT = ("event_id", "parent_id", "correlation_id", "causation_id", "origin", "principal")


def body(meta: dict[str, Any] | None = None, template: Any = "spew_post") -> bytes:
    document: dict[str, Any] = {"operation": "create", "template": template, "payload": {}}
    if meta is not None:
        document["meta"] = meta
    return orjson.dumps(document)


def refused(raw: bytes) -> MalformedRequest:
    with pytest.raises(MalformedRequest) as caught:
        decode_request(raw)
    return caught.value


@pytest.mark.parametrize("field", META_TEXT)
def test_meta_text_at_the_byte_limit_is_accepted_and_one_byte_over_is_refused(field: str) -> None:
    assert getattr(decode_request(body({field: "a" * MAX_META_BYTES})).meta, field)
    error = refused(body({field: "a" * (MAX_META_BYTES + 1)}))
    assert error.CODE == "BEDS-400"
    assert f"RequestMeta.{field}" in error.details[0]
    assert "255 bytes" in error.details[0]


@pytest.mark.parametrize("field", META_TEXT)
@pytest.mark.parametrize(
    "value",
    [
        "😀" * 64,  # 64 characters, 256 bytes
        "a\x00b",
        "line\nbreak",
        "tab\there",
        "\x1b[31mred",
        "\u2028",
    ],
    ids=["emoji-over-bytes", "nul", "newline", "tab", "escape", "line-separator"],
)
def test_meta_text_that_is_not_printable_or_too_many_bytes_is_refused(
    field: str, value: str
) -> None:
    assert f"RequestMeta.{field}" in refused(body({field: value})).details[0]


def test_a_lone_surrogate_in_json_text_is_refused_as_json() -> None:
    raw = b'{"operation": "create", "template": "spew_post", "meta": {"origin": "\\ud800"}}'
    error = refused(raw)
    assert error.message == "message body is not valid JSON"


@pytest.mark.parametrize(
    ("template", "accepted"),
    [
        ("spew_post", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("Spew_Post", False),
        ("spew.post", False),
        ("", False),
        ("9lives", False),
        ("spew post", False),
    ],
)
def test_template_names(template: str, accepted: bool) -> None:
    if accepted:
        assert decode_request(body(template=template)).template == template
    else:
        assert "Request.template" in refused(body(template=template)).details[0]


@pytest.mark.parametrize("deadline", [0, -1, 1e11, 1e300])
def test_deadlines_out_of_range_are_refused(deadline: float) -> None:
    assert "RequestMeta.deadline" in refused(body({"deadline": deadline})).details[0]


def test_idempotency_keys_are_limited_in_bytes_too() -> None:
    assert decode_request(body({"idempotency_key": "é" * 127})).meta.idempotency_key
    assert "idempotency_key" in refused(body({"idempotency_key": "é" * 128})).details[0]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=64),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=8,
)
hostile_text = st.one_of(
    st.text(max_size=300),
    st.text(st.characters(codec="utf-8"), min_size=200, max_size=600),
    st.integers(min_value=0, max_value=65536).map(lambda n: "x" * n),
    st.sampled_from(["", " ", "\x00", "😀" * 64, "a\u0085b", "ok"]),
)
meta_values = st.dictionaries(
    st.sampled_from([*META_TEXT, "idempotency_key", "deadline", "depth", "extra"]),
    hostile_text | json_values,
)


@settings(max_examples=400, deadline=None)
@given(meta=meta_values, template=hostile_text | json_values)
def test_any_meta_is_accepted_within_the_limits_or_refused_deterministically(
    meta: dict[str, Any], template: Any
) -> None:
    raw = body(meta, template)
    outcomes: list[Request | tuple[str, tuple[str, ...]]] = []
    for _ in range(2):
        try:
            outcomes.append(decode_request(raw))
        except MalformedRequest as error:
            outcomes.append((error.message, error.details))
    assert outcomes[0] == outcomes[1]  # deterministic: the same input, the same answer
    request = outcomes[0]
    if not isinstance(request, Request):
        return
    # Whatever was accepted can be echoed in AMQP properties and encoded in a reply.
    for field in META_TEXT:
        value = getattr(request.meta, field)
        assert value is None or safe_shortstr(value) == value
        assert value is None or value.isprintable()


# -- AMQP properties -----------------------------------------------------------------------


def properties(**values: Any) -> Basic.Properties:
    return Basic.Properties(**{"reply_to": "amq.rabbitmq.reply-to", **values})


def test_properties_within_the_limits_pass() -> None:
    check_request_properties(
        properties(
            correlation_id="c" * 255,
            content_type="application/json",
            message_id="m1",
            expiration="1000",
            headers={"x-beds-deliveries": 2, "x-beds-routing-key": "spew_post.write"},
        )
    )


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"reply_to": None}, "no reply_to"),
        ({"correlation_id": "c" * 256}, "correlation_id"),
        ({"correlation_id": "\udcff\udcfe"}, "correlation_id"),  # bytes that were not UTF-8
        ({"reply_to": "queue\nname"}, "reply_to"),
        ({"message_id": "😀" * 64}, "message_id"),
        ({"headers": {"x-beds-deliveries": "2"}}, "x-beds-deliveries"),
        ({"headers": {"x-beds-deliveries": 0}}, "x-beds-deliveries"),
        ({"headers": {"x-beds-routing-key": b"spew_post.write"}}, "x-beds-routing-key"),
        ({"headers": {UNDECODABLE_HEADER: "UnicodeDecodeError: …"}}, "do not decode"),
    ],
)
def test_properties_over_their_limits_are_refused_by_name(
    values: dict[str, Any], named: str
) -> None:
    with pytest.raises(MalformedRequest) as caught:
        check_request_properties(properties(**values))
    assert named in caught.value.message + " ".join(caught.value.details)


@given(st.text(max_size=300) | st.binary(max_size=300) | st.integers() | st.none())
def test_safe_shortstr_only_returns_what_amqp_can_carry(value: Any) -> None:
    safe = safe_shortstr(value)
    if safe is not None:
        assert safe is value
        assert len(safe.encode("utf-8")) <= 255
