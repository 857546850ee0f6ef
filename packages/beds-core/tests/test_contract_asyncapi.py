"""The AsyncAPI document and the JSON Schemas of beds.contract, against the official schema.

The official AsyncAPI 3.0.0 JSON Schema is vendored (``contract_schemas/``, Apache-2.0) and
read offline: a ``$ref`` it cannot resolve locally fails instead of fetching.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import tomlkit
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from beds.config.model import AmqpSettings, Config
from beds.contract import asyncapi_document, field_schema, record_schema
from beds.contract.schemas import fetch_payload_schema, write_payload_schema
from beds.dispatch.live import RECORD_CHANGED, RECORDS_CHANGED, record_changed
from beds.envelopes import Operation, Request
from beds.errors import TemplateError, ValidationFailed, error_catalogue
from beds.templates import Template, parse_template, validate_fetch, validate_write
from beds.templates.model import FieldSpec, FieldType
from beds.transport.control_event import ControlEvent, encode_event

HERE = Path(__file__).parent
ASYNCAPI_SCHEMA = orjson.loads((HERE / "contract_schemas" / "asyncapi-3.0.0.json").read_bytes())
VALIDATOR = jsonschema.Draft7Validator(ASYNCAPI_SCHEMA)
GOLDEN = HERE / "contract" / "v1"
CONFIG = Config(amqp=AmqpSettings(url="amqps://ann:s3cret-pw@rabbit.example:5671/beds%2Fqa"))


def official_errors(document: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
        for e in VALIDATOR.iter_errors(document)
    ]


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), ref
        assert part in node, f"{ref}: no {part!r}"
        node = node[part]
    return node


def check_document(document: dict[str, Any]) -> None:
    """Valid against the official schema, every $ref resolves, operations fit their channels."""
    assert official_errors(document) == []
    for ref in refs(document):
        resolve(document, ref)
    for name, operation in document["operations"].items():
        channel = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel + "/messages/"), name
        if operation["action"] == "receive":  # an event (record.changed): nothing to answer
            assert "reply" not in operation, name
            continue
        for message in operation["reply"]["messages"]:
            assert message["$ref"].startswith("#/channels/reply/messages/"), name
    orjson.dumps(document)  # JSON-ready: no tuples of tuples, no datetimes


def payload_validator(document: dict[str, Any], message: str) -> jsonschema.Draft7Validator:
    """A validator of one message's payload, its $refs resolved in the document."""
    schema = {**document["components"]["messages"][message]["payload"]}
    schema["components"] = document["components"]
    return jsonschema.Draft7Validator(schema)


# -- the document ---------------------------------------------------------------------------------


def test_the_spew_templates_give_a_valid_document(spew_templates: dict[str, Template]) -> None:
    document = asyncapi_document(spew_templates, CONFIG)
    check_document(document)
    assert document["asyncapi"] == "3.0.0"
    channel = document["channels"]["spew_post.write"]
    assert channel["address"] == "spew_post.write"
    assert channel["bindings"]["amqp"]["exchange"] == {
        "name": "beds.events",
        "type": "topic",
        "durable": True,
        "autoDelete": False,
        "vhost": "beds/qa",
    }
    assert set(channel["messages"]) == {
        "create",
        "update",
        "delete",
        "create_many",
        "update_many",
        "delete_many",
    }
    assert "fetch_many" in document["channels"]["spew_post.read"]["messages"]
    create = document["operations"]["spew_post.create"]
    assert create["action"] == "send"
    assert create["bindings"]["amqp"]["mandatory"] is True
    assert create["reply"]["address"]["location"] == "$message.header#/reply_to"
    assert "spew_post.fetch.by_author" in document["operations"]
    assert "beds.ping" in document["operations"]
    assert "beds_ticket.ticket" in document["operations"]


