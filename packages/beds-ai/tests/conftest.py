"""The fake endpoint (:mod:`beds_ai.testing`) replaying the recorded answers in ``replies/``.

``replies/*.json`` are recorded answers: ``status``, optional ``headers`` and the ``body`` the
endpoint sent (a chat completion, or an error), with a ``note`` saying what each one is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from beds_ai.settings import AiSettings
from beds_ai.testing import FakeEndpoint, chat_completion

REPLIES = Path(__file__).parent / "replies"
KEY = "sk-test-0123456789abcdefSECRET"


def reply(name: str) -> dict[str, Any]:
    """A recorded reply by file name (without ``.json``)."""
    data: dict[str, Any] = json.loads((REPLIES / f"{name}.json").read_text(encoding="utf-8"))
    return data


class Endpoint(FakeEndpoint):
    """The fake endpoint, scripted with reply file names too."""

    def script(self, *steps: str | dict[str, Any]) -> None:
        super().script(*(reply(s) if isinstance(s, str) else s for s in steps))


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    # A delayed answer (a timeout test) is the valid one, should the client still read it.
    fake = Endpoint(delayed=reply("valid"))
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def settings(endpoint: FakeEndpoint) -> AiSettings:
    """Settings for the fake endpoint: short timeout and backoff so failures are quick."""
    return AiSettings(
        url=endpoint.url, model="fake-model", key=KEY, timeout=5.0, retries=2, backoff=0.01
    )


@pytest.fixture
def replies() -> Any:
    """``replies.load(name)`` and ``replies.completion(content)`` for tests (no import path)."""

    class Replies:
        load = staticmethod(reply)
        completion = staticmethod(chat_completion)
        key = KEY

    return Replies
