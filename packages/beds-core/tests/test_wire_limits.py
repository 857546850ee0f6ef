"""The wire limits: every ``meta`` field and every AMQP property the node reads or echoes.

Anything over a limit is refused with ``BEDS-400`` naming the field's path and its limit,
deterministically, before anything executes; anything accepted can be sent back in a reply's
AMQP properties (short strings: at most 255 bytes of UTF-8) without failing to encode.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

import orjson
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pamqp import frame
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from beds.codec import decode_request
from beds.envelopes import (
    MAX_META_BYTES,
    TEMPLATE_NAME,
    EnvelopeLimitError,
    Operation,
    Request,
    RequestMeta,
)
from beds.errors import MalformedRequest
from beds.transport.frames import UNDECODABLE_HEADER
from beds.wire_limits import check_request_properties, safe_shortstr

META_TEXT = ("event_id", "parent_id", "correlation_id", "causation_id", "origin", "principal")
NOT_AN_ENVELOPE = "message body is not a valid Request envelope"
NOT_JSON = "message body is not valid JSON"


def body(meta: dict[str, Any] | None = None, template: Any = "spew_post") -> bytes:
    document: dict[str, Any] = {"operation": "create", "template": template, "payload": {}}
    if meta is not None:
        document["meta"] = meta
    return json.dumps(document, ensure_ascii=False).encode()  # integers over 64 bits too


def refused(raw: bytes) -> MalformedRequest:
    with pytest.raises(MalformedRequest) as caught:
        decode_request(raw)
    assert caught.value.CODE == "BEDS-400"
    return caught.value


def detail(raw: bytes) -> str:
    """The one detail of a refused body."""
    error = refused(raw)
    assert error.message == NOT_AN_ENVELOPE
    assert len(error.details) == 1, error.details
    return error.details[0]


def reply_header_encodes(properties: Basic.Properties) -> bool:
    """Whether pamqp can marshal a content header with these properties (what a reply needs)."""
    try:
        frame.marshal(ContentHeader(0, 2, properties), 1)
    except (TypeError, ValueError):
        return False
    return True


# -- meta text: event_id, parent_id, correlation_id, causation_id, origin, principal -----------


@pytest.mark.parametrize("field", META_TEXT)
@pytest.mark.parametrize(
    "value",
    [
        "",
        "a" * MAX_META_BYTES,
        "😀" * 63 + "abc",  # 255 bytes
        "é" * 127 + "a",  # 255 bytes
        "cli.dev.2b0e8f3c52e94a4f9a0c9d6ad1f0e7b4",
        " padded ",  # spaces are printable; only idempotency keys refuse them at the ends
        "ünïcödé ✓ 漢字",
    ],
    ids=["empty", "255-ascii", "255-emoji", "255-latin", "event-id", "spaces", "unicode"],
)
def test_meta_text_within_the_limits_is_accepted_and_fits_a_short_string(
    field: str, value: str
) -> None:
    request = decode_request(body({field: value}))
    assert getattr(request.meta, field) == value
    assert safe_shortstr(value) == value
    assert reply_header_encodes(Basic.Properties(message_id=value, correlation_id=value))


@pytest.mark.parametrize("field", META_TEXT)
@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("a" * (MAX_META_BYTES + 1), 256),
        ("😀" * 64, 256),  # 64 characters, 256 bytes
        ("é" * 128, 256),
        ("a" * 300, 300),
        ("o" * 64 * 1024, 65536),
    ],
    ids=["256-ascii", "256-emoji", "256-latin", "300-ascii", "64KiB"],
)
def test_meta_text_over_255_bytes_is_refused_naming_the_path_and_the_limit(
    field: str, value: str, size: int
) -> None:
    assert detail(body({field: value})) == (
        f"must be at most 255 bytes in UTF-8, got {size} @ $.meta.{field}"
    )


@pytest.mark.parametrize("field", META_TEXT)
@pytest.mark.parametrize(
    ("value", "code_point", "index"),
    [
        ("a\x00b", "0000", 1),
        ("line\nbreak", "000A", 4),
        ("tab\there", "0009", 3),
        ("\x1b[31mred", "001B", 0),
        ("del\x7f", "007F", 3),
        ("next\x85line", "0085", 4),
        ("\u2028", "2028", 0),
        ("zero\u200bwidth", "200B", 4),
        ("\ufeffbom", "FEFF", 0),
        ("👩\u200d💻", "200D", 1),  # an emoji sequence joined with ZWJ: a format character
        ("no\u00a0break", "00A0", 2),  # a space separator other than the ASCII space
        ("private\ue000", "E000", 7),
    ],
    ids=[
        "nul",
        "newline",
        "tab",
        "escape",
        "delete",
        "next-line",
        "line-separator",
        "zero-width-space",
        "bom",
        "zwj",
        "nbsp",
        "private-use",
    ],
)
def test_meta_text_that_is_not_printable_is_refused_naming_the_character(
    field: str, value: str, code_point: str, index: int
) -> None:
    assert detail(body({field: value})) == (
        "must be printable text (no control or format characters), "
        f"got U+{code_point} at index {index} @ $.meta.{field}"
    )


@pytest.mark.parametrize("field", [*META_TEXT, "idempotency_key"])
@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "a\\ud83d", "\\ude00b"])
def test_a_lone_surrogate_escape_in_json_text_is_refused_as_json(field: str, escape: str) -> None:
    meta = f'{{"{field}": "{escape}"}}'
    raw = f'{{"operation": "create", "template": "spew_post", "meta": {meta}}}'.encode()
    assert refused(raw).message == NOT_JSON


def test_surrogate_bytes_in_utf8_are_refused_as_json() -> None:
    raw = b'{"operation": "create", "template": "spew_post", "meta": {"origin": "\xed\xa0\x80"}}'
    assert refused(raw).message == NOT_JSON


def test_a_surrogate_pair_escape_is_one_character() -> None:
    raw = b'{"operation": "create", "template": "spew_post", "meta": {"origin": "\\ud83d\\ude00"}}'
    assert decode_request(raw).meta.origin == "😀"


@pytest.mark.parametrize("field", META_TEXT)
@pytest.mark.parametrize(
    ("value", "kind"),
    [(7, "integer"), (1.5, "number"), (True, "boolean"), ([], "array"), ({}, "object")],
)
def test_meta_text_of_another_json_type_is_refused(field: str, value: Any, kind: str) -> None:
    assert detail(body({field: value})) == f"must be a string, got {kind} @ $.meta.{field}"


@pytest.mark.parametrize("field", [name for name in META_TEXT if name != "principal"])
def test_null_is_refused_for_meta_text_but_not_for_principal(field: str) -> None:
    assert detail(body({field: None})) == f"must be a string, got null @ $.meta.{field}"
    assert decode_request(body({"principal": None})).meta.principal is None


def test_every_field_over_its_limit_is_named_at_once_in_a_stable_order() -> None:
    meta = {
        "event_id": "e" * 300,
        "parent_id": "p\x00",
        "depth": 65,
        "origin": "😀" * 64,
        "idempotency_key": " k",
        "deadline": 0,
        "principal": "\n",
    }
    error = refused(body(meta))
    assert error.details == (
        "must be a Unix time in seconds above 0 and below 1e+11, got 0.0 @ $.meta.deadline",
        "must be at most 255 bytes in UTF-8, got 256 @ $.meta.origin",
        "must be at most 255 bytes in UTF-8, got 300 @ $.meta.event_id",
        "must be in range [0:64], got 65 @ $.meta.depth",
        "must be printable text (no control or format characters), got U+0000 at index 1"
        " @ $.meta.parent_id",
        "must be printable text (no control or format characters), got U+000A at index 0"
        " @ $.meta.principal",
        "must not start or end with a space @ $.meta.idempotency_key",
    )
    again = refused(body(dict(reversed(meta.items()))))
    assert again.details == error.details  # the order of the JSON keys does not matter


@pytest.mark.parametrize(
    ("meta", "named"),
    [
        ({"trace": 1}, "trace"),
        ({"été": 1}, "été"),
        ({"a\x00b": 1, "z": 2}, "a\\x00b, z"),
        ({"k" * 70000: 1}, "k" * 64 + "… (70000 characters)"),
        (
            {f"k{i:02}": i for i in range(13)},
            ", ".join(f"k{i:02}" for i in range(10)) + ", and 3 more",
        ),
    ],
    ids=["plain", "unicode", "control", "64KiB", "many"],
)
def test_unknown_meta_keys_are_named_bounded_and_escaped(meta: dict[str, Any], named: str) -> None:
    assert detail(body(meta)) == f"extra fields found ({named}) @ $.meta"


# -- idempotency_key ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["k", "k" * 200, "é" * 127, "😀" * 63, "a key with inner spaces", "漢" * 85]
)
def test_idempotency_keys_within_the_limits_are_accepted(key: str) -> None:
    assert decode_request(body({"idempotency_key": key})).meta.idempotency_key == key


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        ("", "be 1 to 200 characters, got 0"),
        ("k" * 201, "be 1 to 200 characters, got 201"),
        ("é" * 128, "be at most 255 bytes in UTF-8, got 256"),
        ("😀" * 64, "be at most 255 bytes in UTF-8, got 256"),
        (" k", "not start or end with a space"),
        ("k ", "not start or end with a space"),
        (" ", "not start or end with a space"),
        (
            "k\x00",
            "be printable text (no control or format characters), got U+0000 at index 1",
        ),
        (
            "\tk",
            "be printable text (no control or format characters), got U+0009 at index 0",
        ),
    ],
    ids=["empty", "201-chars", "256-bytes", "emoji", "leading", "trailing", "space", "nul", "tab"],
)
def test_idempotency_keys_outside_the_limits_are_refused(key: str, rule: str) -> None:
    assert detail(body({"idempotency_key": key})) == f"must {rule} @ $.meta.idempotency_key"


# -- depth, deadline ---------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [0, 1, 64])
def test_depths_in_range_are_accepted(depth: int) -> None:
    assert decode_request(body({"depth": depth})).meta.depth == depth


@pytest.mark.parametrize(
    ("depth", "problem"),
    [
        (-1, "must be in range [0:64], got -1"),
        (65, "must be in range [0:64], got 65"),
        (2**63 - 1, f"must be in range [0:64], got {2**63 - 1}"),
        (2**64, "must be an integer, got number"),  # orjson reads integers over 64 bits as floats
        (1.0, "must be an integer, got number"),
        ("1", "must be an integer, got string"),
        (None, "must be an integer, got null"),
    ],
)
def test_depths_out_of_range_or_of_another_type_are_refused(depth: Any, problem: str) -> None:
    assert detail(body({"depth": depth})) == f"{problem} @ $.meta.depth"


@pytest.mark.parametrize("deadline", [None, 1, 1795435756.5, 1e11 - 1])
def test_deadlines_in_range_are_accepted(deadline: float | None) -> None:
    assert decode_request(body({"deadline": deadline})).meta.deadline == deadline


@pytest.mark.parametrize(
    ("deadline", "got"), [(0, "0.0"), (-1, "-1.0"), (1e11, "100000000000.0"), (1e300, "1e+300")]
)
def test_deadlines_out_of_range_are_refused(deadline: float, got: str) -> None:
    assert detail(body({"deadline": deadline})) == (
        f"must be a Unix time in seconds above 0 and below 1e+11, got {got} @ $.meta.deadline"
    )


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"])
def test_non_finite_deadlines_cannot_even_be_parsed(number: bytes) -> None:
    raw = b'{"operation": "create", "template": "spew_post", "meta": {"deadline": %s}}' % number
    assert refused(raw).message == NOT_JSON


@pytest.mark.parametrize(("value", "kind"), [("soon", "string"), (True, "boolean"), ([], "array")])
def test_deadlines_of_another_type_are_refused(value: Any, kind: str) -> None:
    assert detail(body({"deadline": value})) == f"must be a number, got {kind} @ $.meta.deadline"


# -- template, payload -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "accepted"),
    [
        ("spew_post", True),
        ("beds", True),
        ("a", True),
        ("a" * 63, True),
        ("a1_b2", True),
        ("a" * 64, False),
        ("Spew_Post", False),
        ("spew.post", False),  # a dot would change the routing key's shape
        ("spew*", False),
        ("spew#", False),
        ("", False),
        ("9lives", False),
        ("_private", False),
        ("spew post", False),
        ("spéw", False),
        ("spew\x00", False),
    ],
)
def test_template_names(template: str, accepted: bool) -> None:
    if accepted:
        request = decode_request(body(template=template))
        assert request.template == template
        assert safe_shortstr(f"{template}.write") is not None  # the routing key fits
    else:
        assert detail(body(template=template)) == (
            "must be a template name: lower_snake_case, 1 to 63 of a-z, 0-9 and '_', starting "
            "with a letter @ $.template"
        )


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ([1], "must be an object"),
        ("x", "must be an object"),
        (None, "must be an object"),
        (7, "must be an object"),
    ],
)
def test_payload_must_be_an_object(payload: Any, problem: str) -> None:
    raw = orjson.dumps({"operation": "create", "template": "spew_post", "payload": payload})
    assert detail(raw) == f"{problem} @ $.payload"


# -- built from Python ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"event_id": "e" * 256}, "event_id"),
        ({"parent_id": "\ud800"}, "parent_id"),  # a lone surrogate is possible from Python only
        ({"principal": "a\x00"}, "principal"),
        ({"deadline": float("nan")}, "deadline"),
        ({"deadline": float("inf")}, "deadline"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"depth": 65}, "depth"),
    ],
)
def test_envelopes_built_in_python_are_held_to_the_same_limits(
    values: dict[str, Any], field: str
) -> None:
    with pytest.raises(EnvelopeLimitError, match=rf"^RequestMeta\.{field} should ") as caught:
        RequestMeta(**values)
    assert isinstance(caught.value, ValueError)
    assert [name for name, _ in caught.value.problems] == [field]


def test_an_envelope_built_in_python_names_every_problem() -> None:
    with pytest.raises(EnvelopeLimitError) as caught:
        RequestMeta(event_id="\ud800", depth=65)
    assert str(caught.value) == (
        "RequestMeta.event_id should be printable text (no control or format characters), got "
        "U+D800 at index 0. RequestMeta.depth should be in range [0:64], got 65."
    )
    with pytest.raises(EnvelopeLimitError, match=r"^Request\.template should be a template name"):
        Request(operation=Operation.FETCH, template="Spew")
    copy = pickle.loads(pickle.dumps(caught.value))  # errors cross process boundaries intact
    assert (str(copy), copy.problems) == (str(caught.value), caught.value.problems)


# -- any meta at all -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and infinities too: json.dumps writes them, orjson refuses them
    | st.text(max_size=64),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=8,
)
units = st.sampled_from(["x", "é", "😀", "漢", "\x00", "\n", "\ud800", " ", "\u200d", "a😀"])
sized_text = st.builds(
    lambda unit, count, tail: unit * count + tail,
    units,
    st.sampled_from([0, 1, 63, 64, 127, 128, 199, 200, 201, 254, 255, 256, 1024, 65536 // 4]),
    st.text(max_size=3),
)
hostile_text = st.one_of(
    st.text(max_size=300),
    st.text(st.characters(codec="utf-8"), min_size=200, max_size=600),
    st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=8),
    sized_text,
    st.integers(min_value=0, max_value=65536).map(lambda n: "x" * n),
    st.sampled_from(["", " ", "\x00", "😀" * 64, "😀" * 63, "a\u0085b", "ok", "\ud800"]),
)
printable = st.text(st.characters(categories=["L", "M", "N", "P", "S"]) | st.just(" "))
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {  # values that often pass, so that accepted
    **dict.fromkeys(META_TEXT, printable.filter(lambda text: len(text.encode()) <= 255)),
    "idempotency_key": st.none()
    | printable.filter(lambda key: 0 < len(key) <= 200 and key.strip() == key),
    "deadline": st.none() | st.floats(min_value=1, max_value=1e11 - 1),
    "depth": st.integers(min_value=0, max_value=64),
}
"""For each field, values that often pass, so that accepted requests get checked too."""


@st.composite
def meta_values(draw: st.DrawFn) -> dict[str, Any]:
    """A ``meta`` object: each field absent, plausible or hostile; sometimes an unknown key."""
    meta: dict[str, Any] = {}
    for field, plausible in PLAUSIBLE.items():
        kind = draw(st.integers(min_value=0, max_value=7))
        if kind == 0:
            meta[field] = draw(hostile_text | json_values)
        elif kind > 3:
            meta[field] = draw(plausible)
    if draw(st.integers(min_value=0, max_value=19)) == 0:
        meta["extra"] = draw(json_values)
    return meta


templates = st.integers(min_value=0, max_value=3).flatmap(
    lambda kind: (
        hostile_text | json_values if kind == 0 else st.from_regex(TEMPLATE_NAME, fullmatch=True)
    )
)


def as_json(document: dict[str, Any], ascii_only: bool) -> bytes:
    """JSON text of ``document``, lone surrogates as ``\\udXXX`` escapes and NaN as ``NaN``."""
    if ascii_only:
        return json.dumps(document).encode()
    return json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")


@settings(max_examples=500, deadline=None)
@given(meta=meta_values(), template=templates, ascii_only=st.booleans())
def test_any_meta_is_accepted_within_the_limits_or_refused_deterministically(
    meta: dict[str, Any], template: Any, ascii_only: bool
) -> None:
    document = {"operation": "create", "template": template, "payload": {}, "meta": meta}
    raw = as_json(document, ascii_only)
    outcomes: list[Request | tuple[str, tuple[str, ...]]] = []
    for _ in range(2):
        try:
            # Over the default 1 MiB, BEDS-413 would hide the meta limits under test.
            outcomes.append(decode_request(raw, max_bytes=64 * 1024 * 1024))
        except MalformedRequest as error:  # any other exception fails the test
            outcomes.append((error.message, error.details))
    assert outcomes[0] == outcomes[1]  # deterministic: the same input, the same answer
    request = outcomes[0]
    event("accepted" if isinstance(request, Request) else "refused")
    if not isinstance(request, Request):
        message, details = request
        assert details, message
        for line in details:  # each detail is bounded: it names a path, never echoes a value
            assert len(line) < 400, line
        return
    # Whatever was accepted can be echoed in AMQP properties and headers, and encoded again.
    echoed = {field: getattr(request.meta, field) for field in META_TEXT}
    echoed["idempotency_key"] = request.meta.idempotency_key
    echoed["routing_key"] = f"{request.template}.write"
    for value in echoed.values():
        assert value is None or (safe_shortstr(value) == value and value.isprintable())
    assert reply_header_encodes(
        Basic.Properties(
            message_id=request.meta.event_id,
            correlation_id=request.meta.correlation_id,
            headers={name: value for name, value in echoed.items() if value is not None},
        )
    )


@settings(max_examples=200, deadline=None)
@given(
    field=st.sampled_from(META_TEXT),
    text=st.text(st.characters(exclude_categories=["Cs"]), max_size=300) | sized_text,
)
def test_meta_text_is_accepted_exactly_when_it_is_printable_and_fits_255_bytes(
    field: str, text: str
) -> None:
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        raw = as_json({"operation": "fetch", "template": "t", "meta": {field: text}}, True)
        assert refused(raw).message == NOT_JSON  # a lone surrogate
        return
    raw = body({field: text})
    if len(encoded) <= MAX_META_BYTES and text.isprintable():
        assert getattr(decode_request(raw).meta, field) == text
    else:
        assert detail(raw).endswith(f" @ $.meta.{field}")


# -- AMQP properties -----------------------------------------------------------------------


def properties(**values: Any) -> Basic.Properties:
    return Basic.Properties(**{"reply_to": "amq.rabbitmq.reply-to", **values})


def test_properties_within_the_limits_pass() -> None:
    check_request_properties(
        properties(
            correlation_id="c" * 255,
            content_type="application/json",
            message_id="😀" * 63,
            expiration="1000",
            headers={"x-beds-deliveries": 2, "x-beds-routing-key": "spew_post.write"},
        )
    )


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"reply_to": None}, "no reply_to"),
        ({"reply_to": ""}, "no reply_to"),
        ({"reply_to": "q" * 256}, "reply_to: must be UTF-8 text of at most 255 bytes"),
        ({"reply_to": "queue\nname"}, "reply_to: must not contain control characters"),
        ({"correlation_id": "c" * 256}, "correlation_id: must be UTF-8 text of at most 255"),
        ({"correlation_id": "\udcff\udcfe"}, "correlation_id"),  # bytes that were not UTF-8
        ({"correlation_id": "a\x00"}, "correlation_id: must not contain control characters"),
        ({"message_id": "😀" * 64}, "message_id: must be UTF-8 text of at most 255 bytes"),
        ({"expiration": "1\x00"}, "expiration: must not contain control characters"),
        ({"content_type": "a" * 256}, "content_type: must be UTF-8 text of at most 255 bytes"),
        ({"headers": {"x-beds-deliveries": "2"}}, "x-beds-deliveries: must be a positive"),
        ({"headers": {"x-beds-deliveries": 0}}, "x-beds-deliveries: must be a positive"),
        ({"headers": {"x-beds-deliveries": True}}, "x-beds-deliveries: must be a positive"),
        ({"headers": {"x-beds-routing-key": b"spew_post.write"}}, "x-beds-routing-key"),
        ({"headers": {"x-beds-routing-key": "k" * 256}}, "x-beds-routing-key"),
        ({"headers": {UNDECODABLE_HEADER: "UnicodeDecodeError: …"}}, "do not decode"),
    ],
)
def test_properties_over_their_limits_are_refused_by_name(
    values: dict[str, Any], named: str
) -> None:
    with pytest.raises(MalformedRequest) as caught:
        check_request_properties(properties(**values))
    assert caught.value.CODE == "BEDS-400"
    assert named in caught.value.message + " ".join(caught.value.details)


def test_every_property_over_its_limit_is_named() -> None:
    with pytest.raises(MalformedRequest) as caught:
        check_request_properties(
            properties(
                correlation_id="c" * 256, message_id="m\n", headers={"x-beds-deliveries": -1}
            )
        )
    assert caught.value.details == (
        "correlation_id: must be UTF-8 text of at most 255 bytes",
        "message_id: must not contain control characters",
        "headers.x-beds-deliveries: must be a positive integer",
    )


shortstr_candidates = st.one_of(
    st.none(), st.text(max_size=300), sized_text, st.sampled_from(["\udcff", "a" * 255])
)


@settings(max_examples=300, deadline=None)
@given(
    reply_to=shortstr_candidates,
    correlation_id=shortstr_candidates,
    message_id=shortstr_candidates,
    expiration=shortstr_candidates,
)
def test_accepted_properties_can_be_sent_back(
    reply_to: str | None, correlation_id: str | None, message_id: str | None, expiration: Any
) -> None:
    given_properties = Basic.Properties(
        reply_to=reply_to,
        correlation_id=correlation_id,
        message_id=message_id,
        expiration=expiration,
    )
    outcomes: list[tuple[str, tuple[str, ...]] | None] = []
    for _ in range(2):
        try:
            check_request_properties(given_properties)
            outcomes.append(None)
        except MalformedRequest as error:
            outcomes.append((error.message, error.details))
    assert outcomes[0] == outcomes[1]
    if outcomes[0] is None:
        assert reply_header_encodes(
            Basic.Properties(correlation_id=correlation_id, message_id=message_id)
        )
        assert reply_to
        assert safe_shortstr(reply_to) == reply_to


@given(st.text(max_size=300) | st.binary(max_size=300) | st.integers() | st.none() | sized_text)
def test_safe_shortstr_only_returns_what_amqp_can_carry(value: Any) -> None:
    safe = safe_shortstr(value)
    if safe is not None:
        assert safe is value
        assert len(safe.encode("utf-8")) <= 255
        assert reply_header_encodes(Basic.Properties(message_id=safe))
    elif isinstance(value, str):
        assert len(value.encode("utf-8", "surrogatepass")) > 255 or any(
            0xD800 <= ord(char) <= 0xDFFF for char in value
        )


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ("", True),
        ("a" * 255, True),
        ("a" * 256, False),
        ("😀" * 63 + "abc", True),
        ("😀" * 64, False),
        ("\ud800", False),
        (b"bytes", False),
        (255, False),
        (None, False),
    ],
)
def test_safe_shortstr_at_and_over_the_limit(value: Any, safe: bool) -> None:
    if safe:
        assert safe_shortstr(value) is value
    else:
        assert safe_shortstr(value) is None
