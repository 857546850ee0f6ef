"""``beds run``: serve a node until SIGTERM or SIGINT (a second signal forces exit)."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import TYPE_CHECKING

import click
from loguru import logger

from beds.cli.common import EXIT_CONFIG, config_option, exit_code_of, fail, load, node_option
from beds.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from beds.config.model import Config

__all__ = ("run",)


@click.command()
@config_option
@node_option
def run(config_path: Path | None, role: str | None) -> None:
    """Run a node until SIGTERM or SIGINT (a second signal forces exit).

    Serves on uvloop when it is installed (``BEDS_EVENT_LOOP``: ``auto``, ``uvloop``, ``asyncio``).
    """
    from beds.eventloop import choose_event_loop
    from beds.eventloop import run as run_on_loop
    from beds.log import configure_logging
    from beds.node import StartupError

    config = load(config_path, role)
    try:
        loop = choose_event_loop()
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    configure_logging(config.log, node=config.node.name)
    logger.info("serving on the {} event loop", loop)
    try:
        run_on_loop(_serve(config), loop)
    except StartupError as exc:
        fail(str(exc), exit_code_of(exc.checks))


async def _serve(config: Config) -> None:
    from beds.node import BedsNode

    node = BedsNode(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            logger.warning("second signal: exiting now")
            os._exit(128 + signum)
        logger.info("signal {}: draining and stopping", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await node.start()
    # A lost RabbitMQ connection is the node's to recover (it reconnects): only a signal stops.
    await stop.wait()
    await node.stop()
