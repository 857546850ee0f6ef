"""What the ``beds`` command tells a user: colours, TOML errors, "did you mean", no templates."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from loguru import logger

from beds.cli import cli
from beds.config import load_config
from beds.config.model import LogSettings
from beds.envelopes import Operation
from beds.errors import ConfigError, UnknownTemplate, ValidationFailed
from beds.factory import Factory
from beds.log import configure_logging
from beds.plugins import make_plugin_manager
from beds.templates import Template, validate_fetch, validate_write
from beds.testing import MemoryAdapter


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    yield
    logger.remove()
    logger.configure(extra={})
    logger.disable("beds")
    logging.basicConfig(handlers=[], force=True)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="beds")


# -- NO_COLOR ----------------------------------------------------------------------------------


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, where loguru colours by default."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("no_color", "coloured"), [(None, True), ("", True), ("1", False)])
def test_log_lines_are_coloured_on_a_terminal_unless_no_color(
    monkeypatch: pytest.MonkeyPatch, no_color: str | None, coloured: bool
) -> None:
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    configure_logging(LogSettings(level="INFO"))
    logger.warning("hello")
    logging.getLogger("aiormq").warning("from the standard library")
    output = terminal.getvalue()
    assert "hello" in output
    assert "from the standard library" in output
    assert ("\x1b[" in output) is coloured


def test_the_command_turns_click_colours_off_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    import click

    seen: list[bool | None] = []

    @click.command("probe")
    @click.pass_context
    def probe(ctx: click.Context) -> None:
        seen.append(ctx.color)
        click.echo(click.style("red", fg="red"), color=ctx.color)

    cli.add_command(probe)
    try:
        monkeypatch.setenv("NO_COLOR", "1")
        result = CliRunner().invoke(cli, ["probe"], color=True)
    finally:
        del cli.commands["probe"]
    assert seen == [False]
    assert result.output == "red\n"


def test_logs_of_one_shot_commands_have_no_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LogSettings(level="WARNING"), tracebacks=False)
    try:
        raise RuntimeError("deep inside a driver")
    except RuntimeError:
        logging.getLogger("driver").error("it broke", exc_info=True)
        logger.opt(exception=True).error("and here")
    err = capsys.readouterr().err
    assert "it broke" in err
    assert "and here" in err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 2


# -- TOML errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message", "notes"),
    [
        (
            'schema_version = 1\n[node]\nname = "a"\nenv = prod\n',
            "not valid TOML: Unexpected character: 'p' at line 4, column 7",
            ["4 | env = prod", "  |       ^"],
        ),
        (
            "schema_version = 1\n[node]\n\tname = =\n",
            "not valid TOML: Unexpected character: '=' at line 3, column 9",
            ["3 | \tname = =", "  | \t       ^"],
        ),
        (
            "schema_version = 1\nx = 1\nx = 2\n",
            # tomllib reports where the value ends, so the caret follows it.
            "not valid TOML: Cannot overwrite a value at line 3, column 6",
            ["3 | x = 2", "  |      ^"],
        ),
        (
            "schema_version = 1\n[roles\n",
            "not valid TOML: Expected ']' at the end of a table declaration at line 2, column 7",
            ["2 | [roles", "  |       ^"],
        ),
        (
            "schema_version = 1\nx = [1,\n",
            "not valid TOML: unexpected end of file at line 2, column 8",
            ["2 | x = [1,", "  |        ^"],
        ),
    ],
    ids=["value", "tab", "duplicate", "end-of-line", "end-of-file"],
)
def test_a_toml_syntax_error_shows_file_line_column_and_the_line(
    tmp_path: Path, text: str, message: str, notes: list[str]
) -> None:
    path = tmp_path / "beds.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value) == f"{message} (file {path})"
    assert info.value.file == str(path)
    assert info.value.__notes__ == notes


def test_the_command_prints_the_toml_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "beds.toml"
    path.write_text("schema_version = 1\n[amqp]\nurl = amqp://x\n", encoding="utf-8")
    result = invoke("check", "--config", str(path))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"beds: error: not valid TOML: Unexpected character: 'a' at line 3, column 7 (file {path})",
        "  3 | url = amqp://x",
        "    |       ^",
    ]


# -- did you mean ------------------------------------------------------------------------------


def unknown_template(name: str, templates: dict[str, Template]) -> list[str]:
    factory = Factory(templates, {"memory": MemoryAdapter(), "rel": MemoryAdapter("rel")})
    with pytest.raises(UnknownTemplate) as info:
        factory.resolve(name)
    return list(info.value.details)


def test_an_unknown_template_suggests_the_closest_served_one(
    spew_templates: dict[str, Template], demo_template: Template
) -> None:
    served = {**spew_templates, demo_template.name: demo_template}
    assert unknown_template("spew_pots", served) == [
        "template: spew_pots",
        "did you mean 'spew_post'?",
    ]
    assert unknown_template("demo_itme", served) == [
        "template: demo_itme",
        "did you mean 'demo_item'?",
    ]
    assert unknown_template("zzz", served) == ["template: zzz"]


def write_problems(template: Template, operation: Operation, payload: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationFailed) as info:
        validate_write(template, operation, payload)
    return list(info.value.details)


def fetch_problems(template: Template, payload: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationFailed) as info:
        validate_fetch(template, payload)
    return list(info.value.details)


def test_an_unknown_field_suggests_a_field_of_the_operation(demo_template: Template) -> None:
    payload = {"titel": "abc", "count": 3, "active": True, "prise": "1", "zzz": 1}
    assert write_problems(demo_template, Operation.CREATE, payload) == [
        "$.payload.prise: is not a field of this operation; did you mean 'price'?",
        "$.payload.titel: is not a field of this operation; did you mean 'title'?",
        "$.payload.title: is required",
        "$.payload.zzz: is not a field of this operation",
    ]
    # Only fields the operation takes are suggested: delete takes the key alone.
    assert write_problems(demo_template, Operation.DELETE, {"id": 1, "titel": "abc"}) == [
        "$.payload.titel: is not a field of this operation"
    ]


def test_the_example_domain_suggests_body(spew_templates: dict[str, Template]) -> None:
    post = spew_templates["spew_post"]
    assert write_problems(post, Operation.CREATE, {"author": "ann", "bdy": "x"}) == [
        "$.payload.bdy: is not a field of this operation; did you mean 'body'?",
        "$.payload.body: is required",
    ]


def test_an_unknown_query_or_fetch_key_suggests_the_closest(demo_template: Template) -> None:
    assert fetch_problems(demo_template, {"query": "by_titel", "params": {"title": "ab"}}) == [
        "$.payload.query: must be one of by_count, by_id, by_title, history, recent; "
        "did you mean 'by_title'?"
    ]
    assert fetch_problems(demo_template, {"parms": {}, "params": {"title": "ab"}}) == [
        "$.payload.parms: is not a fetch key (query, params, limit, cursor, consistency); "
        "did you mean 'params'?"
    ]
    assert fetch_problems(demo_template, {"params": {"titl": "ab", "title": "ab"}}) == [
        "$.payload.params.titl: is not a param of query 'by_title'; did you mean 'title'?"
    ]


def test_suggestions_are_deterministic(demo_template: Template) -> None:
    payload = {"cont": 1, "title": "abc", "count": 3, "active": True}
    first = write_problems(demo_template, Operation.CREATE, payload)
    again = write_problems(demo_template, Operation.CREATE, dict(reversed(payload.items())))
    assert (
        first
        == again
        == ["$.payload.cont: is not a field of this operation; did you mean 'count'?"]
    )


# -- no templates installed --------------------------------------------------------------------


class Connection:
    """Stands in for RabbitMQ: these checks fail or warn before anything is declared."""

    async def close(self) -> None:
        pass


@pytest.fixture
def no_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node whose plugins register no template, connected to a stand-in RabbitMQ."""

    async def connect_to(settings: object, **_: Any) -> Connection:
        return Connection()

    monkeypatch.setattr("beds.ipl.connect_to", connect_to)
    monkeypatch.setattr(
        "beds.ipl.make_plugin_manager", lambda **_: make_plugin_manager(load_entry_points=False)
    )
    # The stand-in has no accounts to log in with; the policy has its own tests (test_policy).
    monkeypatch.setattr("beds.ipl.findings", lambda config: [])


