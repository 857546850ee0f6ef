"""Batch declarations: operations, routing, ``[batch]``, the node's limit, stored outcomes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import jsonschema
import orjson
import pytest
import tomlkit
from hypothesis import given
from hypothesis import strategies as st

from beds.config.loader import load_config
from beds.config.model import AmqpSettings, Config, FieldValueError
from beds.contract.asyncapi import asyncapi_document
from beds.dispatch.trace import store_object
from beds.envelopes import (
    BATCH_OPERATIONS,
    READ_OPERATIONS,
    WRITE_OPERATIONS,
    Operation,
    Request,
)
from beds.errors import (
    ConfigError,
    RequestError,
    TemplateError,
    WriteInDoubt,
    error_catalogue,
)
from beds.idempotency import decode_outcomes, encode_outcomes, repeat_outcomes, watch_repeats
from beds.namaste import CallContext
from beds.routing import operation_class, routing_key
from beds.templates import Template, parse_template


def test_each_batch_operation_runs_a_single_one_in_its_routing_class() -> None:
    assert BATCH_OPERATIONS == {
        Operation.CREATE_MANY: Operation.CREATE,
        Operation.UPDATE_MANY: Operation.UPDATE,
        Operation.DELETE_MANY: Operation.DELETE,
        Operation.FETCH_MANY: Operation.FETCH,
    }
    for batch, single in BATCH_OPERATIONS.items():
        assert operation_class(batch) == operation_class(single)
    assert routing_key("spew_post", Operation.CREATE_MANY) == "spew_post.write"
    assert routing_key("spew_post", Operation.FETCH_MANY) == "spew_post.read"
    assert Operation.FETCH_MANY in READ_OPERATIONS
    assert WRITE_OPERATIONS.isdisjoint(BATCH_OPERATIONS)  # "writes" stay the single ones


def parse(declaration: dict[str, Any]) -> Template:
    return parse_template(tomlkit.dumps(declaration), source="demo.toml")


def test_batch_table_defaults_and_values(demo_declaration: dict[str, Any]) -> None:
    assert parse(demo_declaration).batch.limit(500) == 500
    demo_declaration["batch"] = {"max_records": 200, "atomic": True}
    template = parse(demo_declaration)
    assert (template.batch.max_records, template.batch.atomic) == (200, True)
    assert (template.batch.limit(500), template.batch.limit(50)) == (200, 50)
    assert "batch" in template.needs()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"size": 3}, "batch.size is not a batch setting (max_records, atomic)"),
        ({"max_records": 0}, "batch.max_records must be an integer from 1 to 10000"),
        ({"max_records": 10_001}, "batch.max_records must be an integer from 1 to 10000"),
        ({"max_records": True}, "batch.max_records must be an integer from 1 to 10000"),
        ({"atomic": "yes"}, "batch.atomic must be true or false"),
    ],
)
def test_a_bad_batch_table_is_refused_naming_its_key(
    demo_declaration: dict[str, Any], table: dict[str, Any], message: str
) -> None:
    demo_declaration["batch"] = table
    with pytest.raises(TemplateError) as refused:
        parse(demo_declaration)
    assert message in str(refused.value)


def test_atomic_batches_need_writes(demo_declaration: dict[str, Any]) -> None:
    demo_declaration["operations"] = {}
    demo_declaration["capabilities"] = {}
    demo_declaration["batch"] = {"atomic": True}
    with pytest.raises(TemplateError, match=r"batch\.atomic is set on a template without writes"):
        parse(demo_declaration)


def test_batch_procedure_reaches_the_store_binding_and_names_the_db_event(
    demo_declaration: dict[str, Any],
) -> None:
    demo_declaration["operations"]["create"]["batch_procedure"] = "dmi_create_many"
    template = parse(demo_declaration)
    assert template.operations[Operation.CREATE].binding == {
        "procedure": "dmi_create",
        "batch_procedure": "dmi_create_many",
    }
    request = Request(operation=Operation.CREATE_MANY, template=template.name)
    assert store_object(template, request) == "dmi_create_many"
    assert store_object(template, request, batched=False) == "dmi_create"
    fetch = Request(operation=Operation.FETCH_MANY, template=template.name)
    assert store_object(template, fetch) == ""  # by_id binds no object


def test_the_node_limit_is_1_to_10000_and_500_by_default() -> None:
    assert AmqpSettings().max_batch_records == 500
    assert AmqpSettings(max_batch_records=10_000).max_batch_records == 10_000
    for bad in (0, 10_001):
        with pytest.raises(FieldValueError):
            AmqpSettings(max_batch_records=bad)


# -- stored outcomes of keyed batches ---------------------------------------------------------

wire_ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # adapters answer wire values
records = st.dictionaries(st.text(max_size=5), wire_ints | st.text(max_size=5), max_size=3)
errors = st.builds(
    lambda kind, message, details: kind(message, details=details),
    st.sampled_from(sorted(error_catalogue().values(), key=lambda kind: kind.CODE)),
    st.text(max_size=20),
    st.lists(st.text(max_size=10), max_size=3),
)


@given(st.lists(records | errors, max_size=8))
def test_outcomes_come_back_as_the_same_records_and_error_classes(
    outcomes: list[dict[str, Any] | RequestError],
) -> None:
    again = decode_outcomes(encode_outcomes(outcomes))
    assert len(again) == len(outcomes)
    for first, second in zip(outcomes, again, strict=True):
        if isinstance(first, RequestError):
            assert type(second) is type(first)
            assert isinstance(second, RequestError)
            assert (second.message, second.details) == (first.message, first.details)
        else:
            assert second == first


def test_a_repeat_gets_the_stored_outcomes_and_is_marked_a_repeat() -> None:
    ctx = CallContext(event_id="e", idempotency_key="k", fingerprint="f1")
    stored = encode_outcomes([{"id": 1}, WriteInDoubt("w", details=("d",))])
    with watch_repeats() as repeated:
        outcomes = repeat_outcomes(ctx, "f1", stored)
        assert repeated()
    assert outcomes[0] == {"id": 1}
    assert isinstance(outcomes[1], WriteInDoubt)
    with pytest.raises(RequestError, match="first used for another request"):
        repeat_outcomes(ctx, "f2", stored)
    with pytest.raises(WriteInDoubt):
        repeat_outcomes(attrs.evolve(ctx), "f1", None)


# -- the AsyncAPI document lists the batches ---------------------------------------------------

GOLDEN = Path(__file__).parent / "contract" / "v1"


def message_validator(document: dict[str, Any], message: str) -> jsonschema.Draft7Validator:
    schema = {**document["components"]["messages"][message]["payload"]}
    schema["components"] = document["components"]
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize("operation", ["create_many", "update_many", "delete_many", "fetch_many"])
def test_golden_batch_requests_fit_their_asyncapi_message(
    spew_templates: dict[str, Template], operation: str
) -> None:
    document = asyncapi_document(spew_templates, Config())
    request = orjson.loads((GOLDEN / "requests" / f"{operation}.json").read_bytes())
    validator = message_validator(document, f"spew_post.{operation}")
    assert list(validator.iter_errors(request)) == []
    too_many = {**request, "payload": {"records": [{}] * 501, "keys": [{}] * 501}}
    assert list(validator.iter_errors(too_many))


@pytest.mark.parametrize("operation", ["create_many", "fetch_many"])
def test_golden_batch_replies_fit_their_asyncapi_reply(
    spew_templates: dict[str, Template], operation: str
) -> None:
    document = asyncapi_document(spew_templates, Config())
    reply = orjson.loads((GOLDEN / "responses" / f"{operation}.json").read_bytes())
    validator = message_validator(document, f"spew_post.{operation}.reply")
    assert list(validator.iter_errors(reply)) == []
    assert list(validator.iter_errors({**reply, "status": 400}))


def test_a_config_file_over_the_limit_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "beds.toml"
    path.write_text("schema_version = 1\n[amqp]\nmax_batch_records = 20000\n", encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert "amqp.max_batch_records: must be at most 10000, got 20000" in str(refused.value)
