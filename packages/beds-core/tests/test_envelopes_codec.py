"""Envelopes and the wire codec: round trips, and deterministic errors for every bad input."""

from __future__ import annotations

from typing import Any

import attrs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beds.codec import (
    CONTENT_TYPE,
    DEFAULT_MAX_MESSAGE_BYTES,
    _usual_request,
    _usual_response,
    converter,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from beds.envelopes import (
    MAX_DEPTH,
    READ_OPERATIONS,
    WRITE_OPERATIONS,
    ErrorBody,
    Operation,
    Request,
    RequestMeta,
    Response,
    ResponseMeta,
)
from beds.errors import MalformedRequest, PayloadTooLarge, RequestError, error_catalogue

# -- strategies --------------------------------------------------------------------------------

# orjson refuses lone surrogates and integers beyond 64 bits, and JSON has no NaN or infinity:
# those are not JSON values, so they are not generated.
text = st.text(st.characters(codec="utf-8"), max_size=24)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=16,
)
json_objects = st.dictionaries(text, json_values, max_size=6)
template_names = st.from_regex(r"[a-z][a-z0-9_]{0,62}", fullmatch=True)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
# What meta fields accept: printable text of at most 255 bytes (24 characters fit).
printable_characters = st.characters(
    codec="utf-8", categories=["L", "M", "N", "P", "S"], include_characters=" "
)
meta_text = st.text(printable_characters, max_size=24)

request_metas = st.builds(
    RequestMeta,
    event_id=meta_text,
    parent_id=meta_text,
    depth=st.integers(min_value=0, max_value=MAX_DEPTH),
    correlation_id=meta_text,
    causation_id=meta_text,
    origin=meta_text,
    idempotency_key=st.none()
    | st.text(printable_characters, min_size=1, max_size=60).filter(
        lambda key: key.strip() == key and key.isprintable()
    ),
    deadline=st.none() | st.floats(min_value=0, max_value=1e11, exclude_min=True, exclude_max=True),
    principal=st.none() | meta_text,
)
requests = st.builds(
    Request,
    operation=st.sampled_from(Operation),
    template=template_names,
    payload=json_objects,
    meta=request_metas,
)
error_bodies = st.builds(
    ErrorBody,
    code=st.sampled_from(sorted(error_catalogue())) | text,
    message=text,
    details=st.lists(text, max_size=4).map(tuple),
)
responses = st.builds(
    Response,
    ok=st.booleans(),
    status=st.integers(min_value=100, max_value=599),
    data=json_values,
    error=st.none() | error_bodies,
    meta=st.builds(
        ResponseMeta,
        event_id=text,
        node=text,
        timings=st.dictionaries(text, finite_floats, max_size=4),
    ),
)

# -- round trips -------------------------------------------------------------------------------


@given(requests)
@settings(deadline=None)
def test_request_round_trip(req: Request) -> None:
    body = encode_request(req)
    decoded = decode_request(body)
    assert decoded == req
    assert encode_request(decoded) == body


@given(responses)
@settings(deadline=None)
def test_response_round_trip(response: Response) -> None:
    body = encode_response(response)
    decoded = decode_response(body)
    assert decoded == response
    assert encode_response(decoded) == body


def test_wire_shape_of_a_request() -> None:
    request = Request(
        operation=Operation.CREATE,
        template="spew_post",
        payload={"author": "ann", "body": "hi"},
        meta=RequestMeta(event_id="n1.dev.abc", depth=2, deadline=1700000000.5, principal="ann"),
    )
    assert orjson.loads(encode_request(request)) == {
        "version": 1,
        "operation": "create",
        "template": "spew_post",
        "payload": {"author": "ann", "body": "hi"},
        "meta": {
            "event_id": "n1.dev.abc",
            "parent_id": "",
            "depth": 2,
            "correlation_id": "",
            "causation_id": "",
            "origin": "",
            "idempotency_key": None,
            "deadline": 1700000000.5,
            "principal": "ann",
        },
    }


