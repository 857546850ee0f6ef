"""The beds command as an operator uses it: run as a subprocess, call, templates, check."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from beds.config import load_config
from beds.testing import unique_name
from tests.e2e.helpers import beds, config_text
from tests.helpers import Accounts, operator_token


@pytest.fixture
def served(node_config: Path) -> Iterator[Path]:
    """`beds run --config FILE` in a subprocess, ready when `beds call ... ping` answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEDS_")}
    with subprocess.Popen(
        [sys.executable, "-m", "beds", "run", "--config", str(node_config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            deadline = time.monotonic() + 60
            while process.poll() is None:
                result = beds(
                    "call", "beds", "ping", "--config", str(node_config), "--timeout", "1"
                )
                if result.returncode == 0:
                    break
                assert time.monotonic() < deadline, "beds run did not become ready"
                time.sleep(0.3)
            assert process.poll() is None, "beds run exited before it was ready"
            yield node_config
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "ready" in output


def call(config: Path, *args: str) -> tuple[int, dict[str, object]]:
    token = operator_token(load_config(config, environ={}).node.env)
    result = beds("call", *args, "--config", str(config), "--token", token)
    return result.returncode, json.loads(result.stdout)


def test_call_through_a_served_node(served: Path) -> None:
    author = unique_name("cli")[:30]
    code, created = call(
        served, "spew_post", "create", json.dumps({"author": author, "body": "via cli"})
    )
    assert code == 0, created
    assert created["ok"] is True
    assert created["status"] == 201
    post_id = created["data"]["id"]  # type: ignore[index]

    code, fetched = call(
        served, "spew_post", "fetch", json.dumps({"query": "by_id", "params": {"id": post_id}})
    )
    assert code == 0
    assert fetched["data"][0]["body"] == "via cli"  # type: ignore[index]

    handle = unique_name("cli")[:30]
    code, profile = call(
        served, "spew_profile", "create", json.dumps({"handle": handle, "display_name": "C"})
    )
    assert code == 0, profile
    code, deleted = call(served, "spew_profile", "delete", json.dumps({"handle": handle}))
    assert (code, deleted["data"]) == (0, {"deleted": 1})

    code, error = call(served, "spew_post", "create", json.dumps({"author": author}))
    assert code == 1
    assert error["error"]["code"] == "BEDS-422"  # type: ignore[index]
    assert error["error"]["details"] == ["$.payload.body: is required"]  # type: ignore[index]

    # A misspelt template, field or query gets a suggestion.
    code, error = call(served, "spew_pots", "fetch", json.dumps({"params": {"id": post_id}}))
    assert code == 1
    assert error["error"]["code"] == "BEDS-404T"  # type: ignore[index]
    assert error["error"]["details"] == [  # type: ignore[index]
        "template: spew_pots",
        "did you mean 'spew_post'?",
    ]
    code, error = call(served, "spew_post", "create", json.dumps({"author": author, "bdy": "x"}))
    assert error["error"]["details"] == [  # type: ignore[index]
        "$.payload.bdy: is not a field of this operation; did you mean 'body'?",
        "$.payload.body: is required",
    ]
    code, error = call(served, "spew_post", "fetch", json.dumps({"query": "by_di"}))
    assert error["error"]["details"][0].endswith("; did you mean 'by_id'?")  # type: ignore[index]


def test_call_with_bad_json_is_a_usage_error(node_config: Path) -> None:
    result = beds("call", "spew_post", "create", "{not json", "--config", str(node_config))
    assert result.returncode == 2
    assert "PAYLOAD is not valid JSON" in result.stderr


def test_templates_lists_the_example_domain() -> None:
    result = beds("templates", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["spew_post"]["store"] == "rel"
    assert rows["spew_profile"]["store"] == "rec"
    assert rows["spew_post"]["distribution"] == "beds-templates-example"


def beds_with(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the beds command with ``env`` added to an environment without BEDS_ variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BEDS_")}
    return subprocess.run(
        [sys.executable, "-m", "beds", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
        check=False,
    )


def test_version_and_plugins_list_the_installed_plugins() -> None:
    version = beds("--version")
    assert version.returncode == 0, version.stderr
    lines = version.stdout.splitlines()
    assert lines[0].startswith("beds, version ")
    listed = {line.split()[0]: line.split()[1] for line in lines[2:]}
    assert listed == {
        "ai": "beds-ai",
        "identity": "beds-identity",
        "rec": "beds-rec",
        "rel": "beds-rel",
        "spew": "beds-templates-example",
    }

    plugins = beds("plugins", "--json")
    assert plugins.returncode == 0, plugins.stderr
    assert {p["name"]: p["distribution"] for p in json.loads(plugins.stdout)} == listed


def test_check_json_parses(node_config: Path) -> None:
    result = beds("check", "--config", str(node_config), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = json.loads(result.stdout)
    assert [c["name"] for c in checks[:3]] == ["config", "rabbitmq", "plugins"]
    assert {c["status"] for c in checks} == {"ok"}


@pytest.mark.parametrize("command", [["check"], ["run"], ["templates"], ["schema", "apply"]])
def test_a_store_table_the_adapter_refuses_is_a_config_error(
    node_config: Path, command: list[str]
) -> None:
    text = node_config.read_text(encoding="utf-8").replace(
        "[stores.rel]\n", "[stores.rel]\nbogus = 1\n"
    )
    node_config.write_text(text, encoding="utf-8")
    result = beds(*command, "--config", str(node_config))
    assert result.returncode == 2, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "stores.rel." in output
    assert str(node_config) in output
    assert "Traceback" not in output


def test_no_templates_warns_in_development_and_refuses_production(
    node_config: Path, production_accounts: Accounts
) -> None:
    no_domain = {"BEDS_DISABLED_PLUGINS": "spew,identity"}
    warning = (
        "templates: no templates are installed, so this node serves no requests: install a "
        "template package (docs/writing-a-domain.md), such as beds-templates-example"
    )
    development = beds_with(no_domain, "check", "--config", str(node_config))
    assert development.returncode == 1
    assert f"[WARN] {warning}" in development.stdout.splitlines()

    production = in_mode(node_config, "production", accounts=production_accounts)
    checked = beds_with(no_domain, "check", "--config", str(production))
    assert checked.returncode == 1
    assert checked.stdout.splitlines()[-1] == f"[FAIL] {warning}"
    run = beds_with(no_domain, "run", "--config", str(production))
    assert run.returncode == 1
    assert run.stderr.splitlines()[-1] == f"beds: error: start-up failed at {warning}"


def test_bad_config_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "beds.toml"
    path.write_text(
        "schema_version = 1\n[roles.appServer.brokers.rBroker]\ninstances = 0\n", encoding="utf-8"
    )
    result = beds("check", "--config", str(path))
    assert result.returncode == 2
    assert str(path) in result.stderr
    assert "roles.appServer.brokers.rBroker.instances" in result.stderr


def in_mode(
    config: Path,
    mode: str,
    edits: dict[str, str] | None = None,
    accounts: Accounts | None = None,
) -> Path:
    """A copy of ``config`` in ``node.mode = mode``, in a folder of its own, after ``edits``.

    Production refuses a password in the base file, so in both modes the AMQP and MariaDB URLs
    move to the environment file; production also refuses ``guest`` and passwordless accounts,
    so there they log in with the session's ``accounts``.
    """
    text = config.read_text(encoding="utf-8")
    for old, new in (edits or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    amqp_line = next(line for line in text.splitlines() if line.startswith('url = "amqp'))
    rel_line = next(line for line in text.splitlines() if line.startswith('url = "mysql'))
    amqp, rel = amqp_line.split('"')[1], rel_line.split('"')[1]
    if mode == "production":
        assert accounts is not None, "production needs the session's accounts"
        amqp, rel = accounts.amqp(amqp), accounts.rel(rel)
    moved = [amqp_line, rel_line]
    rel_table = f'url = "{rel}"\n'
    secondaries = next((ln for ln in text.splitlines() if ln.startswith("secondaries = ")), None)
    if secondaries is not None:  # replicas log in with the same account
        moved.append(secondaries)
        urls = list(secondaries.split('"')[1::2])
        if mode == "production":
            urls = [accounts.rel(url) for url in urls] if accounts else urls
        rel_table += "secondaries = [" + ", ".join(f'"{url}"' for url in urls) + "]\n"
    env = text.split('env = "', 1)[1].split('"', 1)[0]
    folder = config.parent / mode
    folder.mkdir()
    trust = ""
    if mode == "production" and accounts is not None:  # production names whom it believes
        users = f'["{accounts.amqp_user}"]'
        trust = f"[control]\ntrusted_users = {users}\n[lineage]\ntrusted_users = {users}\n"
        trust += '[reads]\ncursor_secret = "e2e-cursor-secret"\n'
    (folder / f"env_{env}.toml").write_text(
        f'[amqp]\nurl = "{amqp}"\n[stores.rel]\n{rel_table}{trust}', encoding="utf-8"
    )
    path = folder / "beds.toml"
    for line in moved:
        text = text.replace(f"{line}\n", "")
    path.write_text(text.replace("[node]\n", f'[node]\nmode = "{mode}"\n', 1), encoding="utf-8")
    return path


def check_in_both_modes(
    config: Path, accounts: Accounts, edits: dict[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """``beds check`` of ``config`` in development and in production: their checklists."""
    lines = []
    for mode in ("development", "production"):
        result = beds("check", "--config", str(in_mode(config, mode, edits, accounts)))
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stdout.startswith("[ok  ] config: "), result.stdout + result.stderr
        lines.append(result.stdout.splitlines())
    return lines[0], lines[1]


def line_of(lines: list[str], start: str) -> int:
    found = [n for n, line in enumerate(lines) if line.startswith(start)]
    assert len(found) == 1, (start, lines)
    return found[0]


def test_check_reports_a_missing_procedure_by_name(
    tmp_path: Path,
    amqp_url: str,
    mariadb_url: str,
    mongo_server_uri: str,
    mongo_database: str,
    mariadb_sql: Callable[[str], None],
    production_accounts: Accounts,
) -> None:
    """A database where the DBA has not installed spp_update: `beds check` names it.

    Development warns and checks on (the template is still served); production stops there.
    """
    database = unique_name("beds_check")
    parts = urlsplit(mariadb_url)
    rel_url = mariadb_url.replace(parts.path, "/" + database)
    path = tmp_path / "beds.toml"
    path.write_text(
        config_text(amqp_url, rel_url, mongo_server_uri, mongo_database, unique_name("chk")),
        encoding="utf-8",
    )

    try:
        applied = beds("schema", "apply", "--config", str(path))
        assert applied.returncode == 0, applied.stderr
        ok = beds("check", "--config", str(path))
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "[ok  ] template spew_post objects" in ok.stdout

        mariadb_sql(f"DROP PROCEDURE `{database}`.`spp_update`")
        development, production = check_in_both_modes(path, production_accounts)
        warned = line_of(development, "[WARN] template spew_post objects: ")
        assert "spp_update" in development[warned]
        assert development[-1] == "[ok  ] ticket store objects: store rel"  # checks go on

        failed = line_of(production, "[FAIL] template spew_post objects: ")
        assert "spp_update" in production[failed]
        assert failed == len(production) - 1  # fatal: nothing is checked after it
    finally:
        mariadb_sql(f"DROP DATABASE IF EXISTS `{database}`")


def test_an_unreachable_secondary_warns_in_development_and_is_fatal_in_production(
    node_config: Path, production_accounts: Accounts
) -> None:
    secondary = '[stores.rel]\nsecondaries = ["mysql://root@127.0.0.1:1/x"]\n'
    development, production = check_in_both_modes(
        node_config, production_accounts, {"[stores.rel]\n": secondary}
    )
    warned = line_of(development, "[WARN] store rel secondary 127.0.0.1:1: ")
    assert development[warned + 1 :] == [
        "[ok  ] template beds_session objects",
        "[ok  ] template beds_user objects",
        "[ok  ] template spew_boost objects",
        "[ok  ] template spew_follow objects",
        "[ok  ] template spew_like objects",
        "[ok  ] template spew_note objects",
        "[ok  ] template spew_post objects",
        "[ok  ] template spew_profile objects",
        "[ok  ] template spew_stats objects",
        "[ok  ] ticket store objects: store rel",
    ]
    failed = line_of(production, "[FAIL] store rel secondary 127.0.0.1:1: ")
    assert production[failed] == development[warned].replace("[WARN]", "[FAIL]")
    assert failed == len(production) - 1


def test_an_unwritable_shared_path_warns_in_development_and_is_fatal_in_production(
    node_config: Path, tmp_path: Path, production_accounts: Accounts
) -> None:
    # A file, not a folder: nobody can write into it, root included (the tests may run as root).
    shared = tmp_path / "a-file"
    shared.write_text("", encoding="utf-8")
    development, production = check_in_both_modes(
        node_config, production_accounts, {"[node]\n": f'[node]\nshared_path = "{shared}"\n'}
    )
    expected = (
        f"shared filesystem: cannot write to {shared}: Not a directory (key node.shared_path)"
    )
    warned = line_of(development, "[WARN] shared filesystem: ")
    assert development[warned] == f"[WARN] {expected}"
    assert development[-1] == "[ok  ] ticket store objects: store rel"
    assert production[-1] == f"[FAIL] {expected}"
    assert not any(line.startswith("[ok  ] template ") for line in production)


def test_brokers_without_bindings_are_reported_idle_in_every_mode(
    node_config: Path, production_accounts: Accounts
) -> None:
    """segundo's seed brokers are placeholders: said on the checklist, never fatal."""
    development, production = (
        beds(
            "check",
            "--config",
            str(in_mode(node_config, mode, accounts=production_accounts)),
            "--node",
            "segundo",
        )
        for mode in ("development", "production")
    )
    for result in (development, production):
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines()[-1:] == [
            "[ok  ] broker whBroker: runs warehouse tickets (2 workers)"
        ]
    assert beds("check", "--config", str(node_config)).returncode == 0  # appServer is bound


def test_a_newcomer_signs_up_logs_in_posts_and_logs_out_from_the_command_line(
    served: Path, tmp_path: Path
) -> None:
    """The README's walk-through, with the password on stdin and the token file in tmp."""
    env = {"BEDS_TOKEN_FILE": str(tmp_path / "token")}
    config = ("--config", str(served))
    ann, bob = unique_name("ann")[:20], unique_name("bob")[:20]
    password = "a long enough password"

    def run(
        *args: str, stdin: str | None = None, local: bool = False
    ) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("BEDS_")}
        return subprocess.run(
            [sys.executable, "-m", "beds", *args, *(() if local else config)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env={**clean, **env},
            check=False,
        )

    for name in (ann, bob):
        created = run("user", "create", name, "--password-stdin", stdin=password + "\n")
        assert created.returncode == 0, created.stdout + created.stderr
    logged = run("login", bob, "--password-stdin", stdin=password + "\n")
    assert logged.returncode == 0, logged.stderr
    bobs = json.loads(run("call", "spew_post", "create", '{"body": "by bob"}').stdout)
    assert bobs["status"] == 201, bobs

    logged = run("login", ann, "--password-stdin", stdin=password + "\n")
    assert logged.returncode == 0, logged.stderr
    assert (tmp_path / "token").stat().st_mode & 0o077 == 0  # the owner's only
    whoami = run("whoami", local=True)  # reads the token file, asks no node
    assert ann in whoami.stdout, whoami.stdout + whoami.stderr
    mine = json.loads(run("call", "spew_post", "create", '{"body": "hello"}').stdout)
    assert mine["status"] == 201, mine
    by_id = {"query": "by_id", "params": {"id": mine["data"]["id"]}}
    fetched = json.loads(run("call", "spew_post", "fetch", json.dumps(by_id)).stdout)
    assert fetched["data"][0]["author"] == ann
    other = run("call", "spew_post", "update", json.dumps({"id": bobs["data"]["id"], "body": "x"}))
    assert json.loads(other.stdout)["error"]["code"] == "BEDS-403"

    token = json.loads((tmp_path / "token").read_text())["token"]
    out = run("logout")
    assert out.returncode == 0, out.stdout + out.stderr
    assert not (tmp_path / "token").exists()
    old = run("call", "spew_post", "create", '{"body": "after"}', "--token", token)
    assert json.loads(old.stdout)["error"]["code"] == "BEDS-401"
    for result in (logged, whoami, out, old):
        assert password not in result.stdout + result.stderr
        assert token not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "variables",
    [
        {"BEDS__AMQP__URL": "amqp://app:Pw7secret@127.0.0.1:1/"},  # nothing listens
        {"BEDS__AMQP__URL": "amqp://app:Pw7secret@127.0.0.1:5672/"},  # refused credentials
        {"BEDS__AMQP__URL": "amqp://app:Pw7secret@127.0.0.1:99999/"},  # not a valid URL
        {"BEDS__STORES__REL__URL": "mysql://root:Pw7secret@127.0.0.1:3306/beds_dev"},
        {
            "BEDS__STORES__REC__URI": "mongodb://u:Pw7secret@127.0.0.1:1/?serverSelectionTimeoutMS=500"
        },
    ],
)
def test_a_connection_that_fails_never_prints_its_password(
    node_config: Path, variables: dict[str, str]
) -> None:
    for command in ("check", "run"):
        result = beds_with(
            {**variables, "BEDS_LOG_DIAGNOSE": ""}, command, "--config", str(node_config)
        )
        assert result.returncode != 0, result.stdout + result.stderr
        assert "Pw7secret" not in result.stdout + result.stderr
