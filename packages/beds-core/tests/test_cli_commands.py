"""The ``beds`` command without services: layout, ``--json``, ``--version``, completion, exit codes.

Commands that load plugins get an inline plugin manager (``beds.ipl.make_plugin_manager`` is
replaced), so these tests do not depend on what else is installed. The end-to-end checks against
RabbitMQ and the stores are in ``tests/e2e/test_cli.py``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pluggy
import pytest
from click.testing import CliRunner, Result
from loguru import logger

from beds import hookimpl
from beds.cli import cli
from beds.config.model import Config
from beds.errors import ConfigError, StoreUnavailable
from beds.namaste import SchemaFile, StoreSettings
from beds.node import BedsNode, Check
from beds.plugins import make_plugin_manager
from beds.registry import AdapterRegistry, TemplateRegistry
from beds.templates import Template
from beds.testing import MemoryAdapter

CLI_PACKAGE = Path(__file__).parents[1] / "src" / "beds" / "cli"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Commands configure loguru on the runner's stderr: take that sink away afterwards."""
    yield
    logger.remove()
    logger.configure(extra={})
    logger.disable("beds")
    logging.basicConfig(handlers=[], force=True)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "beds.toml"
    path.write_text("schema_version = 1\n", encoding="utf-8")
    return path


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="beds", env=env)


def with_plugin(monkeypatch: pytest.MonkeyPatch, plugin: object) -> pluggy.PluginManager:
    """Make the node load exactly ``plugin`` (no entry points)."""
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(plugin, name="inline")
    monkeypatch.setattr("beds.ipl.make_plugin_manager", lambda **_: pm)
    monkeypatch.setattr("beds.plugins.make_plugin_manager", lambda **_: pm)
    return pm


class DemoDomain:
    """The demo template on a store whose adapter ``factory`` builds, with one schema file."""

    def __init__(self, factory: Callable[[StoreSettings], Any], template: Template) -> None:
        self.factory = factory
        self.template = template

    @hookimpl
    def beds_register_adapters(self, registry: AdapterRegistry) -> None:
        registry.add(store="memory", factory=self.factory)

    @hookimpl
    def beds_register_templates(self, registry: TemplateRegistry) -> None:
        registry.add(self.template)
        registry.schema["memory"] = [SchemaFile(name="demo/schema/memory/001.sql", text="")]


# -- the package -----------------------------------------------------------------------------


def test_every_cli_module_is_under_350_lines() -> None:
    sizes = {
        path.name: len(path.read_text(encoding="utf-8").splitlines())
        for path in CLI_PACKAGE.glob("*.py")
    }
    assert {"__init__.py", "common.py", "run.py", "check.py", "call.py"} <= set(sizes)
    assert {name: size for name, size in sizes.items() if size > 350} == {}