def test_live_templates_give_a_record_changed_channel_on_the_live_exchange(
    spew_templates: dict[str, Template],
) -> None:
    document = asyncapi_document(spew_templates, CONFIG)
    channel = document["channels"][RECORD_CHANGED]
    assert channel["bindings"]["amqp"]["exchange"]["name"] == "beds.control.live"
    assert document["operations"][RECORD_CHANGED]["action"] == "receive"
    live = sorted(name for name, t in spew_templates.items() if t.capabilities.live)
    assert "spew_post" in live
    payload = payload_validator(document, RECORD_CHANGED)
    post = spew_templates["spew_post"]
    request = Request(
        operation=Operation.CREATE, template="spew_post", payload={"body": "hi", "author": "ann"}
    )
    data = record_changed(post, request, {"id": 41}, principal="ann", trace_id="n.dev.x")
    event = orjson.loads(encode_event(ControlEvent(kind=RECORD_CHANGED, data=data)))
    assert list(payload.iter_errors(event)) == []  # what a node publishes fits the document
    assert list(payload.iter_errors({**event, "data": {**data, "template": "nope"}}))
    packed = payload_validator(document, RECORDS_CHANGED)
    batch = orjson.loads(encode_event(ControlEvent(kind=RECORDS_CHANGED, data={"events": [data]})))
    assert list(packed.iter_errors(batch)) == []
    assert list(packed.iter_errors({**batch, "data": {"events": [{**data, "key": 1}]}}))
    assert document["channels"][RECORDS_CHANGED]["bindings"]["amqp"]["exchange"]["name"] == (
        CONFIG.amqp.live_exchange
    )
    # Without a live template there is no such channel.
    quiet = {name: t for name, t in spew_templates.items() if not t.capabilities.live}
    quiet_channels = asyncapi_document(quiet, CONFIG)["channels"]
    assert RECORD_CHANGED not in quiet_channels
    assert RECORDS_CHANGED not in quiet_channels


def test_the_server_has_no_credentials(spew_templates: dict[str, Template]) -> None:
    document = asyncapi_document(spew_templates, CONFIG)
    assert document["servers"]["rabbitmq"] == {
        "host": "rabbit.example:5671",
        "protocol": "amqps",
        "protocolVersion": "0.9.1",
        "pathname": "/beds/qa",
        "title": "RabbitMQ",
        "description": document["servers"]["rabbitmq"]["description"],
        "security": [{"$ref": "#/components/securitySchemes/amqp_user"}],
    }
    text = orjson.dumps(document).decode()
    assert "s3cret-pw" not in text
    assert "ann@" not in text


def test_the_document_is_the_same_every_time(spew_templates: dict[str, Template]) -> None:
    first = orjson.dumps(asyncapi_document(spew_templates, CONFIG))
    reordered = dict(reversed(list(spew_templates.items())))
    assert orjson.dumps(asyncapi_document(reordered, CONFIG)) == first


def test_the_error_codes_are_the_catalogue(spew_templates: dict[str, Template]) -> None:
    document = asyncapi_document(spew_templates, CONFIG)
    assert document["components"]["schemas"]["ErrorCode"]["enum"] == list(error_catalogue())


@pytest.mark.parametrize("path", sorted((GOLDEN / "requests").glob("*.json")), ids=lambda p: p.name)
def test_golden_requests_fit_the_request_envelope(
    path: Path, spew_templates: dict[str, Template]
) -> None:
    document = asyncapi_document(spew_templates, CONFIG)
    schema = {"$ref": "#/components/schemas/Request", "components": document["components"]}
    jsonschema.Draft7Validator(schema).validate(orjson.loads(path.read_bytes()))


@pytest.mark.parametrize(
    "path", sorted((GOLDEN / "responses").glob("*.json")), ids=lambda p: p.name
)
def test_golden_replies_fit_a_reply_message(
    path: Path, spew_templates: dict[str, Template]
) -> None:
    document = asyncapi_document(spew_templates, CONFIG)
    reply = orjson.loads(path.read_bytes())
    name = "ErrorResponse" if path.name.startswith("error-") else "Response"
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    jsonschema.Draft7Validator(schema).validate(reply)


def test_a_request_envelope_with_an_unknown_key_is_refused(
    spew_templates: dict[str, Template],
) -> None:
    document = asyncapi_document(spew_templates, CONFIG)
    validator = payload_validator(document, "spew_post.create")
    good = {"operation": "create", "template": "spew_post", "payload": {"body": "hi"}}
    assert list(validator.iter_errors(good)) == []
    assert list(validator.iter_errors({**good, "trace": 1}))
    assert list(validator.iter_errors({**good, "template": "spew_like"}))
    assert list(validator.iter_errors({**good, "meta": {"depth": 65}}))


# -- field schemas agree with the node's validation ----------------------------------------------


