"""The ``beds`` command (click): run, call, check, templates, plugins, schema apply, dlq.

Exit codes: 0 success; 1 the operation failed (start-up check, error reply, timeout);
2 bad usage or bad configuration.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
import orjson
from loguru import logger

from beds.codec import converter
from beds.config.loader import default_config_path, load_config
from beds.config.model import Config, LogSettings
from beds.envelopes import MAX_DEPTH, Operation
from beds.errors import BedsError, ConfigError, PublishError
from beds.eventloop import choose_event_loop
from beds.eventloop import run as run_on_loop
from beds.log import configure_logging
from beds.node import BedsNode, StartupError

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from beds.client import BedsClient

__all__ = ("main",)

_T = TypeVar("_T")

_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Base config file (default: $BEDS_CONFIG, ./beds.toml, else the development default).",
)
_node_option = click.option(
    "--node", "role", default=None, help="Node role to run (overrides node.role)."
)


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"beds: error: {message}", err=True)
    sys.exit(code)


def _load(config_path: Path | None, role: str | None = None) -> Config:
    try:
        return load_config(
            config_path if config_path is not None else default_config_path(), role=role
        )
    except ConfigError as exc:
        notes = "".join(f"\n  {note}" for note in getattr(exc, "__notes__", ()))
        _fail(f"{exc}{notes}", 2)


def _client(config: Config, url: str | None, timeout: float) -> BedsClient:
    """A client of the configured environment, as the ``beds`` command calls it."""
    from beds.client import BedsClient  # imported when a command calls: keeps --help fast

    return BedsClient(
        url or config.amqp.url,
        exchange=config.amqp.events_exchange,
        origin="cli",
        env=config.node.env,
        timeout=timeout,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="beds-core", prog_name="beds")
def cli() -> None:
    """BEDS: AMQP-first data back ends. Every data operation goes through RabbitMQ."""


@cli.command()
@_config_option
@_node_option
def run(config_path: Path | None, role: str | None) -> None:
    """Run a node until SIGTERM or SIGINT (a second signal forces exit).

    Serves on uvloop when it is installed (``BEDS_EVENT_LOOP``: ``auto``, ``uvloop``, ``asyncio``).
    """
    config = _load(config_path, role)
    try:
        loop = choose_event_loop()
    except ConfigError as exc:
        _fail(str(exc), 2)
    configure_logging(config.log)
    logger.info("serving on the {} event loop", loop)
    try:
        run_on_loop(_serve(config), loop)
    except StartupError as exc:
        _fail(str(exc))


async def _serve(config: Config) -> None:
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


@cli.command()
@click.argument("template")
@click.argument("operation", type=click.Choice([op.value for op in Operation]))
@click.argument("payload", required=False, default="{}")
@_config_option
@click.option("--url", default=None, help="AMQP URL (default: amqp.url from the config).")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for the reply.")
@click.option("--principal", default=None, help="Principal to send with the request.")
@click.option("--idempotency-key", default=None, help="Idempotency key for a write.")
@click.option(
    "--parent-id",
    default="",
    help="Event id of an existing request: this one joins its lineage tree as a child.",
)
@click.option(
    "--depth",
    type=click.IntRange(0, MAX_DEPTH),
    default=None,
    help="Depth in the tree (default: 1 with --parent-id, else 0).",
)
def call(
    template: str,
    operation: str,
    payload: str,
    config_path: Path | None,
    url: str | None,
    timeout: float,
    principal: str | None,
    idempotency_key: str | None,
    parent_id: str,
    depth: int | None,
) -> None:
    """Send one request and print the response envelope as JSON.

    PAYLOAD is a JSON object: a record (create, update), a key (delete) or
    {"query": ..., "params": {...}, "limit": n} (fetch). Exits 1 on an error response.
    """
    try:
        body: Any = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        _fail(f"PAYLOAD is not valid JSON: {exc}", 2)
    if not isinstance(body, dict):
        _fail("PAYLOAD must be a JSON object", 2)
    config = _load(config_path)
    configure_logging(LogSettings(level="CRITICAL"))

    async def send() -> Any:
        async with _client(config, url, timeout) as client:
            return await client.call(
                template,
                operation,
                body,
                principal=principal,
                idempotency_key=idempotency_key,
                parent_id=parent_id,
                depth=depth,
            )

    try:
        response = asyncio.run(send())
    except BedsError as exc:
        _fail(str(exc))
    click.echo(orjson.dumps(converter.unstructure(response), option=orjson.OPT_INDENT_2).decode())
    if not response.ok:
        sys.exit(1)


@cli.command()
@click.argument("event_id")
@_config_option
@click.option("--url", default=None, help="AMQP URL (default: amqp.url from the config).")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for the reply.")
@click.option("--json", "as_json", is_flag=True, help="Print the events as JSON.")
def lineage(
    event_id: str, config_path: Path | None, url: str | None, timeout: float, as_json: bool
) -> None:
    """Print the tree of events EVENT_ID belongs to, with timings (from the admin node)."""
    from beds.lineage import LINEAGE_TEMPLATE, Event, format_tree

    config = _load(config_path)
    configure_logging(LogSettings(level="CRITICAL"))

    async def ask() -> Any:
        async with _client(config, url, timeout) as client:
            return await client.fetch(LINEAGE_TEMPLATE, params={"event_id": event_id})

    try:
        records = asyncio.run(ask())
    except PublishError:
        _fail("no admin node serves lineage here (nothing is bound to *.admin): start one")
    except BedsError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(orjson.dumps(records, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(format_tree([Event.from_record(record) for record in records]))


@cli.command()
@_config_option
@_node_option
def check(config_path: Path | None, role: str | None) -> None:
    """Run the start-up checks without serving and print the checklist."""
    config = _load(config_path, role)
    configure_logging(LogSettings(level="CRITICAL"))
    checks = asyncio.run(BedsNode(config).check())
    marks = {"ok": "ok  ", "warning": "WARN", "failed": "FAIL"}
    for item in checks:
        line = f"[{marks[item.status]}] {item.name}"
        click.echo(f"{line}: {item.detail}" if item.detail else line)
    if any(item.status != "ok" for item in checks):
        sys.exit(1)


@cli.command()
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def templates(config_path: Path | None, as_json: bool) -> None:
    """List installed templates with their store and distribution."""
    node = BedsNode(_load(config_path))
    configure_logging(LogSettings(level="ERROR"))
    try:
        node.load_plugins()
    except StartupError as exc:
        _fail(str(exc))
    assert node.registry is not None
    rows = [
        {
            "name": t.name,
            "store": t.store,
            "tla": t.tla,
            "distribution": t.distribution,
            "source": t.source,
        }
        for t in sorted(node.registry.templates.values(), key=lambda t: t.name)
    ]
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{'TEMPLATE':<24} {'STORE':<6} {'TLA':<4} DISTRIBUTION")
    for row in rows:
        click.echo(f"{row['name']:<24} {row['store']:<6} {row['tla']:<4} {row['distribution']}")


@cli.command()
@_config_option
def plugins(config_path: Path | None) -> None:
    """List loaded plugins with their distribution, version and hooks."""
    from beds.plugins import Hooks, make_plugin_manager

    config = _load(config_path)
    try:
        hooks = Hooks(
            make_plugin_manager(disabled=config.plugins.disabled, strict=config.production)
        )
    except BedsError as exc:
        _fail(str(exc))
    for info in hooks.plugins():
        click.echo(f"{info.name:<10} {info.distribution} {info.version}  [{', '.join(info.hooks)}]")


@cli.group()
def schema() -> None:
    """DBA schema shipped by template packages (development databases)."""


@schema.command("apply")
@_config_option
def schema_apply(config_path: Path | None) -> None:
    """Install the schema of every installed template package into the configured stores."""
    config = _load(config_path)
    if config.production:
        _fail("schema apply is for development databases; in production the DBA installs schema", 2)
    configure_logging(LogSettings(level="WARNING"))
    node = BedsNode(config)

    async def apply() -> list[str]:
        applied: list[str] = []
        try:
            node.load_plugins()
            assert node.registry is not None
            for store, adapter in sorted(node.adapters.items()):
                files = node.registry.schema.get(store, [])
                if files:
                    applied += [f"{store}: {name}" for name in await adapter.apply_schema(files)]
        finally:
            for adapter in node.adapters.values():
                await adapter.aclose()
        return applied

    try:
        for line in asyncio.run(apply()):
            click.echo(f"applied {line}")
    except (BedsError, StartupError) as exc:
        _fail(str(exc))


@cli.group()
def dlq() -> None:
    """The environment's dead-letter queue (beds.{env}.dead): list, replay, purge."""


