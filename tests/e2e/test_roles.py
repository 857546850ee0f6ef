"""Roles as processes: an appServer node and an admin node from one config file, per-node overrides.

The appServer answers requests; every request's events reach the admin node over the logs
exchange, which stores them in msLogs; ``beds lineage`` reads a request's tree back through the
admin node; an audited template's writes leave audit records with before and after.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from beds.config import load_config
from beds.testing import unique_name
from tests.e2e.helpers import Start, beds, wait_until
from tests.helpers import operator_token

pytestmark = [pytest.mark.mariadb, pytest.mark.mongodb]


def call(config: Path, *args: str) -> dict[str, Any]:
    token = operator_token(load_config(config, environ={}).node.env)
    result = beds("call", *args, "--config", str(config), "--token", token)
    assert result.returncode == 0, result.stdout + result.stderr
    response: dict[str, Any] = json.loads(result.stdout)
    return response


def lineage(config: Path, event_id: str) -> list[dict[str, Any]]:
    result = beds("lineage", event_id, "--config", str(config), "--json", "--timeout", "2")
    if result.returncode != 0:
        return []
    events: list[dict[str, Any]] = json.loads(result.stdout)
    return events


def test_lineage_and_audit_through_an_admin_node(deployment: tuple[Path, Start]) -> None:
    config, start = deployment
    start("admin", "adm1")
    start("appServer", "app1")
    ping = ("beds", "ping", "--timeout", "1")
    wait_until(lambda: beds("call", *ping, "--config", str(config)).returncode == 0, "appServer")

    author = unique_name("lin")[:30]
    created = call(config, "spew_post", "create", json.dumps({"author": author, "body": "hi"}))
    event_id = created["meta"]["event_id"]

    def full_tree() -> list[dict[str, Any]]:
        tree = lineage(config, event_id)
        kinds = [event["kind"] for event in tree]
        return tree if {"request", "db", "log"} <= set(kinds) else []

    tree = wait_until(full_tree, "the request's tree in msLogs")
    root = tree[0]
    assert (root["kind"], root["event_id"], root["node"]) == ("request", event_id, "app1")
    assert (root["template"], root["operation"], root["status"]) == ("spew_post", "create", 201)
    db = next(event for event in tree if event["kind"] == "db")
    assert (db["parent_id"], db["depth"], db["message"]) == (event_id, 1, "rel create spp_create")
    assert db["ms"] <= root["ms"]
    assert any(e["kind"] == "log" and e["parent_id"] == event_id for e in tree)
    # The readable form: root first, children indented, with timings.
    text = beds("lineage", event_id, "--config", str(config)).stdout
    assert text.splitlines()[0].startswith("request create spew_post → 201 on app1")
    assert any(line.startswith("  db      rel create") for line in text.splitlines())

    handle = unique_name("aud").replace("-", "_")[:30].lower()
    call(config, "spew_profile", "create", json.dumps({"handle": handle, "display_name": "A"}))
    updated = call(
        config, "spew_profile", "update", json.dumps({"handle": handle, "display_name": "B"})
    )

    def audit() -> dict[str, Any] | None:
        events = lineage(config, updated["meta"]["event_id"])
        return next((e for e in events if e["kind"] == "audit"), None)

    record = wait_until(audit, "the update's audit record")
    data = record["data"]
    assert data["key"] == {"handle": handle}
    assert (data["before"]["display_name"], data["after"]["display_name"]) == ("A", "B")
    assert data["origin"] == "guest"  # the AMQP user RabbitMQ vouched for, not meta.origin
    assert record["parent_id"] == updated["meta"]["event_id"]


def test_audit_records_made_before_any_admin_node_started_are_kept(
    deployment: tuple[Path, Start],
) -> None:
    """The appServer declares the logs queue itself: what it publishes waits for the admin."""
    config, start = deployment
    start("appServer", "app1")
    ping = ("beds", "ping", "--timeout", "1")
    wait_until(lambda: beds("call", *ping, "--config", str(config)).returncode == 0, "appServer")
    handle = unique_name("early").replace("-", "_")[:30].lower()
    created = call(
        config, "spew_profile", "create", json.dumps({"handle": handle, "display_name": "E"})
    )
    start("admin", "adm1")

    def audit() -> dict[str, Any] | None:
        events = lineage(config, created["meta"]["event_id"])
        return next((e for e in events if e["kind"] == "audit"), None)

    record = wait_until(audit, "the audit record published before the admin node started")
    assert record["data"]["key"] == {"handle": handle}
    assert record["data"]["before"] is None
    assert record["data"]["after"]["display_name"] == "E"


def test_lineage_of_an_unknown_event_is_a_clear_error(deployment: tuple[Path, Start]) -> None:
    config, start = deployment
    start("admin", "adm1")
    wait_until(
        lambda: (
            "no stored event"
            in beds("lineage", "x.y.z", "--config", str(config), "--timeout", "2").stderr
        ),
        "the admin node",
    )
    result = beds("lineage", "x.y.z", "--config", str(config))
    assert result.returncode == 1
    assert "no stored event has that id" in result.stderr


def test_lineage_without_an_admin_node_says_so(deployment: tuple[Path, Start]) -> None:
    config, start = deployment
    start("appServer", "app1")
    ping = ("beds", "ping", "--timeout", "1")
    wait_until(lambda: beds("call", *ping, "--config", str(config)).returncode == 0, "appServer")
    result = beds("lineage", "x.y.z", "--config", str(config), "--timeout", "2")
    assert result.returncode == 1
    assert "no admin node serves lineage here" in result.stderr


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        (
            '[roles.appServer.brokers.rBroker]\ntype = "weird"',
            "roles.appServer.brokers.rBroker.type",
            'must be "requests" or "logs"',
        ),
        (
            "[roles.appServer.brokers.rBroker]\ninstances = -1",
            "roles.appServer.brokers.rBroker.instances",
            "must be at least 1",
        ),
        ('[node]\nrole = "bogus"', "node.role", "unknown role 'bogus'"),
    ],
)
def test_bad_roles_fail_at_start_up_naming_the_key(
    tmp_path: Path, table: str, key: str, words: str
) -> None:
    path = tmp_path / "beds.toml"
    path.write_text(f"schema_version = 1\n{table}\n", encoding="utf-8")
    result = beds("run", "--config", str(path), timeout=30)
    assert result.returncode == 2
    assert f"key {key})" in result.stderr
    assert words in result.stderr


def test_check_lists_secondaries_and_the_shared_filesystem(
    node_config: Path, tmp_path: Path, mariadb_url: str
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    text = node_config.read_text(encoding="utf-8")
    good = node_config.with_name("good.toml")
    good.write_text(
        text.replace("[stores.rel]\n", f'[stores.rel]\nsecondaries = ["{mariadb_url}"]\n').replace(
            "[node]\n", f'[node]\nshared_path = "{shared}"\n'
        ),
        encoding="utf-8",
    )
    result = beds("check", "--config", str(good))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ok  ] store rel secondary 127.0.0.1:3306" in result.stdout
    assert f"[ok  ] shared filesystem: {shared}" in result.stdout

    bad = node_config.with_name("bad.toml")
    missing = tmp_path / "nowhere"
    bad.write_text(
        text.replace(
            "[stores.rel]\n", '[stores.rel]\nsecondaries = ["mysql://root@127.0.0.1:1/x"]\n'
        ).replace("[node]\n", f'[node]\nshared_path = "{missing}"\n'),
        encoding="utf-8",
    )
    result = beds("check", "--config", str(bad))
    assert result.returncode == 1  # warnings in development: the node would still run
    lines = result.stdout.splitlines()
    assert any(line.startswith("[WARN] store rel secondary 127.0.0.1:1: ") for line in lines)
    assert f"[WARN] shared filesystem: cannot write to {missing}" in result.stdout
    assert "[ok  ] brokers" not in result.stdout  # check stops before serving
    assert any(line.startswith("[ok  ] template spew_post objects") for line in lines)
