"""``beds http`` is a plugin command: found through ``beds.commands``; a broken one is one line."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from beds.cli import add_plugin_commands, cli


class FakeEntryPoint:
    def __init__(self, name: str, target: Any) -> None:
        self.name = name
        self.dist = None
        self._target = target

    def load(self) -> Any:
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


def test_beds_http_is_a_beds_command() -> None:
    assert "http" in cli.commands
    result = CliRunner().invoke(cli, ["--help"])
    assert "http" in result.output


def test_broken_plugin_commands_are_one_line_each(monkeypatch: pytest.MonkeyPatch) -> None:
    @click.command()
    def hello() -> None:
        """Say hello."""

    points = [
        FakeEntryPoint("hello", hello),
        FakeEntryPoint("broken", ImportError("no module named 'nowhere'")),
        FakeEntryPoint("notacommand", object()),
        FakeEntryPoint("run", hello),
    ]
    monkeypatch.setattr(metadata, "entry_points", lambda group: points)
    group = click.Group(commands={"run": click.Command("run")})
    problems = add_plugin_commands(group)
    assert set(group.commands) == {"run", "hello"}
    assert problems == [
        "beds: plugin command 'broken' of ? failed to load: "
        "ImportError(\"no module named 'nowhere'\")",
        "beds: plugin command 'notacommand' of ? is not a click command",
        "beds: plugin command 'run' of ? not added: the name is taken",
    ]
    assert all("\n" not in line for line in problems)


def test_beds_http_refuses_a_bad_http_table(tmp_path: Path) -> None:
    path = tmp_path / "beds.toml"
    path.write_text("schema_version = 1\n[http]\nport = -1\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["http", "--config", str(path)])
    assert result.exit_code == 2
    assert "http.port" in result.output
