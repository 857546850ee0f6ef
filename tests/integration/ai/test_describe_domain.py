"""beds-ai with the other packages installed: the TLAs they use, the hook, the command.

The endpoint is beds-ai's fake (a loopback port, scripted answers): no test calls a model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from beds.generator import read_description
from beds.plugins import Hooks, make_plugin_manager
from beds_ai.cli import describe_domain
from beds_ai.plugin import installed_templates
from beds_ai.testing import FakeEndpoint, chat_completion

REPLIES = Path(__file__).resolve().parents[3] / "packages" / "beds-ai" / "tests" / "replies"


def _answer(name: str) -> dict[str, Any]:
    content = json.loads((REPLIES / f"{name}.json").read_text())["body"]["choices"][0]
    description: dict[str, Any] = json.loads(content["message"]["content"])
    return description


@pytest.fixture
def endpoint() -> Iterator[FakeEndpoint]:
    fake = FakeEndpoint()
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def env(endpoint: FakeEndpoint) -> dict[str, str]:
    return {
        "BEDS_AI_URL": endpoint.url,
        "BEDS_AI_MODEL": "fake-model",
        "BEDS_AI_KEY": "sk-integration-SECRET",
        "BEDS_AI_KEY_FILE": "",
        "BEDS_AI_RETRIES": "0",
    }


def test_the_installed_templates_are_the_registry_s() -> None:
    registry = Hooks(make_plugin_manager()).register_templates()
    installed = installed_templates()
    assert sorted(installed) == sorted(
        (t.name, t.tla, t.distribution) for t in registry.templates.values()
    )
    assert ("beds_user", "usr", "beds-identity") in installed
    assert ("spew_post", "spp", "beds-templates-example") in installed


def test_a_tla_an_installed_package_uses_is_refused_twice(
    endpoint: FakeEndpoint, env: dict[str, str], tmp_path: Path
) -> None:
    clash = _answer("valid")
    clash["entities"]["book"]["tla"] = "spp"
    endpoint.script(chat_completion(json.dumps(clash)), chat_completion(json.dumps(clash)))
    out = tmp_path / "description.toml"
    result = CliRunner().invoke(describe_domain, ["a library", "--out", str(out)], env=env)
    assert result.exit_code == 1
    assert "'spp' is the TLA of template 'spew_post' of beds-templates-example" in result.output
    assert "entities.book.tla" in result.output
    assert "AI answer 1" in result.output
    assert "AI answer 2" in result.output
    assert not out.exists()
    # The repair round told the model which TLA is taken.
    assert "spew_post" in endpoint.requests[1]["json"]["messages"][-1]["content"]


def test_a_clash_is_repaired_and_the_file_is_a_description(
    endpoint: FakeEndpoint, env: dict[str, str], tmp_path: Path
) -> None:
    clash = _answer("valid")
    clash["entities"]["member"]["tla"] = "usr"
    endpoint.script(
        chat_completion(json.dumps(clash)), chat_completion(json.dumps(_answer("valid")))
    )
    out = tmp_path / "description.toml"
    result = CliRunner().invoke(describe_domain, ["a library", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert [e.tla for e in read_description(str(out)).entities] == ["lbk", "lmb", "lln"]
    assert env["BEDS_AI_KEY"] not in result.output
