"""Logging for the ``beds`` command: loguru sinks, and stdlib logging routed into loguru.

Two formats (``[log] format``): ``console``, readable lines with the request's event id in
brackets, and ``json``, one JSON object per line (loguru's ``serialize``) whose
``record.extra.event_id`` is the request's event id (empty outside requests).

Colour: console lines are coloured only on a terminal, and never when the ``NO_COLOR``
environment variable is set to anything but an empty string (https://no-color.org).

The library itself never adds sinks (``beds/__init__`` disables the "beds" logger); an
application embedding BEDS calls :func:`configure_logging` or ``logger.enable("beds")``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from loguru import logger

if TYPE_CHECKING:
    from beds.config.model import LogSettings

__all__ = ("configure_logging", "no_color")

_CONSOLE_FORMAT = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> <cyan>{name}</cyan> "
    "{extra[event]}{message}\n"
)


def _console_format(record: Any) -> str:
    """Put the request's event id (bound while a broker handles it) in front of the message."""
    event_id = record["extra"].get("event_id")
    record["extra"]["event"] = f"[{event_id}] " if event_id else ""
    return _CONSOLE_FORMAT + "{exception}"


def _console_format_without_traceback(record: Any) -> str:
    """The console line alone: a one-shot command prints its own one-line error."""
    _console_format(record)
    return _CONSOLE_FORMAT


def no_color() -> bool:
    """Whether ``NO_COLOR`` asks for output without ANSI colours (set and not empty)."""
    return bool(os.environ.get("NO_COLOR"))


class _InterceptHandler(logging.Handler):
    """Send stdlib log records (aiormq, asyncmy, pymongo) to loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


def configure_logging(settings: LogSettings, *, tracebacks: bool = True) -> None:
    """Replace loguru's sinks with one on stderr in the configured format and level.

    Args:
        settings: the ``[log]`` settings.
        tracebacks: print a logged exception's traceback below its console line (JSON lines
            always carry it); the ``beds`` commands other than ``run`` turn it off.
    """
    logger.remove()
    # Every record carries event_id: the request's while a broker handles one, else "".
    logger.configure(extra={"event_id": ""})
    if settings.format == "json":
        logger.add(sys.stderr, level=settings.level, serialize=True)
    else:
        logger.add(
            sys.stderr,
            level=settings.level,
            format=_console_format if tracebacks else _console_format_without_traceback,
            colorize=False if no_color() else None,  # None: colour on a terminal only
        )
    logger.enable("beds")
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.WARNING, force=True)
