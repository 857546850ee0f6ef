"""The four-role walk-through (docs/deployment.md): four processes from one config file.

The file is the one the walk-through uses, examples/four-roles/beds.toml; the per-node
overrides are the walk-through's (``--node ROLE``, ``BEDS__NODE__NAME``), plus environment
variables that point every node at the test session's services and exchanges.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from beds.testing import unique_name
from tests.helpers import operator_token

pytestmark = [pytest.mark.mariadb, pytest.mark.mongodb]

CONFIG = Path(__file__).parents[2] / "examples" / "four-roles" / "beds.toml"
ROLES = {"appServer": "app1", "admin": "adm1", "segundo": "seg1", "tercero": "ter1"}


@pytest.fixture
def services_env(
    schema_config: Path, amqp_url: str, mariadb_url: str, mongo_server_uri: str, mongo_database: str
) -> dict[str, str]:
    """BEDS__ variables pointing the walk-through's file at this session (schema applied)."""
    env = unique_name("four")
    return {
        "BEDS__NODE__ENV": env,
        "BEDS__AMQP__URL": amqp_url,
        "BEDS__AMQP__EVENTS_EXCHANGE": f"beds.events.{env}",
        "BEDS__AMQP__LOGS_EXCHANGE": f"beds.logs.{env}",
        "BEDS__AMQP__DEAD_LETTER_EXCHANGE": f"beds.dlx.{env}",
        "BEDS__STORES__REL__URL": mariadb_url,
        "BEDS__STORES__REC__URI": mongo_server_uri,
        "BEDS__STORES__REC__DATABASE": mongo_database,
        "BEDS__TELEMETRY__PORT": "0",
        "BEDS_TOKEN": operator_token(env),  # beds call writes as the tests' operator
    }


@pytest.fixture
def four_nodes(services_env: dict[str, str]) -> Iterator[Callable[..., Any]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BEDS_")} | services_env
    processes = {
        role: subprocess.Popen(
            [sys.executable, "-m", "beds", "run", "--config", str(CONFIG), "--node", role],
            env=base | {"BEDS__NODE__NAME": name},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for role, name in ROLES.items()
    }

    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "beds", *args, "--config", str(CONFIG)],
            env=base,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    try:
        yield run
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for role, process in processes.items():
            output, _ = process.communicate(timeout=30)
            assert process.returncode == 0, f"{role}:\n{output}"
            assert f"node {ROLES[role]} ({role}, env " in output, output


def wait_for(check: Callable[[], Any], what: str, timeout: float = 45) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)
    return result


def test_four_roles_cooperate_from_one_config_file(four_nodes: Callable[..., Any]) -> None:
    run = four_nodes

    def answered(template: str, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        result = run("call", template, operation, json.dumps(payload), "--timeout", "2")
        return json.loads(result.stdout) if result.returncode == 0 else {}

    wait_for(lambda: answered("beds", "ping", {}), "the appServer node")
    post = answered("spew_post", "create", {"author": unique_name("four")[:30], "body": "hi"})
    assert post["meta"]["node"] == "app1"
    handle = unique_name("four").replace("-", "_")[:30].lower()
    profile = wait_for(
        lambda: answered("spew_profile", "create", {"handle": handle, "display_name": "Four"}),
        "the tercero node",
    )
    assert profile["meta"]["node"] == "ter1"  # served by the users role only

    def tree() -> list[dict[str, Any]]:
        result = run("lineage", profile["meta"]["event_id"], "--json", "--timeout", "2")
        events: list[dict[str, Any]] = json.loads(result.stdout) if result.returncode == 0 else []
        return events if {"request", "db", "audit"} <= {e["kind"] for e in events} else []

    events = wait_for(tree, "the profile's lineage on the admin node")
    assert events[0]["node"] == "ter1"
    audit = next(event for event in events if event["kind"] == "audit")
    assert audit["data"]["after"]["handle"] == handle