def config_in(tmp_path: Path, mode: str) -> Path:
    path = tmp_path / f"{mode}.toml"
    path.write_text(
        f'schema_version = 1\n[node]\nmode = "{mode}"\n[telemetry]\nenabled = false\n',
        encoding="utf-8",
    )
    return path


NO_TEMPLATES = (
    "templates: no templates are installed, so this node serves no requests: install a template "
    "package (docs/writing-a-domain.md), such as beds-templates-example"
)


@pytest.mark.usefixtures("no_templates")
def test_check_without_templates_warns_in_development(tmp_path: Path) -> None:
    result = invoke("check", "--config", str(config_in(tmp_path, "development")))
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert f"[WARN] {NO_TEMPLATES}" in lines
    assert not [line for line in lines if line.startswith("[FAIL]")]


@pytest.mark.usefixtures("no_templates")
def test_check_without_templates_fails_in_production(tmp_path: Path) -> None:
    result = invoke("check", "--config", str(config_in(tmp_path, "production")))
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines()[-1] == f"[FAIL] {NO_TEMPLATES}"


@pytest.mark.usefixtures("no_templates")
def test_run_without_templates_refuses_to_start_in_production(tmp_path: Path) -> None:
    result = invoke("run", "--config", str(config_in(tmp_path, "production")))
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[-1] == f"beds: error: start-up failed at {NO_TEMPLATES}"


def test_run_stopped_by_a_bug_exits_70_for_its_supervisor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beds.cli import run as run_module
    from beds.cli.common import EXIT_CRASHED

    async def crash(_config: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(run_module, "_serve", crash)
    result = invoke("run", "--config", str(config_in(tmp_path, "development")))
    assert result.exit_code == EXIT_CRASHED == 70, result.output
