"""Helpers of the browser tests: a ``beds run`` node and a ``beds http`` edge as subprocesses.

Their fixtures are in ``conftest.py``; tests import these from here, never from a conftest.
Chromium is Debian's (``/usr/bin/chromium``, installed by ``./dev browser``): Playwright's own
browser downloads are impossible on these machines, so ``playwright install`` is never run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import attrs

from beds.client import BedsClient
from beds.errors import BedsError
from tests.helpers import operator_token

__all__ = (
    "ARTIFACTS",
    "CHROMIUM",
    "SCREENSHOT",
    "Process",
    "Spew",
    "free_port",
    "start_process",
    "wait_edge",
    "wait_node",
)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("BEDS_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "test-artifacts"
"""Where the tests write their screenshots (gitignored)."""
SCREENSHOT = ROOT / "docs" / "_static" / "spew-timeline.png"
"""The committed screenshot the README links; rewritten only with BEDS_UPDATE_SCREENSHOT=1."""


@attrs.define
class Process:
    """A subprocess whose output goes to a log file (the pipe can never fill up)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM it by its PID unless it exited, wait (kill it if it hangs); the exit code."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.popen.pid, signal.SIGKILL)
            return self.popen.wait(timeout)


@attrs.frozen
class Spew:
    """The running node and edge (the ``spew`` fixture), and the page's address."""

    url: str
    """``http://127.0.0.1:PORT`` (no trailing slash)."""
    node: Process
    edge: Process


def start_process(name: str, folder: Path, *args: str) -> Process:
    """``python -m beds ARGS`` without the caller's BEDS_* variables, logging to ``folder``."""
    log = folder / f"{name}.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BEDS_")}
    with log.open("wb") as out:  # the child keeps its own descriptor
        popen = subprocess.Popen(
            [sys.executable, "-m", "beds", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environ,
        )
    return Process(name, popen, log)


def free_port() -> int:
    """A loopback port nothing listens on now (the edge binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_node(node: Process, amqp_url: str, env: str, seconds: float = 60) -> None:
    """Until the node answers a ping (its brokers consume), or fail with its output."""

    async def ping() -> None:
        client = BedsClient(
            amqp_url,
            exchange=f"beds.events.{env}",
            env=env,
            origin="browser-tests",
            timeout=5,
            token=operator_token(env),
        )
        deadline = time.monotonic() + seconds
        async with client:
            while True:
                if node.popen.poll() is not None:
                    raise AssertionError(f"beds run exited early:\n{node.output()}")
                with contextlib.suppress(BedsError):
                    if (await client.ping(timeout=1)).ok:
                        return
                if time.monotonic() > deadline:
                    raise AssertionError(f"beds run not ready in {seconds} s:\n{node.output()}")
                await asyncio.sleep(0.2)

    asyncio.run(ping())


def wait_edge(edge: Process, base_url: str, seconds: float = 60) -> None:
    """Until the edge answers ``GET /healthz`` with 200, or fail with its output."""
    deadline = time.monotonic() + seconds
    while True:
        if edge.popen.poll() is not None:
            raise AssertionError(f"beds http exited early:\n{edge.output()}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as reply,
        ):
            if reply.status == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"beds http not ready in {seconds} s:\n{edge.output()}")
        time.sleep(0.2)
