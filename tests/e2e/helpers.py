"""Helpers of the end-to-end tests: the node configuration, the ``beds`` command, nodes.

Their fixtures are in ``conftest.py``; tests import these from here, never from a conftest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from beds.auth.keys import TokenKeys, development_keys_dir
from beds.config.model import AuthSettings

__all__ = ("NodeProcess", "Start", "beds", "config_text", "wait_until")


def development_keys() -> str:
    """The development token keys' folder, with its key pair made if it was not yet."""
    TokenKeys.load(AuthSettings(), production=False)
    return str(development_keys_dir())


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

[auth]
# The development token keys, named explicitly so production-mode checks accept them too;
# tests sign their tokens with them (tests.helpers.operator_token).
keys_dir = "{development_keys()}"

[auth.passwords]
# argon2id at its cheapest: the tests sign up and log in many users.
time_cost = 1
memory_kib = 8
parallelism = 1

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


def wait_until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