_yes_option = click.option(
    "--yes", is_flag=True, help="Do not ask for confirmation (needed when stdin is not a terminal)."
)


def _dlq_interactive() -> bool:
    """Whether a person can answer a confirmation prompt."""
    return sys.stdin is not None and sys.stdin.isatty()


def _dlq_require_consent(yes: bool, action: str) -> None:
    """Refuse (exit 2) to change the queue without --yes when nobody can be asked."""
    if not yes and not _dlq_interactive():
        _fail(f"refusing to {action} without --yes: stdin is not a terminal", 2)


async def _dlq_confirm(question: str) -> None:
    """Ask on the terminal (in a thread, so the AMQP connection keeps its heartbeats)."""
    await asyncio.to_thread(click.confirm, question, abort=True)


def _dlq_run(work: Coroutine[Any, Any, _T]) -> _T:
    configure_logging(LogSettings(level="CRITICAL"))
    try:
        return asyncio.run(work)
    except BedsError as exc:
        _fail(str(exc))


def _plural(count: int, noun: str = "message") -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@dlq.command("list")
@_config_option
@click.option(
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Show at most this many messages, from the head of the queue.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def dlq_list(config_path: Path | None, limit: int, as_json: bool) -> None:
    """Show dead letters without removing them (they are requeued and marked redelivered)."""
    from beds.dlq import DeadLetter, DeadLetterQueue, format_table

    config = _load(config_path)

    async def peek() -> tuple[str, int, list[DeadLetter]]:
        async with DeadLetterQueue(config) as queue:
            depth = await queue.depth()
            return queue.queue, depth, await queue.peek(limit) if depth else []

    name, depth, letters = _dlq_run(peek())
    if as_json:
        document = {
            "queue": name,
            "depth": depth,
            "messages": [letter.to_json() for letter in letters],
        }
        click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    elif not letters:
        click.echo(f"dead-letter queue {name} is empty")
    else:
        click.echo(f"{name}: {_plural(depth)}, showing {len(letters)}")
        click.echo(format_table(letters))


@dlq.command("replay")
@_config_option
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
    from beds.dlq import DeadLetterQueue, ReplayResult

    config = _load(config_path)
    _dlq_require_consent(yes, "replay")

    async def replay() -> tuple[str, str, ReplayResult | None]:
        async with DeadLetterQueue(config) as queue:
            depth = await queue.depth()
            if depth and not yes:
                selected = (
                    f"the messages with message id {message_id} (of {_plural(depth)})"
                    if message_id is not None
                    else _plural(depth if limit is None else min(limit, depth))
                )
                await _dlq_confirm(
                    f"Replay {selected} from {queue.queue} to exchange {queue.exchange}?"
                )
            result = (
                await queue.replay(limit=limit, message_id=message_id, deadline=deadline)
                if depth
                else None
            )
            return queue.queue, queue.exchange, result

    name, exchange, result = _dlq_run(replay())
    if result is None:
        click.echo(f"dead-letter queue {name} is empty")
        return
    click.echo(f"replayed {_plural(len(result.replayed))} to exchange {exchange}")
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
    click.echo(f"{_plural(result.left)} left in {name}")
    if result.unroutable:
        _fail(f"{_plural(len(result.unroutable))} could not be routed and stayed in {name}")
    if message_id is not None and not result.replayed:
        _fail(f"no message with message id {message_id} in {name}")


@dlq.command("purge")
@_config_option
@_yes_option
def dlq_purge(config_path: Path | None, yes: bool) -> None:
    """Delete every message of the dead-letter queue."""
    from beds.dlq import DeadLetterQueue

    config = _load(config_path)
    _dlq_require_consent(yes, "purge")

    async def purge() -> tuple[str, int]:
        async with DeadLetterQueue(config) as queue:
            depth = await queue.depth()
            if not depth:
                return queue.queue, 0
            if not yes:
                await _dlq_confirm(f"Delete {_plural(depth)} from {queue.queue}? They are lost.")
            return queue.queue, await queue.purge()

    name, removed = _dlq_run(purge())
    if removed:
        click.echo(f"purged {_plural(removed)} from {name}")
    else:
        click.echo(f"dead-letter queue {name} is empty")


@cli.command()
@_config_option
@click.option(
    "--url",
    default=None,
    help="The node's telemetry URL, such as http://127.0.0.1:9464 "
    "(default: telemetry.host and telemetry.port from the config).",
)
@click.option(
    "--watch",
    type=click.FloatRange(min=0.1),
    default=None,
    metavar="SECONDS",
    help="Print the status again every SECONDS until interrupted.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the /status JSON document.")
def status(config_path: Path | None, url: str | None, watch: float | None, as_json: bool) -> None:
    """Print the live status of a running node (from its telemetry endpoint /status)."""
    import time

    from beds.telemetry.status import fetch_status, format_status, status_url

    try:
        target = status_url(url, None if url is not None else _load(config_path).telemetry)
    except ConfigError as exc:
        _fail(str(exc), 2)

    def render() -> str:
        document = fetch_status(target)
        if as_json:
            return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()
        return format_status(document)

    if watch is None:
        try:
            click.echo(render())
        except BedsError as exc:
            _fail(str(exc))
        return
    try:
        while True:
            try:
                text = render()
            except BedsError as exc:
                text = f"beds: error: {exc}"
            click.clear()
            click.echo(f"{target}, every {watch:g} s (Ctrl-C stops)\n\n{text}")
            time.sleep(watch)
    except KeyboardInterrupt:
        pass


def main() -> None:
    """Entry point of the ``beds`` command."""
    cli()