def test_optional_keys_may_be_omitted() -> None:
    request = decode_request(b'{"operation": "fetch", "template": "spew_post"}')
    assert request == Request(operation=Operation.FETCH, template="spew_post")
    assert request.meta == RequestMeta()
    response = decode_response(b'{"ok": true, "status": 200}')
    assert response == Response(ok=True, status=200)


def test_wire_shape_of_an_error_response() -> None:
    response = Response(
        ok=False,
        status=422,
        error=ErrorBody(code="BEDS-422", message="bad", details=("$.a: x",)),
        meta=ResponseMeta(event_id="e", node="n", timings={"total": 1.5}),
    )
    assert orjson.loads(encode_response(response)) == {
        "version": 1,
        "ok": False,
        "status": 422,
        "data": None,
        "error": {"code": "BEDS-422", "message": "bad", "details": ["$.a: x"]},
        "meta": {"event_id": "e", "node": "n", "timings": {"total": 1.5}},
    }


def test_operations() -> None:
    assert {op.value for op in Operation} >= {
        "create",
        "fetch",
        "update",
        "delete",
        "submit",
        "ticket",
    }
    assert not READ_OPERATIONS & WRITE_OPERATIONS
    assert {Operation.CREATE, Operation.UPDATE, Operation.DELETE} == WRITE_OPERATIONS


def test_envelopes_are_frozen_and_keyword_only() -> None:
    request = Request(operation=Operation.FETCH, template="t")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        request.template = "u"  # type: ignore[misc]
    build: Any = Request
    with pytest.raises(TypeError):
        build(Operation.FETCH, "t")


@pytest.mark.parametrize("depth", [-1, MAX_DEPTH + 1])
def test_depth_out_of_range_is_refused_when_built(depth: int) -> None:
    with pytest.raises(ValueError, match=r"RequestMeta.depth should be in range \[0:64\]"):
        RequestMeta(depth=depth)


# -- bad input ---------------------------------------------------------------------------------


def decode_or_error(body: bytes, **options: Any) -> Request | RequestError:
    """Decode, returning the RequestError instead of raising it (any other exception escapes)."""
    try:
        return decode_request(body, **options)
    except RequestError as error:
        return error


def assert_refused(error: Request | RequestError) -> None:
    assert isinstance(error, RequestError), f"accepted: {error!r}"
    assert isinstance(error, MalformedRequest | PayloadTooLarge)
    assert error_catalogue()[error.CODE] is type(error)


@given(st.binary(max_size=256))
@settings(deadline=None)
def test_arbitrary_bytes_are_refused_with_a_request_error(body: bytes) -> None:
    with pytest.raises(RequestError) as info:
        decode_request(body)
    assert_refused(info.value)


@given(st.binary(max_size=64), st.integers(min_value=0, max_value=32))
@settings(deadline=None)
def test_arbitrary_bytes_with_a_small_limit(body: bytes, limit: int) -> None:
    with pytest.raises(RequestError) as info:
        decode_request(body, max_bytes=limit)
    assert_refused(info.value)
    assert isinstance(info.value, PayloadTooLarge) == (len(body) > limit)


@given(json_values)
@settings(deadline=None)
def test_arbitrary_json_is_refused_with_a_request_error(value: Any) -> None:
    first, second = (decode_or_error(orjson.dumps(value)) for _ in range(2))
    assert_refused(first)
    assert isinstance(first, RequestError)
    assert isinstance(second, RequestError)
    assert first.to_error() == second.to_error()


def set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


ENVELOPE_PATHS = [
    ("version",),
    ("operation",),
    ("template",),
    ("payload",),
    ("meta",),
    *(("meta", field.name) for field in attrs.fields(RequestMeta)),
    ("extra",),
    ("meta", "extra"),
]


