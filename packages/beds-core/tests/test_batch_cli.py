"""``beds load``: JSON Lines in, one result line per input line out, in order; exit 0 or 1."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result
from loguru import logger

from beds.cli import cli
from beds.cli.load import read_lines
from beds.client import BatchResult
from beds.envelopes import ErrorBody, Operation


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Commands configure loguru on the runner's stderr: take that sink away afterwards."""
    yield
    logger.remove()
    logger.configure(extra={})
    logger.disable("beds")
    logging.basicConfig(handlers=[], force=True)


class FakeClient:
    """Answers like a node: records with ``"bad"`` fail (BEDS-422), others get an id."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def stream_many(
        self,
        template: str,
        operation: Operation,
        items: Iterable[dict[str, Any]],
        **options: Any,
    ) -> AsyncIterator[list[BatchResult]]:
        records = list(items)
        self.calls.append({"template": template, "operation": operation, **options})
        chunk = options["chunk"]
        for start in range(0, len(records), chunk):
            yield [
                BatchResult(
                    index=index,
                    ok=False,
                    status=422,
                    error=ErrorBody(code="BEDS-422", message="bad", details=("$.records[0].x",)),
                )
                if "bad" in record
                else BatchResult(index=index, ok=True, status=201, data={"id": index + 1})
                for index, record in enumerate(records[start : start + chunk], start=start)
            ]


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    fake = FakeClient()
    monkeypatch.setattr("beds.cli.common.make_client", lambda *args, **kwargs: fake)
    return fake


def load(tmp_path: Path, text: bytes, *args: str) -> Result:
    config = tmp_path / "beds.toml"
    config.write_text("schema_version = 1\n", encoding="utf-8")
    return CliRunner().invoke(
        cli, ["load", *args, "--config", str(config), "--quiet"], input=text, prog_name="beds"
    )


def lines_of(result: Result) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in result.stdout.splitlines()]


def test_every_line_succeeding_prints_one_result_each_and_exits_0(
    tmp_path: Path, client: FakeClient
) -> None:
    result = load(tmp_path, b'{"body": "a"}\n\n{"body": "b"}\n{"body": "c"}\n', "spew_post")
    assert result.exit_code == 0, result.output
    assert lines_of(result) == [
        {"line": 1, "ok": True, "status": 201, "data": {"id": 1}},
        {"line": 3, "ok": True, "status": 201, "data": {"id": 2}},
        {"line": 4, "ok": True, "status": 201, "data": {"id": 3}},
    ]
    assert "3 of 3 lines succeeded, 0 failed" in result.stderr
    [call] = client.calls
    assert (call["operation"], call["chunk"], call["in_flight"]) == (Operation.CREATE_MANY, 500, 4)


def test_bad_lines_are_reported_by_number_skipped_and_fail_the_run(
    tmp_path: Path, client: FakeClient
) -> None:
    text = b'{"id": 1}\nnot json\n[1]\n{"id": 2, "bad": true}\n{"id": 3}\n'
    result = load(tmp_path, text, "spew_post", "delete", "--chunk", "2")
    assert result.exit_code == 1
    out = lines_of(result)
    assert [(o["line"], o["ok"], o["status"]) for o in out] == [
        (1, True, 201),
        (2, False, 400),
        (3, False, 400),
        (4, False, 422),
        (5, True, 201),
    ]
    assert out[1]["error"]["message"].startswith("line 2: not valid JSON")
    assert out[2]["error"]["message"] == "line 3: must be a JSON object, got array"
    assert "beds: line 2: not valid JSON" in result.stderr
    assert "2 of 5 lines succeeded, 3 failed" in result.stderr
    assert client.calls[0]["operation"] is Operation.DELETE_MANY


def test_keys_and_options_reach_the_client(tmp_path: Path, client: FakeClient) -> None:
    result = load(
        tmp_path,
        b'{"id": 1}\n',
        "spew_post",
        "fetch",
        "--idempotency-key",
        "load-1",
        "--consistency",
        "secondary",
        "--in-flight",
        "2",
    )
    assert result.exit_code == 0, result.output
    [call] = client.calls
    assert call["idempotency_key"] == "load-1"
    assert call["extra"] == {"consistency": "secondary"}
    assert call["in_flight"] == 2


def test_only_bad_lines_send_nothing(tmp_path: Path, client: FakeClient) -> None:
    result = load(tmp_path, b"nope\n", "spew_post")
    assert result.exit_code == 1
    assert [o["line"] for o in lines_of(result)] == [1]
    assert client.calls == []


def test_read_lines_numbers_lines_from_one_and_skips_blank_ones() -> None:
    assert read_lines([b'{"a": 1}\n', b"  \n", b"3\n"]) == [
        (1, {"a": 1}, ""),
        (3, None, "must be a JSON object, got integer"),
    ]
