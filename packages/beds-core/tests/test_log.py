"""The beds command's log lines: readable or JSON, each carrying the request's event id."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from loguru import logger

from beds.config.model import LogSettings
from beds.log import DIAGNOSE_VARIABLE, JSON_KEYS, configure_logging

SECRET = "".join(["hunter", "2-", "s3cret"])
"""A password-like value, built so that no source line (shown in tracebacks) holds it."""


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(DIAGNOSE_VARIABLE, raising=False)
    monkeypatch.delenv("LOGURU_DIAGNOSE", raising=False)
    yield
    logger.remove()
    logger.configure(extra={})
    logger.disable("beds")
    logging.basicConfig(handlers=[], force=True)


def log_in(settings: LogSettings, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """What ``settings`` writes on stderr for a warning from a stdlib logger."""
    configure_logging(settings)
    logging.getLogger("aiormq.connection").warning("connection lost: %s", "reset")
    return capsys.readouterr().err.splitlines()


def connect(password: str) -> None:
    raise ConnectionRefusedError("login refused")


def log_a_failed_login() -> None:
    password = SECRET
    try:
        connect(password)
    except ConnectionRefusedError:
        logger.exception("login failed")


def test_console_lines_show_the_event_id_inside_requests(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(LogSettings(level="INFO"))
    logger.info("outside")
    with logger.contextualize(event_id="n1.dev.abc"):
        logger.info("inside")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith(" outside")
    assert "[" not in lines[0]
    assert lines[1].endswith(" [n1.dev.abc] inside")


def test_stdlib_records_show_their_own_logger_name(capsys: pytest.CaptureFixture[str]) -> None:
    (line,) = log_in(LogSettings(level="INFO"), capsys)
    assert " aiormq.connection connection lost: reset" in line
    assert " logging " not in line


def test_stdlib_records_in_json_carry_their_logger_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    (line,) = log_in(LogSettings(level="INFO", format="json"), capsys)
    record = json.loads(line)
    assert (record["logger"], record["level"]) == ("aiormq.connection", "WARNING")
    assert record["message"] == "connection lost: reset"


def test_json_lines_are_flat_with_the_documented_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(LogSettings(level="INFO", format="json"), node="app1")
    logger.info("outside")
    with logger.contextualize(event_id="n1.dev.abc", template="spew_post"):
        logger.warning("inside {}", "a request")
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    for record in (first, second):
        assert isinstance(record, dict)
        assert set(record) <= set(JSON_KEYS)
        assert all(isinstance(value, str) for value in record.values())  # one level only
        assert record["time"].endswith("Z")
        assert record["node"] == "app1"
        assert record["logger"] == __name__
    assert list(first) == ["time", "level", "logger", "message", "event_id", "node"]
    assert (first["level"], first["message"], first["event_id"]) == ("INFO", "outside", "")
    assert second == {
        "time": second["time"],
        "level": "WARNING",
        "logger": __name__,
        "message": "inside a request",
        "event_id": "n1.dev.abc",
        "node": "app1",
        "template": "spew_post",
    }


def test_json_lines_carry_the_traceback_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LogSettings(level="INFO", format="json"))
    log_a_failed_login()
    (line,) = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert record["message"] == "login failed"
    assert record["exception"].startswith("Traceback (most recent call last):")
    assert record["exception"].endswith("ConnectionRefusedError: login refused")
    assert SECRET not in line


def test_tracebacks_show_no_variable_values_by_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(LogSettings(level="INFO"))
    log_a_failed_login()
    err = capsys.readouterr().err
    assert "ConnectionRefusedError: login refused" in err
    assert "connect(password)" in err
    assert SECRET not in err


def test_diagnose_is_opt_in_for_development(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DIAGNOSE_VARIABLE, "1")
    configure_logging(LogSettings(level="INFO"))
    log_a_failed_login()
    assert SECRET in capsys.readouterr().err  # the check above would see a leak
    configure_logging(LogSettings(level="INFO"), diagnose=False)
    log_a_failed_login()
    assert SECRET not in capsys.readouterr().err
