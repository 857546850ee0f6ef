"""docs/examples/embedded_node.py, the embedding guide's example, runs as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from beds.testing import unique_name

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "embedded_node.py"


def test_the_embedding_example_serves_and_its_own_task_keeps_running(amqp_url: str) -> None:
    env = unique_name("embed")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BEDS_")}
    environ.update(
        {
            "BEDS_ENV": env,
            "BEDS__AMQP__URL": amqp_url,
            # One vhost holds many test environments: each gets its own exchanges.
            "BEDS__AMQP__EVENTS_EXCHANGE": f"beds.events.{env}",
            "BEDS__AMQP__LOGS_EXCHANGE": f"beds.logs.{env}",
            "BEDS__AMQP__DEAD_LETTER_EXCHANGE": f"beds.dlx.{env}",
            "BEDS__AMQP__CONTROL_EXCHANGE": f"beds.control.{env}",
            "BEDS__TELEMETRY__PORT": "0",
            "BEDS__LINEAGE__ENABLED": "false",
        }
    )
    run = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "(ready) stored {'text': 'hello from inside', 'id': 1}" in run.stdout
    ticks = int(run.stdout.rsplit("ran ", 1)[1].split()[0])
    assert ticks >= 1
    assert "Traceback" not in run.stderr