def test_the_console_script_and_python_m_run_the_same_command() -> None:
    from importlib import metadata

    [script] = [ep for ep in metadata.entry_points(group="console_scripts") if ep.name == "beds"]
    assert script.value == "beds.cli:main"
    result = subprocess.run(
        [sys.executable, "-m", "beds", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: beds [OPTIONS] COMMAND [ARGS]...")


# -- --json ----------------------------------------------------------------------------------


def _commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        found[f"{prefix}{name}"] = command
        if isinstance(command, click.Group):
            found |= _commands(command, f"{prefix}{name} ")
    return found


def test_every_command_that_prints_data_takes_json() -> None:
    with_json = {
        path
        for path, command in _commands(cli).items()
        if any("--json" in param.opts for param in command.params)
    }
    assert with_json == {
        "check",
        "dlq list",
        "journal",
        "lineage",
        "plugins",
        "schema status",
        "status",
        "templates",
        "user list",
        "whoami",
    }


def test_check_json(monkeypatch: pytest.MonkeyPatch, config_file: Path) -> None:
    checks = [
        Check(name="config", status="ok", detail=str(config_file)),
        Check(name="rabbitmq", status="ok"),
    ]

    async def check(self: BedsNode) -> list[Check]:
        return checks

    monkeypatch.setattr(BedsNode, "check", check)
    result = invoke("check", "--config", str(config_file), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"name": "config", "status": "ok", "detail": str(config_file)},
        {"name": "rabbitmq", "status": "ok", "detail": ""},
    ]


def test_plugins_json(
    monkeypatch: pytest.MonkeyPatch, config_file: Path, demo_template: Template
) -> None:
    with_plugin(monkeypatch, DemoDomain(MemoryAdapter.from_settings, demo_template))
    result = invoke("plugins", "--config", str(config_file), "--json")
    assert result.exit_code == 0, result.output
    [plugin] = json.loads(result.stdout)
    assert plugin["name"] == "inline"
    assert plugin["hooks"] == ["beds_register_adapters", "beds_register_templates"]
    assert set(plugin) == {"name", "distribution", "version", "hooks"}


def test_templates_json(
    monkeypatch: pytest.MonkeyPatch, config_file: Path, demo_template: Template
) -> None:
    with_plugin(monkeypatch, DemoDomain(MemoryAdapter.from_settings, demo_template))
    result = invoke("templates", "--config", str(config_file), "--json")
    assert result.exit_code == 0, result.output
    [listed] = json.loads(result.stdout)
    assert {k: listed[k] for k in ("name", "store", "tla", "distribution", "source", "key")} == {
        "name": "demo_item",
        "store": "memory",
        "tla": "dmi",
        "distribution": "",
        "source": "demo.toml",
        "key": ["id"],
    }
    assert listed["capabilities"] == {
        "audit": True,
        "journal": True,
        "locking": False,
        "cache": False,
        "consistency": "primary",
        "live": False,
    }
    assert listed["queries"]["recent"] == {
        "params": ["since"],
        "where": {"since": {"field": "created_at", "op": "gte"}},
        "order_by": ["-created_at", "id"],
        "pageable": True,
        "max_limit": 10,
    }
    assert listed["queries"]["history"]["params"] == ["id"]  # the journal's
    assert listed["operations"]["delete"] == {"params": ["id"], "returns": []}


def test_status_json(monkeypatch: pytest.MonkeyPatch) -> None:
    document = {"node": {"name": "n1"}, "state": "ready"}
    monkeypatch.setattr("beds.telemetry.status.fetch_status", lambda url, timeout=5.0: document)
    result = invoke("status", "--url", "http://h:1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == document


def test_dlq_list_json(monkeypatch: pytest.MonkeyPatch, config_file: Path) -> None:
    letter = SimpleNamespace(to_json=lambda: {"message_id": "m1", "routing_key": "x.read"})

    class Queue:
        queue = "beds.dev.dead"

        def __init__(self, config: Config) -> None:
            pass

        async def __aenter__(self) -> Queue:
            return self

        async def __aexit__(self, *exc: object) -> None:
            pass

        async def depth(self) -> int:
            return 3

        async def peek(self, limit: int) -> list[Any]:
            assert limit == 1
            return [letter]

    monkeypatch.setattr("beds.dlq.DeadLetterQueue", Queue)
    result = invoke("dlq", "list", "--config", str(config_file), "--limit", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "queue": "beds.dev.dead",
        "depth": 3,
        "messages": [{"message_id": "m1", "routing_key": "x.read"}],
    }


# -- --version and completion ----------------------------------------------------------------


def test_version_lists_core_and_every_plugin_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    def dist(name: str, version: str) -> SimpleNamespace:
        return SimpleNamespace(name=name, version=version)

    def entry_points(group: str) -> list[SimpleNamespace]:
        assert group == "beds"
        return [
            SimpleNamespace(name="spew", dist=dist("beds-templates-example", "0.3.0")),
            SimpleNamespace(name="rec", dist=dist("beds-rec", "0.2.0")),
        ]

    monkeypatch.setattr("beds.cli.metadata.entry_points", entry_points)
    result = invoke("--version")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"beds, version {metadata.version('beds-core')}",
        "plugins:",
        "  rec   beds-rec 0.2.0",
        "  spew  beds-templates-example 0.3.0",
    ]
    monkeypatch.setattr("beds.cli.metadata.entry_points", lambda group: [])
    assert invoke("--version").stdout.splitlines()[1:] == ["plugins: none installed"]


def test_version_of_this_installation() -> None:
    from importlib import metadata

    lines = invoke("--version").stdout.splitlines()
    for ep in metadata.entry_points(group="beds"):
        assert ep.dist is not None
        assert any(line.split() == [ep.name, ep.dist.name, ep.dist.version] for line in lines), (
            ep,
            lines,
        )


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o nosort -F"),
        ("zsh", "compdef"),
        ("fish", "complete --no-files --command beds"),
    ],
)
def test_shell_completion_script(shell: str, marker: str) -> None:
    result = invoke(env={"_BEDS_COMPLETE": f"{shell}_source"})
    assert result.exit_code == 0, result.output
    assert marker in result.stdout
    assert "_BEDS_COMPLETE" in result.stdout


def test_completion_through_python_m_beds() -> None:
    """``main`` names the program ``beds``, so the variable is the same however it started."""
    result = subprocess.run(
        [sys.executable, "-m", "beds"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "_BEDS_COMPLETE": "bash_source"},
    )
    assert result.returncode == 0, result.stderr
    assert "_beds_completion" in result.stdout


def test_completion_of_command_names() -> None:
    result = invoke(
        env={"_BEDS_COMPLETE": "bash_complete", "COMP_WORDS": "beds te", "COMP_CWORD": "1"}
    )
    assert result.stdout.split() == ["plain,templates"]