def get_path(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        data = data[key]
    return data


@given(requests, st.sampled_from(ENVELOPE_PATHS), json_values)
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_valid_envelope_with_one_value_replaced(
    req: Request, path: tuple[str, ...], value: Any
) -> None:
    raw = converter.unstructure(req)
    set_path(raw, path, value)
    body = orjson.dumps(raw)
    decoded = decode_or_error(body)
    if isinstance(decoded, RequestError):
        assert isinstance(decoded, MalformedRequest)
        assert decoded.details
        again = decode_or_error(body)
        assert isinstance(again, RequestError)
        assert decoded.to_error() == again.to_error()
    else:
        assert decode_request(encode_request(decoded)) == decoded
        if path != ("meta",):  # a partial meta object is accepted and completed by defaults
            # Whatever is accepted is what was sent: no silent coercion between JSON types.
            got = get_path(converter.unstructure(decoded), path)
            assert got == value
            assert type(got) is type(value) or (path[-1] == "deadline" and type(value) is int)


@given(requests, st.sampled_from(ENVELOPE_PATHS), json_values, st.booleans())
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_usual_request_decoder_agrees_with_the_converter(
    req: Request, path: tuple[str, ...], value: Any, remove: bool
) -> None:
    raw = converter.unstructure(req)
    if remove and path[-1] != "extra":
        del get_path(raw, path[:-1])[path[-1]]
    else:
        set_path(raw, path, value)
    raw = orjson.loads(orjson.dumps(raw))  # as the wire gives it
    usual = _usual_request(raw)
    try:
        structured: Request | None = converter.structure(raw, Request)
    except Exception:
        structured = None
    # It builds only what the converter builds, identically; the rest the converter explains.
    assert usual is None or usual == structured
    if usual is not None:
        assert type(usual.meta.deadline) is type(structured.meta.deadline)  # type: ignore[union-attr]


@given(requests, responses)
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_what_clients_and_nodes_send_takes_the_usual_decoders(
    req: Request, response: Response
) -> None:
    assert _usual_request(orjson.loads(encode_request(req))) == req
    assert _usual_response(orjson.loads(encode_response(response))) == response


RESPONSE_PATHS = [
    ("version",),
    ("ok",),
    ("status",),
    ("data",),
    ("error",),
    ("error", "code"),
    ("error", "details"),
    ("error", "extra"),
    ("meta",),
    ("meta", "timings"),
    ("meta", "next"),
    ("meta", "cached"),
    ("meta", "newer"),
    ("extra",),
]


@given(responses, st.sampled_from(RESPONSE_PATHS), json_values, st.booleans())
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_usual_response_decoder_agrees_with_the_converter(
    response: Response, path: tuple[str, ...], value: Any, remove: bool
) -> None:
    raw = orjson.loads(encode_response(response))
    parent = get_path(raw, path[:-1]) if path[:-1] != ("error",) or raw["error"] else None
    if isinstance(parent, dict):
        if remove:
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = value
    usual = _usual_response(raw)
    try:
        structured: Response | None = converter.structure(raw, Response)
    except Exception:
        structured = None
    assert usual is None or usual == structured


def bad(**changes: Any) -> bytes:
    raw: dict[str, Any] = {"operation": "create", "template": "spew_post", "payload": {}}
    for dotted, value in changes.items():
        set_path(raw, tuple(dotted.split("__")), value)
    return orjson.dumps(raw)


# One row per kind of bad input, with the exact reply it gets: these details are part of what a
# caller sees, and the same input must always get the same ones.
BAD_REQUESTS = [
    pytest.param(
        b"",
        "message body is not valid JSON",
        ("Input is a zero-length, empty document: line 1 column 1 (char 0)",),
        id="empty",
    ),
    pytest.param(b"[1]", "message body must be a JSON object", ("got array",), id="array"),
    pytest.param(b"null", "message body must be a JSON object", ("got null",), id="null"),
    pytest.param(
        b"{}",
        "message body is not a valid Request envelope",
        ("required field missing @ $.operation", "required field missing @ $.template"),
        id="empty-object",
    ),
    pytest.param(
        bad(extra=1, another=2),
        "message body is not a valid Request envelope",
        ("extra fields found (another, extra) @ $",),
        id="extra-keys",
    ),
    pytest.param(
        bad(meta={"trace": "x"}),
        "message body is not a valid Request envelope",
        ("extra fields found (trace) @ $.meta",),
        id="extra-meta-key",
    ),
    pytest.param(
        bad(version=2),
        "message body is not a valid Request envelope",
        ("must be 1 @ $.version",),
        id="version-2",
    ),
    pytest.param(
        bad(version=True),
        "message body is not a valid Request envelope",
        ("must be 1 @ $.version",),
        id="version-true",
    ),
    pytest.param(
        bad(version="1"),
        "message body is not a valid Request envelope",
        ("must be 1 @ $.version",),
        id="version-text",
    ),
    pytest.param(
        bad(meta={"depth": 65}),
        "message body is not a valid Request envelope",
        ("must be in range [0:64], got 65 @ $.meta.depth",),
        id="depth-65",
    ),
    pytest.param(
        bad(meta={"depth": -1}),
        "message body is not a valid Request envelope",
        ("must be in range [0:64], got -1 @ $.meta.depth",),
        id="depth-negative",
    ),
    pytest.param(
        bad(meta={"event_id": "e" * 256, "origin": "a\x00", "depth": 65}),
        "message body is not a valid Request envelope",
        (
            "must be at most 255 bytes in UTF-8, got 256 @ $.meta.event_id",
            "must be in range [0:64], got 65 @ $.meta.depth",
            "must be printable text (no control or format characters), got U+0000 at index 1"
            " @ $.meta.origin",
        ),
        id="meta-limits-all-named",
    ),
    pytest.param(
        bad(template="Spew"),
        "message body is not a valid Request envelope",
        (
            "must be a template name: lower_snake_case, 1 to 63 of a-z, 0-9 and '_', starting"
            " with a letter @ $.template",
        ),
        id="template-name",
    ),
    pytest.param(
        bad(meta={"depth": 1.5}),
        "message body is not a valid Request envelope",
        ("must be an integer, got number @ $.meta.depth",),
        id="depth-float",
    ),
    pytest.param(
        bad(meta={"depth": True}),
        "message body is not a valid Request envelope",
        ("must be an integer, got boolean @ $.meta.depth",),
        id="depth-bool",
    ),
    pytest.param(
        bad(operation="drop"),
        "message body is not a valid Request envelope",
        ("invalid value for type, expected Operation @ $.operation",),
        id="unknown-operation",
    ),
    pytest.param(
        bad(template=7),
        "message body is not a valid Request envelope",
        ("must be a string, got integer @ $.template",),
        id="template-number",
    ),
    pytest.param(
        bad(payload=[1, 2]),
        "message body is not a valid Request envelope",
        ("must be an object @ $.payload",),
        id="payload-array",
    ),
    pytest.param(
        bad(meta="x"),
        "message body is not a valid Request envelope",
        ("must be an object @ $.meta",),
        id="meta-text",
    ),
    pytest.param(
        bad(meta={"event_id": {"a": 1}, "deadline": "soon", "idempotency_key": 5}),
        "message body is not a valid Request envelope",
        (
            "must be a number, got string @ $.meta.deadline",
            "must be a string, got integer @ $.meta.idempotency_key",
            "must be a string, got object @ $.meta.event_id",
        ),
        id="meta-types",
    ),
]


@pytest.mark.parametrize(("body", "message", "details"), BAD_REQUESTS)
def test_bad_request_gets_a_deterministic_error(
    body: bytes, message: str, details: tuple[str, ...]
) -> None:
    errors = []
    for _ in range(2):
        with pytest.raises(MalformedRequest) as info:
            decode_request(body)
        errors.append(info.value)
    assert errors[0].message == message
    assert errors[0].details == details
    assert errors[0].to_error() == errors[1].to_error()
    assert errors[0].CODE == "BEDS-400"


def test_oversize_body_names_the_limit() -> None:
    body = encode_request(Request(operation=Operation.CREATE, template="t", payload={"x": "y"}))
    with pytest.raises(PayloadTooLarge) as info:
        decode_request(body, max_bytes=len(body) - 1)
    assert info.value.CODE == "BEDS-413"
    assert info.value.details == (f"limit is {len(body) - 1} bytes, body has {len(body)}",)
    # A body of exactly the limit is accepted.
    assert decode_request(body, max_bytes=len(body)).payload == {"x": "y"}


def test_default_limit_is_one_mebibyte() -> None:
    body = b" " * (DEFAULT_MAX_MESSAGE_BYTES + 1)
    with pytest.raises(PayloadTooLarge) as info:
        decode_request(body)
    assert "limit is 1048576 bytes" in info.value.details[0]


def test_size_is_checked_before_anything_else() -> None:
    with pytest.raises(PayloadTooLarge):
        decode_request(b"\xff" * 10, "text/plain", max_bytes=5)


@pytest.mark.parametrize(
    "content_type",
    [
        CONTENT_TYPE,
        None,
        "",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "Application/JSON",
    ],
)
def test_accepted_content_types(content_type: str | None) -> None:
    body = b'{"operation": "ping", "template": "beds"}'
    assert decode_request(body, content_type).operation is Operation.PING


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/xml",
        "application/jsonx",
        "application/json; charset=latin-1",
        "application/x-msgpack",
    ],
)
def test_wrong_content_type_is_malformed(content_type: str) -> None:
    body = b'{"operation": "ping", "template": ""}'
    with pytest.raises(MalformedRequest) as info:
        decode_request(body, content_type)
    assert info.value.message == "unsupported content type"
    assert info.value.details == (f"expected application/json, got {content_type}",)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"ok": "false", "status": 200}', "must be true or false, got string @ $.ok"),
        (b'{"ok": true, "status": 200.5}', "must be an integer, got number @ $.status"),
        (
            b'{"ok": false, "status": 400, "error": {"code": "BEDS-400", "message": "m",'
            b' "details": "abc"}}',
            "must be an array, got string @ $.error.details",
        ),
        (
            b'{"ok": true, "status": 200, "meta": {"timings": {"store": "1"}}}',
            "must be a number, got string @ $.meta.timings['store']",
        ),
        (b'{"ok": true, "status": 200, "version": 0}', "must be 1 @ $.version"),
    ],
)
def test_bad_response_is_malformed(body: bytes, detail: str) -> None:
    with pytest.raises(MalformedRequest) as info:
        decode_response(body)
    assert info.value.details == (detail,)


