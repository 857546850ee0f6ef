"""The embedded MongoDB server (development default) starts and stops without a traceback."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beds.testing import unique_name
from tests.integration.nodes import clean_environ

pytestmark = [pytest.mark.mariadb]


def config(tmp_path: Path, amqp_url: str, mariadb_url: str) -> Path:
    env = unique_name("embedded")
    path = tmp_path / "beds.toml"
    path.write_text(
        f"""
schema_version = 1
[node]
env = "{env}"
[telemetry]
port = 0
[amqp]
url = "{amqp_url}"
events_exchange = "beds.events.{env}"
logs_exchange = "beds.logs.{env}"
dead_letter_exchange = "beds.dlx.{env}"
control_exchange = "beds.control.{env}"
[stores.rel]
url = "{mariadb_url}"
[stores.rec]
database = "beds_embedded"
embedded_path = "{tmp_path / "secantus"}"
""",
        encoding="utf-8",
    )
    return path


def beds(*args: str) -> list[str]:
    return [sys.executable, "-m", "beds", *args]


def test_schema_apply_and_a_sigterm_leave_no_traceback(
    tmp_path: Path, amqp_url: str, mariadb_url: str
) -> None:
    path = config(tmp_path, amqp_url, mariadb_url)
    applied = subprocess.run(
        beds("schema", "apply", "--config", str(path)),
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_environ(),
        check=False,
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "Traceback" not in applied.stdout + applied.stderr

    log = tmp_path / "run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            beds("run", "--config", str(path)),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_environ(),
        )
    try:
        deadline = time.monotonic() + 60
        while " ready: " not in log.read_text(encoding="utf-8", errors="replace"):
            assert process.poll() is None, log.read_text(encoding="utf-8")
            assert time.monotonic() < deadline, log.read_text(encoding="utf-8")
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    output = log.read_text(encoding="utf-8")
    assert "Traceback" not in output, output
    assert "Storage is closed" not in output
