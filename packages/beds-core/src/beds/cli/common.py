"""What every ``beds`` command shares: options, loading the config, errors, exit codes, JSON.

Exit codes (docs/cli.md): 0 success; 1 the operation failed (a start-up check, an error reply,
a timeout); 2 bad usage or bad configuration. A start-up failure caused by a
:class:`~beds.errors.ConfigError` (a ``[stores.*]`` table its adapter refuses) is bad
configuration, so it exits 2 like any other.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar

import attrs
import click
import orjson

from beds.errors import BedsError, ConfigError

if TYPE_CHECKING:
    from collections.abc import Coroutine, Sequence

    from beds.client import BedsClient
    from beds.config.model import Config
    from beds.node import Check

__all__ = (
    "EXIT_CONFIG",
    "EXIT_CRASHED",
    "EXIT_FAILED",
    "config_option",
    "echo_json",
    "exit_code_of",
    "fail",
    "json_option",
    "load",
    "make_client",
    "node_option",
    "plural",
    "quiet_logging",
    "run_async",
    "timeout_option",
    "url_option",
)

_T = TypeVar("_T")

EXIT_FAILED = 1
"""The operation failed: a start-up check, an error reply, a timeout, RabbitMQ unreachable."""
EXIT_CONFIG = 2
"""Bad usage or bad configuration."""
EXIT_CRASHED = 70
"""``beds run`` stopped on an unexpected error (a bug), not on a failed start-up check (1) or bad
configuration (2): a supervisor replaces such a worker (sysexits' ``EX_SOFTWARE``)."""

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Base config file (default: $BEDS_CONFIG, ./beds.toml, else the development default).",
)
node_option = click.option(
    "--node", "role", default=None, help="Node role to run (overrides node.role)."
)
url_option = click.option(
    "--url", default=None, help="AMQP URL (default: amqp.urls or amqp.url from the config)."
)
timeout_option = click.option(
    "--timeout", default=10.0, show_default=True, help="Seconds to wait for the reply."
)
json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document on stdout instead of text (errors still go to stderr).",
)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print ``beds: error: <message>`` on stderr and exit with ``code``."""
    click.echo(f"beds: error: {message}", err=True)
    sys.exit(code)


def _with_notes(error: BaseException) -> str:
    """The error and its notes (a ConfigError's other problems, a TOML line), one per line."""
    return f"{error}" + "".join(f"\n  {note}" for note in getattr(error, "__notes__", ()))


def load(config_path: Path | None, role: str | None = None) -> Config:
    """Load the configuration; a ConfigError exits 2 naming the file and the key."""
    from beds.config.loader import default_config_path, load_config

    try:
        return load_config(
            config_path if config_path is not None else default_config_path(), role=role
        )
    except ConfigError as exc:
        fail(_with_notes(exc), EXIT_CONFIG)


def exit_code_of(checks: Sequence[Check]) -> int:
    """2 if a start-up step failed on bad configuration (a ``ConfigError``), else 1.

    Args:
        checks: the checklist of a ``StartupError`` or of ``BedsNode.check()``.
    """
    config = any(isinstance(check.error, ConfigError) for check in checks)
    return EXIT_CONFIG if config else EXIT_FAILED


def echo_json(document: Any) -> None:
    """Print ``document`` as indented JSON (what every ``--json`` prints)."""
    click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


def quiet_logging(level: Literal["WARNING", "ERROR", "CRITICAL"] = "CRITICAL") -> None:
    """Log only at ``level`` and above, without tracebacks: a one-shot command's own output.

    A command prints its result and, on failure, one ``beds: error:`` line; a library's
    traceback in between (a store driver logging while it shuts down) is noise there.
    """
    from beds.config.model import LogSettings
    from beds.log import configure_logging

    configure_logging(LogSettings(level=level), tracebacks=False)


def run_async(work: Coroutine[Any, Any, _T]) -> _T:
    """Run ``work`` to completion; a BedsError exits 1 with its message."""
    try:
        return asyncio.run(work)
    except BedsError as exc:
        fail(str(exc))


def make_client(
    config: Config, url: str | None, timeout: float, token: str | None = None
) -> BedsClient:
    """A client of the configured environment, as the ``beds`` command calls it.

    Args:
        config: gives the brokers (``amqp.urls`` or ``amqp.url``), ``amqp.events_exchange``
            and ``node.env``.
        url: one AMQP URL instead of the configured brokers (``--url``).
        timeout: default seconds to wait for a reply (``--timeout``).
        token: the credential to send with every call (``--token``, ``BEDS_TOKEN`` or the
            token file of ``beds login``), or ``None`` for anonymous calls.
    """
    from beds.client import BedsClient  # imported when a command calls: keeps --help fast
    from beds.transport.tls import amqp_context

    # --url names one broker; else every broker of amqp.urls (or amqp.url), tried in turn.
    amqp = attrs.evolve(config.amqp, url=url, urls=()) if url else config.amqp
    return BedsClient(
        amqp.addresses,
        ssl_context=amqp_context(amqp),
        exchange=config.amqp.events_exchange,
        origin="cli",
        env=config.node.env,
        timeout=timeout,
        token=token,
    )


def plural(count: int, noun: str = "message") -> str:
    """``1 message``, ``2 messages``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