def test_field_schemas_by_type() -> None:
    text = FieldSpec(
        name="t", type=FieldType.STR, min_length=1, max_length=5, pattern=re.compile("[a-z]+")
    )
    assert field_schema(text) == {
        "type": "string",
        "minLength": 1,
        "maxLength": 5,
        "pattern": "^(?:[a-z]+)$",
    }
    number = FieldSpec(name="n", type=FieldType.INT, minimum=0.0, maximum=9.5, nullable=True)
    assert field_schema(number) == {"type": ["integer", "null"], "minimum": 0, "maximum": 9.5}
    assert field_schema(FieldSpec(name="b", type=FieldType.BOOL)) == {"type": "boolean"}
    assert field_schema(FieldSpec(name="j", type=FieldType.JSON))["type"] == [
        "object",
        "array",
        "string",
        "number",
        "boolean",
    ]
    when = field_schema(FieldSpec(name="d", type=FieldType.DATETIME))
    assert (when["type"], when["format"]) == ("string", "date-time")
    assert field_schema(FieldSpec(name="m", type=FieldType.DECIMAL))["type"] == [
        "string",
        "integer",
    ]


def test_a_record_never_shows_a_secret_field(demo_declaration: dict[str, Any]) -> None:
    demo_declaration["fields"]["hash"] = {
        "type": "str",
        "secret": True,
        "required": False,
        "nullable": True,
    }
    demo_declaration["operations"]["create"]["params"].append("hash")
    template = parse_template(tomlkit.dumps(demo_declaration), source="secret.toml")
    schema = record_schema(template)
    assert "hash" not in schema["properties"]
    assert "title" in schema["properties"]
    # A request may still send it: the create payload names every param.
    assert "hash" in write_payload_schema(template, Operation.CREATE)["properties"]


# JSON Schema counts 2.0 as an integer; on the wire it is a number, which an int field refuses.
# So the float junk has a fraction (a client sends 2, not 2.0).
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
TITLES = st.one_of(st.from_regex(r"[a-z]{1,11}", fullmatch=True), st.text(max_size=12))


def _node_accepts(template: Template, operation: Operation, payload: dict[str, Any]) -> bool:
    try:
        validate_write(template, operation, payload)
    except ValidationFailed:
        return False
    return True


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    title=st.one_of(TITLES, JUNK),
    count=st.one_of(st.integers(-3, 13), JUNK),
    active=st.one_of(st.booleans(), JUNK),
    ratio=st.one_of(st.floats(-1, 2), JUNK),
    absent=st.sets(st.sampled_from(["title", "count", "active", "ratio"])),
    extra=st.booleans(),
)
def test_create_schema_accepts_exactly_what_the_node_accepts(
    demo_template: Template,
    title: Any,
    count: Any,
    active: Any,
    ratio: Any,
    absent: set[str],
    extra: bool,
) -> None:
    # Trailing newlines: JSON Schema's "$" is ECMA-262's end of text, Python's re.search lets
    # one "\n" through; the node uses fullmatch. Clients validate with ECMA semantics.
    assume(not (isinstance(title, str) and title.endswith("\n")))
    payload = {"title": title, "count": count, "active": active, "ratio": ratio}
    payload = {k: v for k, v in payload.items() if k not in absent}
    if extra:
        payload["nope"] = 1
    schema = write_payload_schema(demo_template, Operation.CREATE)
    schema_ok = jsonschema.Draft7Validator(schema).is_valid(payload)
    assert schema_ok == _node_accepts(demo_template, Operation.CREATE, payload), payload


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    keys=st.sets(st.sampled_from(["id", "title", "count", "active"])),
    title=st.one_of(TITLES, JUNK),
    identifier=st.one_of(st.integers(1, 5), JUNK),
)
def test_update_schema_accepts_exactly_what_the_node_accepts(
    demo_template: Template, keys: set[str], title: Any, identifier: Any
) -> None:
    assume(not (isinstance(title, str) and title.endswith("\n")))
    full = {"id": identifier, "title": title, "count": 3, "active": False}
    payload = {k: v for k, v in full.items() if k in keys}
    schema = write_payload_schema(demo_template, Operation.UPDATE)
    schema_ok = jsonschema.Draft7Validator(schema).is_valid(payload)
    assert schema_ok == _node_accepts(demo_template, Operation.UPDATE, payload), payload


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    query=st.sampled_from(["by_count", "by_title", "by_id"]),
    value=st.one_of(st.integers(-2, 12), TITLES, JUNK),
    limit=st.one_of(st.none(), st.integers(-1, 25), JUNK),
    name_it=st.booleans(),
)
def test_fetch_schema_accepts_exactly_what_the_node_accepts(
    demo_template: Template, query: str, value: Any, limit: Any, name_it: bool
) -> None:
    assume(not (isinstance(value, str) and value.endswith("\n")))
    spec = demo_template.queries[query]
    payload: dict[str, Any] = {"params": {spec.params[0]: value}}
    if name_it or query != demo_template.default_query:
        payload["query"] = query
    if limit is not None:
        payload["limit"] = limit
    schema_ok = jsonschema.Draft7Validator(fetch_payload_schema(demo_template, spec)).is_valid(
        payload
    )
    try:
        validate_fetch(demo_template, payload)
        node_ok = True
    except ValidationFailed:
        node_ok = False
    assert schema_ok == node_ok, payload


