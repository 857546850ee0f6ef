"""``beds run``: serve a node until SIGTERM or SIGINT (a second signal forces exit)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import TYPE_CHECKING

import click
from loguru import logger

from beds.bugs import report_bug
from beds.cli.common import (
    EXIT_CONFIG,
    EXIT_CRASHED,
    config_option,
    exit_code_of,
    fail,
    load,
    node_option,
)
from beds.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from beds.config.model import Config

__all__ = ("run",)


@click.command()
@config_option
@node_option
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Node processes to run (overrides node.workers, default 1; 0: 1 in development, one "
    "per core in production).",
)
def run(config_path: Path | None, role: str | None, workers: int | None) -> None:
    """Run a node until SIGTERM or SIGINT (a second signal forces exit).

    Serves on uvloop when it is installed (``BEDS_EVENT_LOOP``: ``auto``, ``uvloop``, ``asyncio``).
    With more than one worker, supervises that many node processes (docs/deployment.md).
    """
    from beds.eventloop import choose_event_loop
    from beds.eventloop import run as run_on_loop
    from beds.log import configure_logging
    from beds.node import StartupError
    from beds.supervisor import WORKER_INDEX_VARIABLE

    config = load(config_path, role)
    if WORKER_INDEX_VARIABLE not in os.environ:  # a worker serves one node, whatever it says
        _supervise_if_many(config, config_path, role, workers)
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
    except Exception as exc:  # a bug: said in one line (and once with its traceback), exit 70
        report_bug(exc, "the node stopped on an unexpected error")
        sys.exit(EXIT_CRASHED)


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


def _supervise_if_many(
    config: Config, config_path: Path | None, role: str | None, workers: int | None
) -> None:
    """With more than one worker, supervise them and exit with the supervisor's code."""
    from beds.log import configure_logging
    from beds.supervisor import Policy, Supervisor, worker_command, worker_count, worker_environ

    try:
        count = worker_count(config, workers)
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    if count == 1:
        return
    configure_logging(config.log, node=f"{config.node.name}-supervisor")
    command = worker_command(str(config_path) if config_path is not None else None, role)
    logger.info("supervising {} workers", count)
    supervisor = Supervisor(
        count,
        lambda index: command,
        lambda index: worker_environ(config, index),
        Policy(drain_seconds=config.node.drain_seconds),
    )
    sys.exit(supervisor.run())
