"""SPEW in a browser: run a node and the HTTP edge until Ctrl-C.

Run by ``./dev spew`` (``nox -s spew``) after ``beds schema apply``. It starts ``beds run`` (the
development default: the example domain and beds-identity on the local RabbitMQ and MariaDB,
embedded MongoDB wire server) and ``beds http`` (the edge, which serves the SPEW page at ``/``),
waits until both answer, prints the address, and on Ctrl-C (or SIGTERM) stops both with SIGTERM.
If either exits on its own, the other is stopped too and the exit code is non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from beds.client import BedsClient
from beds.errors import BedsError


def beds(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "beds", *args])


async def node_ready(node: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    async with BedsClient("amqp://guest:guest@127.0.0.1:5672/", origin="spew") as client:
        while node.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(BedsError):
                if (await client.ping(timeout=1)).ok:
                    return
            await asyncio.sleep(0.3)
    raise SystemExit("spew: the node did not answer (see its output above)")


def edge_ready(edge: subprocess.Popen[bytes], url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while edge.poll() is None and time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(f"{url}healthz", timeout=2) as reply,
        ):
            if reply.status == 200:
                return
        time.sleep(0.3)
    raise SystemExit("spew: the HTTP edge did not answer (see its output above)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    options = parser.parse_args()
    url = f"http://{options.host}:{options.port}/"
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    # Ctrl-C reaches the children too (one process group); they stop on their own SIGINT,
    # and the SIGTERM below covers a SIGTERM sent to this process alone.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    node = beds("run")
    edge: subprocess.Popen[bytes] | None = None
    code = 0
    try:
        asyncio.run(node_ready(node, 90))
        edge = beds("http", "--host", options.host, "--port", str(options.port))
        edge_ready(edge, url, 60)
        print(f"\nSPEW: open {url}  (Ctrl-C stops the node and the edge)\n", flush=True)
        while not stopping:
            if node.poll() is not None or edge.poll() is not None:
                print("spew: the node or the edge exited; stopping", file=sys.stderr)
                code = 1
                break
            time.sleep(0.3)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        code = 1
    finally:
        for process in (edge, node):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in (edge, node):
            if process is not None:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    return code


if __name__ == "__main__":
    sys.exit(main())
