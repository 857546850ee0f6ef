"""A node configuration on the test services, with the example schema applied once per session.

Also ``deployment``: ``beds run`` subprocesses of that configuration, one per role and node name,
stopped with SIGTERM (killed if they do not exit) at teardown. The helpers (``beds``,
``config_text``, ``NodeProcess``…) are in ``helpers.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from beds.testing import unique_name
from tests.e2e.helpers import NodeProcess, Start, beds, config_text


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