# -- generated templates --------------------------------------------------------------------------

NAMES = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True).filter(
    lambda n: n not in {"id", "version"}
)
PATTERNS = st.sampled_from(["[a-z]+", "[A-Z][a-z]*", r"\d{1,4}", "(?P<x>ab)+", "[a-z_]{1,20}"])


@st.composite
def fields(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from([t.value for t in FieldType]))
    field: dict[str, Any] = {"type": kind}
    if draw(st.booleans()):
        field["nullable"] = True
        field["required"] = draw(st.booleans())  # optional needs nullable (the loader's rule)
    if kind == "str":
        low = draw(st.integers(1, 5))
        if draw(st.booleans()):
            field["min_length"] = low
        if draw(st.booleans()):
            field["max_length"] = low + draw(st.integers(0, 50))
        if draw(st.booleans()):
            field["pattern"] = draw(PATTERNS)
    elif kind in ("int", "float"):
        low = draw(st.integers(-100, 100))
        if draw(st.booleans()):
            field["minimum"] = low
        if draw(st.booleans()):
            field["maximum"] = low + draw(st.integers(0, 1000))
    if draw(st.booleans()):
        field["description"] = draw(st.text(max_size=20))
    return field


@st.composite
def declarations(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(NAMES, min_size=1, max_size=6, unique=True))
    declared = {name: draw(fields()) for name in names}
    plain = [n for n in names if declared[n]["type"] != "json"]
    declaration: dict[str, Any] = {
        "name": "gen_" + draw(NAMES),
        "store": "memory",
        "tla": "gen",
        "key": ["id"],
        "fields": {"id": {"type": "int", "generated": True}, **declared},
        "operations": {
            "create": {"params": draw(st.lists(st.sampled_from(names), unique=True, min_size=1))},
        },
    }
    if draw(st.booleans()):
        declaration["operations"]["update"] = {"params": ["id", *names]}
    if draw(st.booleans()):
        declaration["operations"]["delete"] = {"params": ["id"]}
    queries: dict[str, Any] = {"by_id": {"params": ["id"], "max_limit": 1}}
    filtered = draw(st.lists(st.sampled_from(plain), unique=True, max_size=2)) if plain else []
    for index, name in enumerate(filtered):
        op = draw(st.sampled_from(["eq", "gte", "in"]))
        queries[f"q{index}"] = {
            "params": [f"p{index}"],
            "where": {f"p{index}": {"field": name, "op": op}},
            "order_by": draw(st.sampled_from([[], ["id"], ["-id"]])),
            "max_limit": draw(st.integers(1, 500)),
        }
    declaration["queries"] = queries
    declaration["default_query"] = draw(st.sampled_from(sorted(queries)))
    if draw(st.booleans()):
        declaration["capabilities"] = {"journal": True}
    return declaration


@settings(max_examples=60, deadline=None)
@given(declarations())
def test_generated_templates_give_valid_documents(declaration: dict[str, Any]) -> None:
    try:
        template = parse_template(tomlkit.dumps(declaration), source="gen.toml")
    except TemplateError:
        assume(False)
        raise
    document = asyncapi_document({template.name: template}, Config())
    check_document(document)
    create = document["operations"][f"{template.name}.create"]
    assert create["channel"] == {"$ref": f"#/channels/{template.name}.write"}
    reads = {f"{template.name}.fetch.{q}" for q in template.queries}
    assert reads <= set(document["operations"])
