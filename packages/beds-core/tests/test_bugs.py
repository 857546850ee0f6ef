"""report_bug: one line per failure, the traceback once per failure site, at DEBUG."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from loguru import logger

from beds.bugs import report_bug


@pytest.fixture
def records() -> Iterator[list[tuple[str, str, bool]]]:
    seen: list[tuple[str, str, bool]] = []
    logger.enable("beds")
    sink = logger.add(
        lambda message: seen.append(
            (
                message.record["level"].name,
                message.record["message"],
                message.record["exception"] is not None,
            )
        ),
        level="DEBUG",
    )
    yield seen
    logger.remove(sink)
    logger.disable("beds")


def fail(text: str) -> None:
    raise ValueError(text)


def test_one_line_per_failure_and_one_traceback_per_site(
    records: list[tuple[str, str, bool]],
) -> None:
    for text in ("first", "second", "third"):
        try:
            fail(text)
        except ValueError as exc:
            report_bug(exc, "handling {} failed", "m1", event_id="e1")
    errors = [message for level, message, _ in records if level == "ERROR"]
    assert errors == [
        "handling m1 failed (ValueError: first)",
        "handling m1 failed (ValueError: second)",
        "handling m1 failed (ValueError: third)",
    ]
    traced = [level for level, _, has_trace in records if has_trace]
    assert traced == ["DEBUG"]  # once, for the one site
    try:
        raise KeyError("elsewhere")
    except KeyError as exc:
        report_bug(exc, "another site")
    assert sum(1 for _, _, has_trace in records if has_trace) == 2
