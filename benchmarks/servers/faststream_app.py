"""Peer: FastStream (RabbitMQ RPC) serving the echo and the REL fetch.

Two subscribers, each on its own queue with ``--prefetch``; FastStream replies to the
``reply_to`` of each request with the handler's return value. Its per-message logging is off
and replies are published without publisher confirms (the fastest set-up it offers), so the
comparison favours the peer.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from faststream.rabbit import Channel, RabbitBroker, RabbitQueue

from benchmarks.work import RelWork, run


async def serve(options: argparse.Namespace) -> None:
    rel = RelWork(options.mysql_url, options.pool)
    await rel.open()
    channel = Channel(prefetch_count=options.prefetch, publisher_confirms=False)
    broker = RabbitBroker(options.url, logger=None, default_channel=channel)

    @broker.subscriber(RabbitQueue("bench.fs.echo", auto_delete=True), channel=channel)
    async def echo(body: dict[str, Any]) -> dict[str, Any]:
        return body

    @broker.subscriber(RabbitQueue("bench.fs.rel_fetch", auto_delete=True), channel=channel)
    async def rel_fetch(body: dict[str, Any]) -> dict[str, Any]:
        rows = await rel.fetch(body)
        if len(rows) != 1:
            return {"ok": False, "error": f"found {len(rows)} records"}
        return {"ok": True, "data": rows}

    await broker.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await broker.stop()
    await rel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--mysql-url", required=True)
    parser.add_argument("--prefetch", type=int, default=64)
    parser.add_argument("--pool", type=int, default=16)
    parser.add_argument("--uvloop", action="store_true")
    options = parser.parse_args(sys.argv[1:])
    run(serve(options), use_uvloop=options.uvloop)


if __name__ == "__main__":
    main()
