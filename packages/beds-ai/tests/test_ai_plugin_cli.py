"""The beds_describe_domain hook and ``beds describe-domain``, against the fake endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from beds.errors import ConfigError
from beds.generator import read_description
from beds.plugins import make_plugin_manager
from beds_ai import plugin
from beds_ai.cli import describe_domain

TEXT = "A lending library: books, members and loans."


@pytest.fixture
def env(endpoint: Any, replies: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "BEDS_AI_URL": endpoint.url,
        "BEDS_AI_MODEL": "fake-model",
        "BEDS_AI_KEY": replies.key,
        "BEDS_AI_RETRIES": "0",
    }
    for name in ("BEDS_AI_URL", "BEDS_AI_MODEL", "BEDS_AI_KEY", "BEDS_AI_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    return values


def test_the_plugin_is_found_through_its_entry_point(
    endpoint: Any, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    endpoint.script("valid")
    pm = make_plugin_manager(strict=False)
    assert pm.get_plugin("ai") is plugin
    answer = pm.hook.beds_describe_domain(text=TEXT)
    assert answer["domain"]["name"] == "library"


def test_unconfigured_the_plugin_does_not_answer(env: dict[str, str]) -> None:
    assert plugin.beds_describe_domain(text=TEXT) is None


def test_a_bad_variable_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEDS_AI_URL", "gopher://h.test/")
    monkeypatch.setenv("BEDS_AI_MODEL", "m")
    with pytest.raises(ConfigError, match="BEDS_AI_URL"):
        plugin.beds_describe_domain(text=TEXT)


def test_the_command_writes_the_description_to_review(
    endpoint: Any, env: dict[str, str], tmp_path: Path
) -> None:
    endpoint.script("invalid_type", "valid")
    out = tmp_path / "description.toml"
    result = CliRunner().invoke(
        describe_domain, [TEXT, "--name", "lending", "--out", str(out)], env=env
    )
    assert result.exit_code == 0, result.output
    domain = read_description(str(out))
    assert domain.name == "lending"
    assert "beds new-domain lending --from" in result.output
    assert env["BEDS_AI_KEY"] not in result.output
    # A second run does not replace the reviewed file unless told to.
    again = CliRunner().invoke(describe_domain, [TEXT, "--out", str(out)], env=env)
    assert again.exit_code == 2
    assert "exists; pass --force" in again.output
    assert len(endpoint.requests) == 2


def test_the_command_prints_the_description_and_reads_stdin(
    endpoint: Any, env: dict[str, str]
) -> None:
    endpoint.script("valid")
    result = CliRunner().invoke(describe_domain, ["-"], input=TEXT, env=env)
    assert result.exit_code == 0, result.output
    assert result.output.startswith('[domain]\nname = "library"')
    assert endpoint.requests[0]["json"]["messages"][1]["content"] == TEXT


def test_refused_answers_exit_1_and_write_nothing(
    endpoint: Any, env: dict[str, str], tmp_path: Path
) -> None:
    endpoint.script("hostile_sql", "hostile_sql")
    out = tmp_path / "description.toml"
    result = CliRunner().invoke(describe_domain, [TEXT, "--out", str(out)], env=env)
    assert result.exit_code == 1
    assert "is not a safe identifier" in result.output
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_endpoint_exits_1(endpoint: Any, env: dict[str, str]) -> None:
    endpoint.script("server_error")
    result = CliRunner().invoke(describe_domain, [TEXT], env=env)
    assert result.exit_code == 1
    assert "beds: error:" in result.output
    assert "HTTP 500" in result.output


@pytest.mark.parametrize(
    ("args", "extra", "message"),
    [
        ([TEXT], {"BEDS_AI_URL": ""}, "no plugin describes domains"),
        ([TEXT], {"BEDS_AI_MODEL": ""}, "BEDS_AI_MODEL is required"),
        ([TEXT, "--name", "from"], {}, "--name 'from' is a MariaDB reserved word"),
    ],
)
def test_bad_usage_exits_2(
    endpoint: Any, env: dict[str, str], args: list[str], extra: dict[str, str], message: str
) -> None:
    result = CliRunner().invoke(describe_domain, args, env={**env, **extra})
    assert result.exit_code == 2
    assert message in result.output
    assert endpoint.requests == []


def test_the_hook_takes_the_first_description() -> None:
    from beds import hookimpl

    class Declines:
        @hookimpl
        def beds_describe_domain(self, text: str) -> None:
            return None

    class Answers:
        @hookimpl
        def beds_describe_domain(self, text: str) -> dict[str, Any]:
            return {"domain": {"name": text}}

    class Late:
        @hookimpl(tryfirst=True)
        def beds_describe_domain(self, text: str) -> None:
            return None

    pm = make_plugin_manager(load_entry_points=False)
    for name, implementation in (
        ("answers", Answers()),
        ("declines", Declines()),
        ("late", Late()),
    ):
        pm.register(implementation, name=name)
    # firstresult: one answer, not a list; plugins that decline are passed over.
    assert pm.hook.beds_describe_domain(text="notes") == {"domain": {"name": "notes"}}


@pytest.mark.parametrize("answer", ["y", "n"])
def test_generate_runs_the_generator_only_on_a_yes(
    endpoint: Any, env: dict[str, str], tmp_path: Path, answer: str
) -> None:
    endpoint.script("valid")
    out = tmp_path / "description.toml"
    package = tmp_path / "beds-library"
    result = CliRunner().invoke(
        describe_domain,
        [TEXT, "--out", str(out), "--generate", "--package-dir", str(package)],
        input=f"{answer}\n",
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") in result.output  # shown before the question
    assert "Generate the package of 'library'" in result.output
    if answer == "y":
        assert (package / "pyproject.toml").is_file()
        assert (package / "beds-domain.lock.json").is_file()
    else:
        assert not package.exists()
        assert "later: beds new-domain library --from" in result.output


def test_generate_needs_out(endpoint: Any, env: dict[str, str]) -> None:
    result = CliRunner().invoke(describe_domain, [TEXT, "--generate"], env=env)
    assert result.exit_code == 2
    assert "--generate needs --out FILE" in result.output
    assert endpoint.requests == []


def test_terminal_escapes_in_an_answer_are_not_printed(
    endpoint: Any, env: dict[str, str], replies: Any
) -> None:
    hostile = '{"domain": {"name": "x"}, "entities": {"a\\u001b[2Jb": {}}}'
    endpoint.script(replies.completion(hostile), replies.completion(hostile))
    result = CliRunner().invoke(describe_domain, [TEXT], env=env)
    assert result.exit_code == 1
    assert "\x1b" not in result.output
    assert "a\\x1b[2Jb" in result.output
