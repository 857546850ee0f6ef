"""A node configuration on the test services, with the example schema applied once per session.

Also ``deployment``: ``beds run`` subprocesses of that configuration, one per role and node name,
stopped with SIGTERM (killed if they do not exit) at teardown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

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


class NodeProcess:
    """A ``beds run`` subprocess; a thread collects its output, so the pipe never fills up."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)

    def output(self) -> str:
        """Its stdout and stderr so far."""
        return "".join(list(self._lines))

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM it unless it exited, wait for the exit (else kill it); return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)
        self._reader.join(timeout)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return self.process.returncode


class Start(Protocol):
    def __call__(
        self, role: str, name: str, env: Mapping[str, str] | None = None
    ) -> NodeProcess: ...


@pytest.fixture
def deployment(node_config: Path) -> Iterator[tuple[Path, Start]]:
    """The shared config (lineage log records from DEBUG) and ``start(role, node_name, env)``.

    ``env`` adds environment variables for that node only. Every node must exit with 0 on the
    SIGTERM of the teardown (or before it).
    """
    text = node_config.read_text(encoding="utf-8")
    node_config.write_text(
        text + '\n[lineage]\nlog_level = "DEBUG"\nflush_interval = 0.02\n', encoding="utf-8"
    )
    nodes: list[NodeProcess] = []

    def start(role: str, name: str, env: Mapping[str, str] | None = None) -> NodeProcess:
        # One config file; what differs per node comes from its command line and environment.
        environ = {k: v for k, v in os.environ.items() if not k.startswith("BEDS_")}
        environ["BEDS__NODE__NAME"] = name
        environ.update(env or {})
        process = subprocess.Popen(
            [sys.executable, "-m", "beds", "run", "--config", str(node_config), "--node", role],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        node = NodeProcess(process)
        nodes.append(node)
        return node

    yield node_config, start
    codes = [(node.stop(), node) for node in nodes]  # every one, before asserting
    for code, node in codes:
        assert code == 0, node.output()


def wait_until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
