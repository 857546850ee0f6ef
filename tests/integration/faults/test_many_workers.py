"""``beds run --workers 2``: both workers consume, a killed one is replaced, SIGTERM drains all.

A real supervisor process against RabbitMQ, MariaDB and the session's MongoDB server. Workers are
named ``n-0`` and ``n-1``: replies' ``meta.node`` shows which one answered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from beds.client import BedsClient
from beds.errors import BedsError
from beds.testing import unique_name
from tests.helpers import operator_token
from tests.integration.nodes import Stores, clean_environ, node_config, wait_exit

pytestmark = [pytest.mark.mariadb, pytest.mark.mongodb]

DRAIN_SECONDS = 3.0
STARTED = re.compile(r"worker (\d) started \(pid (\d+)\)")


class Supervised:
    def __init__(self, process: subprocess.Popen[bytes], log: Path, env: str) -> None:
        self.process, self.log, self.env = process, log, env

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def pids(self) -> list[tuple[int, int]]:
        """(index, pid) of every worker started so far, in order."""
        return [(int(i), int(pid)) for i, pid in STARTED.findall(self.output())]


@pytest.fixture
def supervised(tmp_path: Path, amqp_url: str, stores: Stores) -> Iterator[Supervised]:
    env = unique_name("workers")
    config = tmp_path / "beds.toml"
    config.write_text(
        node_config(
            amqp_url,
            env=env,
            name="n",
            rel_url=stores.rel_url,
            mongo_uri=stores.mongo_uri,
            mongo_database=stores.mongo_database,
            instances=2,
            drain_seconds=DRAIN_SECONDS,
        ),
        encoding="utf-8",
    )
    log = tmp_path / "beds.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "beds", "run", "--config", str(config), "--workers", "2"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_environ(),
        )
    served = Supervised(process, log, env)
    yield served
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)
    for _, pid in served.pids():  # a worker the test left behind would fail `alive` elsewhere
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not reaped yet by its dead parent's reaper) is not running.
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False


async def answered_by(client: BedsClient, names: set[str], seconds: float = 40) -> set[str]:
    """Ping in bursts until every node of ``names`` answered one; the nodes that answered."""
    seen: collections.Counter[str] = collections.Counter()
    deadline = time.monotonic() + seconds
    while not names <= set(seen) and time.monotonic() < deadline:
        replies = await asyncio.gather(
            *(client.ping(timeout=2) for _ in range(20)), return_exceptions=True
        )
        for reply in replies:
            if isinstance(reply, BedsError):
                continue  # a timeout: the ping went to the worker being replaced
            if isinstance(reply, BaseException):
                raise reply
            assert reply.ok, reply
            seen[reply.meta.node] += 1
        await asyncio.sleep(0.1)
    return set(seen)


async def test_two_workers_consume_a_killed_one_is_replaced_and_sigterm_drains_all(
    supervised: Supervised, amqp_url: str
) -> None:
    client = BedsClient(
        amqp_url,
        exchange=f"beds.events.{supervised.env}",
        env=supervised.env,
        origin="load",
        timeout=10,
        token=operator_token(supervised.env),
    )
    async with client:
        both = {"n-0", "n-1"}
        assert await answered_by(client, both) == both, supervised.output()
        first = dict(supervised.pids())
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while len(supervised.pids()) < 3:
            assert time.monotonic() < deadline, supervised.output()
            await asyncio.sleep(0.1)
        assert "worker 0 (pid" in supervised.output()
        # The replacement serves again under the same name; worker 1 kept running.
        assert await answered_by(client, both) == both, supervised.output()
        assert alive(first[1])
        supervised.process.send_signal(signal.SIGTERM)
        seconds = await wait_exit(supervised.process, DRAIN_SECONDS + 10)

    output = supervised.output()
    assert supervised.process.returncode == 0, output
    assert seconds <= DRAIN_SECONDS + 3, f"exit took {seconds:.1f} s"
    assert [index for index, _ in supervised.pids()] == [0, 1, 0]
    assert not [pid for _, pid in supervised.pids() if alive(pid)], output
    assert "exited with code -9; replacing it" in output
    assert "all 2 workers stopped" in output
