"""A node configuration on the test services, with the example schema applied once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from beds.testing import unique_name


def config_text(amqp_url: str, mariadb_url: str, mongo_uri: str, mongo_db: str, env: str) -> str:
    return f"""
schema_version = 1

[node]
name = "e2e"
env = "{env}"
drain_seconds = 5

[amqp]
url = "{amqp_url}"
# One vhost holds every test environment: each gets its own exchanges.
events_exchange = "beds.events.{env}"
logs_exchange = "beds.logs.{env}"
dead_letter_exchange = "beds.dlx.{env}"

[telemetry]
# A free port: the default 9464 may be taken by a node running on this machine.
port = 0

[stores.rel]
url = "{mariadb_url}"

[stores.rec]
uri = "{mongo_uri}"
database = "{mongo_db}"

[roles.appServer.brokers.rBroker]
instances = 4

[roles.appServer.brokers.wBroker]
instances = 4
"""


def beds(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the beds command in a subprocess, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "beds", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if not k.startswith("BEDS_")},
        check=False,
    )


@pytest.fixture(scope="session")
def schema_config(
    tmp_path_factory: pytest.TempPathFactory,
    amqp_url: str,
    mariadb_url: str,
    mongo_server_uri: str,
    mongo_database: str,
) -> Path:
    """A config file for the session's databases, whose example schema has been applied."""
    path = tmp_path_factory.mktemp("config") / "beds.toml"
    path.write_text(
        config_text(amqp_url, mariadb_url, mongo_server_uri, mongo_database, unique_name("e2e")),
        encoding="utf-8",
    )
    result = beds("schema", "apply", "--config", str(path))
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture
def node_config(tmp_path: Path, schema_config: Path) -> Path:
    """The session's config with a fresh environment name, so each test has its own queues."""
    path = tmp_path / "beds.toml"
    text = schema_config.read_text(encoding="utf-8")
    old_env = text.split('env = "', 1)[1].split('"', 1)[0]
    path.write_text(text.replace(old_env, unique_name("e2e")), encoding="utf-8")
    return path