@given(st.binary(max_size=128) | json_values.map(orjson.dumps))
@settings(deadline=None)
def test_arbitrary_input_to_decode_response_is_refused(body: bytes) -> None:
    with pytest.raises(RequestError) as info:
        decode_response(body)
    assert_refused(info.value)


_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=300),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner, max_size=2)
    ),
    max_leaves=4,
)


@settings(max_examples=300, deadline=None)
@given(
    meta=st.one_of(
        st.just(None),
        st.just("absent"),
        st.lists(st.integers(-5, 5), max_size=1),
        st.fixed_dictionaries({}, optional={"principal": _ANY_JSON, "origin": _ANY_JSON}),
    ),
    proven=st.none() | st.sampled_from(["42", "u-7"]),
    vouched=st.sampled_from(["", "beds-app", "guest"]),
)
def test_the_proven_principal_and_vouched_origin_replace_only_a_valid_envelopes(
    meta: Any, proven: str | None, vouched: str
) -> None:
    """Replacing meta.principal and meta.origin never makes a malformed envelope valid, nor a
    valid one malformed: the same bodies are refused with or without it, and an accepted one
    carries the proven principal and the origin RabbitMQ vouched for."""
    envelope: dict[str, Any] = {"operation": "fetch", "template": "spew_post", "payload": {}}
    if meta != "absent":
        envelope["meta"] = meta
    body = orjson.dumps(envelope)
    try:
        as_sent = decode_request(body)
    except MalformedRequest:
        as_sent = None
    try:
        replaced = decode_request(body, principal=proven, origin=vouched)
    except MalformedRequest:
        replaced = None
    assert (as_sent is None) == (replaced is None)
    if replaced is not None:
        assert replaced.meta.principal == proven
        assert replaced.meta.origin == vouched
