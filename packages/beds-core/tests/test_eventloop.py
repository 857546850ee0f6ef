"""Which event loop ``beds run`` serves on (BEDS_EVENT_LOOP)."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from beds.errors import ConfigError
from beds.eventloop import choose_event_loop, run

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


@pytest.mark.parametrize("value", ["", "auto", " AUTO "])
def test_auto_takes_uvloop_when_it_is_installed(value: str) -> None:
    expected = "uvloop" if HAS_UVLOOP else "asyncio"
    assert choose_event_loop({"BEDS_EVENT_LOOP": value}) == expected
    assert choose_event_loop({}) == expected


def test_asyncio_is_always_available() -> None:
    assert choose_event_loop({"BEDS_EVENT_LOOP": "asyncio"}) == "asyncio"


def test_uvloop_is_an_error_when_it_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"uvloop is not installed .*beds-core\[uvloop\]"):
        choose_event_loop({"BEDS_EVENT_LOOP": "uvloop"})
    assert choose_event_loop({"BEDS_EVENT_LOOP": "auto"}) == "asyncio"


def test_another_value_is_an_error() -> None:
    with pytest.raises(ConfigError, match="BEDS_EVENT_LOOP='tokio': use one of auto, uvloop"):
        choose_event_loop({"BEDS_EVENT_LOOP": "tokio"})


def test_run_uses_the_chosen_loop() -> None:
    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run(loop_module(), "asyncio").startswith("asyncio")
    if HAS_UVLOOP:
        assert run(loop_module(), "uvloop").startswith("uvloop")