# -- exit codes ------------------------------------------------------------------------------


def refusing_factory(settings: StoreSettings) -> MemoryAdapter:
    raise ConfigError("is required", file=settings.file, key=f"stores.{settings.store}.path")


@pytest.mark.parametrize("command", [["templates"], ["schema", "apply"]], ids=" ".join)
def test_a_store_table_the_adapter_refuses_exits_2(
    monkeypatch: pytest.MonkeyPatch, config_file: Path, command: list[str], demo_template: Template
) -> None:
    with_plugin(monkeypatch, DemoDomain(refusing_factory, demo_template))
    result = invoke(*command, "--config", str(config_file))
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[-1] == (
        "beds: error: start-up failed at adapter memory: is required (key stores.memory.path)"
    )


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("is required", key="stores.rel.url"), 2),
        (StoreUnavailable("down"), 1),
        (None, 1),
    ],
    ids=["config", "store", "message"],
)
def test_check_exits_2_when_a_failed_step_is_bad_configuration(
    monkeypatch: pytest.MonkeyPatch, config_file: Path, error: Exception | None, code: int
) -> None:
    failed = Check(name="adapter rel", status="failed", detail=str(error), error=error)

    async def check(self: BedsNode) -> list[Check]:
        return [Check(name="config", status="ok"), failed]

    monkeypatch.setattr(BedsNode, "check", check)
    result = invoke("check", "--config", str(config_file))
    assert result.exit_code == code, result.output
    assert result.stdout.splitlines()[-1].startswith("[FAIL] adapter rel: ")


class FailingAdapter(MemoryAdapter):
    """Applying schema fails with a driver's own exception, after the driver logged a traceback."""

    def __init__(self, store: str, error: Exception) -> None:
        super().__init__(store)
        self.error = error
        self.closed = False

    async def apply_schema(self, files: Sequence[SchemaFile]) -> list[str]:
        try:
            raise self.error
        except Exception:
            logging.getLogger("driver").error("the embedded server crashed", exc_info=True)
            raise

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            RuntimeError("Storage is closed\n  (while writing)"),
            "schema apply failed: RuntimeError: Storage is closed (while writing)",
        ),
        (
            StoreUnavailable("the MongoDB server cannot be reached"),
            "the MongoDB server cannot be reached",
        ),
    ],
    ids=["driver", "beds"],
)
def test_schema_apply_that_fails_exits_1_with_one_line_and_no_traceback(
    monkeypatch: pytest.MonkeyPatch,
    config_file: Path,
    error: Exception,
    message: str,
    demo_template: Template,
) -> None:
    adapters: list[FailingAdapter] = []

    def factory(settings: StoreSettings) -> FailingAdapter:
        adapters.append(FailingAdapter(settings.store, error))
        return adapters[-1]

    with_plugin(monkeypatch, DemoDomain(factory, demo_template))
    result = invoke("schema", "apply", "--config", str(config_file))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == f"beds: error: {message}"
    assert [adapter.closed for adapter in adapters] == [True]


def test_schema_apply_prints_each_applied_file(
    monkeypatch: pytest.MonkeyPatch, config_file: Path, demo_template: Template
) -> None:
    with_plugin(monkeypatch, DemoDomain(MemoryAdapter.from_settings, demo_template))
    result = invoke("schema", "apply", "--config", str(config_file))
    assert result.exit_code == 0, result.output
    assert result.stdout == "applied memory: demo/schema/memory/001.sql\n"


def test_status_all_lists_every_node_from_their_heartbeats(
    monkeypatch: pytest.MonkeyPatch, config_file: Path
) -> None:
    import time

    from beds import heartbeat

    now = time.time()
    peers = {
        "app-1": {
            "role": "appServer",
            "state": "ready",
            "at": now - 3,
            "brokers": {"r": {"handled": 7, "unsettled": 1}},
        },
        "ter-1": {"role": "tercero", "state": "reconnecting", "at": now - 8, "brokers": {}},
    }

    async def read_peers(config: object, **_: object) -> dict[str, object]:
        return {"env": "dev", "now": now, "peers": peers}

    monkeypatch.setattr(heartbeat, "read_peers", read_peers)
    result = CliRunner().invoke(cli, ["status", "--all", "--config", str(config_file)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["NODE", "ROLE", "STATE", "SEEN", "HANDLED", "UNSETTLED"]
    assert lines[1].split() == ["app-1", "appServer", "ready", "3s", "ago", "7", "1"]
    assert lines[2].split()[:3] == ["ter-1", "tercero", "reconnecting"]
    as_json = CliRunner().invoke(cli, ["status", "--all", "--json", "--config", str(config_file)])
    assert json.loads(as_json.output)["peers"]["ter-1"]["state"] == "reconnecting"
