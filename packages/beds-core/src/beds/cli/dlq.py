"""``beds dlq``: the environment's dead-letter queue ``beds.{env}.dead``: list, replay, purge.

``replay`` and ``purge`` change the queue, so they ask first; with stdin not a terminal nobody
can answer, and without ``--yes`` they refuse (exit 2) and change nothing.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any, TypeVar

import click

from beds.cli.common import (
    EXIT_CONFIG,
    config_option,
    echo_json,
    fail,
    json_option,
    load,
    plural,
    quiet_logging,
    run_async,
)

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from pathlib import Path

    from beds.dlq import DeadLetter, ReplayResult

__all__ = ("dlq",)

_T = TypeVar("_T")

_yes_option = click.option(
    "--yes", is_flag=True, help="Do not ask for confirmation (needed when stdin is not a terminal)."
)


@click.group()
def dlq() -> None:
    """The environment's dead-letter queue (beds.{env}.dead): list, replay, purge."""


def _interactive() -> bool:
    """Whether a person can answer a confirmation prompt."""
    return sys.stdin is not None and sys.stdin.isatty()


def _require_consent(yes: bool, action: str) -> None:
    """Refuse (exit 2) to change the queue without --yes when nobody can be asked."""
    if not yes and not _interactive():
        fail(f"refusing to {action} without --yes: stdin is not a terminal", EXIT_CONFIG)


async def _confirm(question: str) -> None:
    """Ask on the terminal (in a thread, so the AMQP connection keeps its heartbeats)."""
    await asyncio.to_thread(click.confirm, question, abort=True)


def _run(work: Coroutine[Any, Any, _T]) -> _T:
    quiet_logging()
    return run_async(work)


@dlq.command("list")
@config_option
@click.option(
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Show at most this many messages, from the head of the queue.",
)
@json_option
def dlq_list(config_path: Path | None, limit: int, as_json: bool) -> None:
    """Show dead letters without removing them (they are requeued and marked redelivered)."""
    from beds.dlq import DeadLetterQueue, format_table

    config = load(config_path)

    async def peek() -> tuple[str, int, list[DeadLetter]]:
        async with DeadLetterQueue(config) as queue:
            depth = await queue.depth()
            return queue.queue, depth, await queue.peek(limit) if depth else []

    name, depth, letters = _run(peek())
    if as_json:
        echo_json(
            {"queue": name, "depth": depth, "messages": [letter.to_json() for letter in letters]}
        )
    elif not letters:
        click.echo(f"dead-letter queue {name} is empty")
    else:
        click.echo(f"{name}: {plural(depth)}, showing {len(letters)}")
        click.echo(format_table(letters))


@dlq.command("replay")
@config_option
@click.option(
    "--limit",
    default=None,
    type=click.IntRange(min=1),
    help="Replay at most this many messages (default: all).",
)
@click.option("--message-id", default=None, help="Replay only messages with this message_id.")
@click.option(
    "--deadline",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="Give replayed requests a new deadline this many seconds from now.",
)
@_yes_option
def dlq_replay(
    config_path: Path | None,
    limit: int | None,
    message_id: str | None,
    deadline: float | None,
    yes: bool,
) -> None:
    """Publish dead letters back to the events exchange with their original routing keys."""
    from beds.dlq import DeadLetterQueue

    config = load(config_path)
    _require_consent(yes, "replay")

    async def replay() -> tuple[str, str, ReplayResult | None]:
        async with DeadLetterQueue(config) as queue:
            depth = await queue.depth()
            if depth and not yes:
                selected = (
                    f"the messages with message id {message_id} (of {plural(depth)})"
                    if message_id is not None
                    else plural(depth if limit is None else min(limit, depth))
                )
                await _confirm(
                    f"Replay {selected} from {queue.queue} to exchange {queue.exchange}?"
                )
            result = (
                await queue.replay(limit=limit, message_id=message_id, deadline=deadline)
                if depth
                else None
            )
            return queue.queue, queue.exchange, result

    name, exchange, result = _run(replay())
    if result is None:
        click.echo(f"dead-letter queue {name} is empty")
        return
    _report_replay(result, name, exchange)
    if result.unroutable:
        fail(f"{plural(len(result.unroutable))} could not be routed and stayed in {name}")
    if message_id is not None and not result.replayed:
        fail(f"no message with message id {message_id} in {name}")


def _report_replay(result: ReplayResult, name: str, exchange: str) -> None:
    click.echo(f"replayed {plural(len(result.replayed))} to exchange {exchange}")
    for letter in result.unroutable:
        click.echo(
            f"not replayed (no queue is bound for {letter.routing_key or '(no routing key)'!r}): "
            f"message id {letter.message_id or '-'}"
        )
    for letter in result.executed:
        click.echo(
            f"not replayed (it ran; only its reply was lost, see `beds dlq list --json`): "
            f"message id {letter.message_id or '-'}"
        )
    click.echo(f"{plural(result.left)} left in {name}")


@dlq.command("purge")
@config_option
@_yes_option
def dlq_purge(config_path: Path | None, yes: bool) -> None:
    """Delete every message of the dead-letter queue."""
    from beds.dlq import DeadLetterQueue

    config = load(config_path)
    _require_consent(yes, "purge")

    async def purge() -> tuple[str, int]:
        async with DeadLetterQueue(config) as queue:
            depth = await queue.depth()
            if not depth:
                return queue.queue, 0
            if not yes:
                await _confirm(f"Delete {plural(depth)} from {queue.queue}? They are lost.")
            return queue.queue, await queue.purge()

    name, removed = _run(purge())
    if removed:
        click.echo(f"purged {plural(removed)} from {name}")
    else:
        click.echo(f"dead-letter queue {name} is empty")
