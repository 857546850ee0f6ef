"""describe_domain against the fake endpoint: every recorded answer, good, bad and hostile."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import attrs
import pytest
from loguru import logger

from beds.generator import description_schema, parse_description
from beds_ai.describe import MAX_TEXT, describe_domain
from beds_ai.errors import AiAnswerInvalid, AiError, AiUnavailable
from beds_ai.prompt import MAX_REPAIR_ECHO
from beds_ai.settings import AiSettings

TEXT = "A lending library: books with an ISBN and a title, members, and loans of books."


def _content(endpoint: Any, index: int) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = endpoint.requests[index]["json"]["messages"]
    return messages


def test_a_valid_answer_is_the_description(endpoint: Any, settings: AiSettings) -> None:
    endpoint.script("valid")
    described = describe_domain(TEXT, settings)
    assert described.domain.name == "library"
    assert [e.name for e in described.domain.entities] == ["book", "member", "loan"]
    # The TOML a reviewer reads is the description that was checked.
    assert parse_description(described.toml) == described.domain
    (request,) = endpoint.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == f"Bearer {settings.key}"
    body = request["json"]
    assert body["model"] == "fake-model"
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "beds_domain", "schema": description_schema(), "strict": True},
    }
    system, user = body["messages"]
    assert system["role"] == "system"
    assert '"title":"BEDS domain description"' in system["content"]
    assert user == {"role": "user", "content": TEXT}


def test_a_fenced_answer_is_read(endpoint: Any, settings: AiSettings) -> None:
    endpoint.script("valid_fenced")
    assert describe_domain(TEXT, settings).domain.name == "library"


@pytest.mark.parametrize(
    ("first", "problem"),
    [
        ("invalid_type", "entities.book.fields.title.type"),
        ("not_json", "is not JSON"),
        ("empty_content", "is empty"),
        ("hostile_sql", "is not a safe identifier"),
        ("reserved_word", "MariaDB reserved word"),
    ],
)
def test_one_refused_answer_is_repaired(
    endpoint: Any, settings: AiSettings, replies: Any, first: str, problem: str
) -> None:
    endpoint.script(first, "valid")
    assert describe_domain(TEXT, settings).domain.name == "library"
    assert len(endpoint.requests) == 2
    *_, refused, repair = _content(endpoint, 1)
    assert refused["role"] == "assistant"
    assert refused["content"] == (
        replies.load(first)["body"]["choices"][0]["message"]["content"] or ""
    )
    assert repair["role"] == "user"
    assert problem in repair["content"]


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("invalid_type", "must be one of str, int"),
        ("hostile_sql", "'title; DROP TABLE lbk_book; --' is not a safe identifier"),
    ],
)
def test_two_refused_answers_are_an_error(
    endpoint: Any, settings: AiSettings, answer: str, problem: str
) -> None:
    endpoint.script(answer, answer, "valid")
    with pytest.raises(AiAnswerInvalid) as caught:
        describe_domain(TEXT, settings)
    assert len(endpoint.requests) == 2  # one repair round, no more
    assert endpoint.unused == 1
    assert len(caught.value.problems) == 2
    assert all(problem in p for p in caught.value.problems)
    assert "AI answer 1" in str(caught.value)
    assert "AI answer 2" in str(caught.value)


def test_ten_thousand_fields_are_refused(endpoint: Any, settings: AiSettings, replies: Any) -> None:
    fields = {f"f{i}": {"type": "int"} for i in range(10_000)}
    huge = {
        "domain": {"name": "huge"},
        "entities": {"big": {"store": "rel", "tla": "big", "fields": fields}},
    }
    answer = replies.completion(json.dumps(huge, separators=(",", ":")))
    endpoint.script(answer, answer)
    with pytest.raises(AiAnswerInvalid) as caught:
        describe_domain(TEXT, settings)
    assert "entities.big.fields must declare at most 48 fields" in caught.value.problems[0]
    # The repair round does not send the whole huge answer back.
    refused = _content(endpoint, 1)[2]["content"]
    assert len(refused) <= MAX_REPAIR_ECHO + 10


def test_an_answer_larger_than_a_description_is_refused(
    endpoint: Any, settings: AiSettings, replies: Any
) -> None:
    answer = replies.completion('{"domain": {"name": "x", "description": "' + "a" * 300_000 + '"}}')
    endpoint.script(answer, "valid")
    assert describe_domain(TEXT, settings).domain.name == "library"
    assert "is larger than 262144 bytes" in _content(endpoint, 1)[-1]["content"]


def test_a_tla_an_installed_template_has_is_refused(endpoint: Any, settings: AiSettings) -> None:
    endpoint.script("tla_clash", "tla_clash")
    with pytest.raises(AiAnswerInvalid) as caught:
        describe_domain(TEXT, settings, installed=[("beds_user", "usr", "beds-identity")])
    assert caught.value.problems[0].startswith("AI answer 1: 'usr' is the TLA of template")
    assert "'beds_user' of beds-identity" in caught.value.problems[0]
    assert "entities.book.tla" in caught.value.problems[0]


def test_the_package_described_again_keeps_its_tla(endpoint: Any, settings: AiSettings) -> None:
    endpoint.script("valid")
    described = describe_domain(TEXT, settings, installed=[("library_book", "lbk", "beds-library")])
    assert described.domain.entities[0].tla == "lbk"


def test_a_server_error_is_tried_again(endpoint: Any, settings: AiSettings) -> None:
    endpoint.script("server_error", "rate_limited", "valid")
    assert describe_domain(TEXT, settings).domain.name == "library"
    assert len(endpoint.requests) == 3


def test_retries_are_bounded(endpoint: Any, settings: AiSettings) -> None:
    endpoint.script(*["server_error"] * 4)
    with pytest.raises(AiUnavailable) as caught:
        describe_domain(TEXT, settings)
    assert caught.value.status == 500
    assert "HTTP 500: The server had an error" in str(caught.value)
    assert "tried 3 times" in str(caught.value)
    assert len(endpoint.requests) == 3


def test_a_dropped_connection_is_tried_again(endpoint: Any, settings: AiSettings) -> None:
    endpoint.script({"drop": True}, "valid")
    assert describe_domain(TEXT, settings).domain.name == "library"
    assert len(endpoint.requests) == 2


def test_a_timeout_is_an_error_and_not_retried(endpoint: Any, settings: AiSettings) -> None:
    endpoint.script({"delay": 10}, "valid")
    started = time.monotonic()
    with pytest.raises(AiUnavailable, match=r"no answer within 0.3 s"):
        describe_domain(TEXT, attrs.evolve(settings, timeout=0.3))
    assert time.monotonic() - started < 5
    assert len(endpoint.requests) == 1


def test_an_endpoint_without_json_schema_gets_json_object(
    endpoint: Any, settings: AiSettings
) -> None:
    endpoint.script("schema_refused", "invalid_type", "valid")
    assert describe_domain(TEXT, settings).domain.name == "library"
    formats = [r["json"]["response_format"]["type"] for r in endpoint.requests]
    # Refused once: the repair round asks for json_object straight away.
    assert formats == ["json_schema", "json_object", "json_object"]
    # Without structured outputs the schema is still in the prompt.
    assert "propertyNames" in _content(endpoint, 1)[0]["content"]


def test_another_bad_request_names_the_endpoint_message_without_the_key(
    endpoint: Any, settings: AiSettings
) -> None:
    endpoint.script("schema_refused", "bad_request")
    with pytest.raises(AiUnavailable) as caught:
        describe_domain(TEXT, settings)
    message = str(caught.value)
    assert "HTTP 400: The model `nope` does not exist (key ***)" in message
    assert settings.key is not None
    assert settings.key not in message


def test_a_refused_key_is_never_shown(
    endpoint: Any, settings: AiSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, level="TRACE")
    try:
        endpoint.script("unauthorized")
        with pytest.raises(AiUnavailable) as caught:
            describe_domain(TEXT, settings)
    finally:
        logger.remove(sink)
    assert caught.value.status == 401
    assert "check BEDS_AI_KEY or BEDS_AI_KEY_FILE" in str(caught.value)
    assert lines  # the calls were logged…
    assert settings.key is not None
    captured = capsys.readouterr()
    for text in (str(caught.value), repr(caught.value), *lines, captured.out, captured.err):
        assert settings.key not in text  # …without the key
    assert settings.key not in repr(settings)


def test_an_answer_that_is_not_a_chat_completion(endpoint: Any, settings: AiSettings) -> None:
    endpoint.script("not_a_completion")
    with pytest.raises(AiUnavailable, match="not a chat completion"):
        describe_domain(TEXT, settings)


def test_an_oversized_body_is_not_read(endpoint: Any, settings: AiSettings) -> None:
    endpoint.script("valid")
    with pytest.raises(AiUnavailable, match="larger than 100 bytes"):
        describe_domain(TEXT, attrs.evolve(settings, max_answer_bytes=100))


def test_an_endpoint_that_cannot_be_reached(settings: AiSettings) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unreachable = attrs.evolve(settings, url=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(AiUnavailable, match=r"cannot connect \(ConnectError\) \(tried 3 times\)"):
        describe_domain(TEXT, unreachable)


def test_the_name_chosen_replaces_the_models(endpoint: Any, settings: AiSettings) -> None:
    endpoint.script("valid")
    described = describe_domain(TEXT, settings, name="lending")
    assert described.domain.name == "lending"
    assert described.data["domain"]["name"] == "lending"
    assert "The domain's name is 'lending'." in _content(endpoint, 0)[1]["content"]


@pytest.mark.parametrize(
    ("text", "name", "message"),
    [
        ("  ", None, "is empty"),
        ("x" * (MAX_TEXT + 1), None, f"longer than {MAX_TEXT}"),
        (TEXT, "select", "MariaDB reserved word"),
        (TEXT, "Drop Table", "not a safe identifier"),
    ],
)
def test_bad_input_is_refused_before_any_call(
    endpoint: Any, settings: AiSettings, text: str, name: str | None, message: str
) -> None:
    with pytest.raises(AiError, match=message):
        describe_domain(text, settings, name=name)
    assert endpoint.requests == []
