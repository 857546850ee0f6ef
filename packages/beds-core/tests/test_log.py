"""The beds command's log lines: readable or JSON, each carrying the request's event id."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from loguru import logger

from beds.config.model import LogSettings
from beds.log import configure_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    yield
    logger.remove()
    logger.configure(extra={})
    logger.disable("beds")
    logging.basicConfig(handlers=[], force=True)


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


def test_json_lines_carry_the_event_id(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LogSettings(level="INFO", format="json"))
    logger.info("outside")
    with logger.contextualize(event_id="n1.dev.abc"):
        logger.warning("inside")
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert first["record"]["extra"]["event_id"] == ""
    assert second["record"]["extra"]["event_id"] == "n1.dev.abc"
    assert (second["record"]["level"]["name"], second["record"]["message"]) == ("WARNING", "inside")
