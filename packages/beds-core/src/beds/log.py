"""Logging for the ``beds`` command: loguru sinks, and stdlib logging routed into loguru.

Two formats (``[log] format``): ``console``, readable lines with the request's event id in
brackets, and ``json``, one flat JSON object per line with the keys of :data:`JSON_KEYS`
(docs/configuration.md, "Log lines").

Records of stdlib loggers (aiormq, asyncmy, pymongo) are routed into loguru under their own
logger names (``aiormq.connection``), at WARNING and above.

Tracebacks never show variable values unless ``BEDS_LOG_DIAGNOSE=1`` asks for them (loguru's
``diagnose``, for development only: the values may hold passwords and personal data).

Colour: console lines are coloured only on a terminal, and never when the ``NO_COLOR``
environment variable is set to anything but an empty string (https://no-color.org).

The library itself never adds sinks (``beds/__init__`` disables the "beds" logger); an
application embedding BEDS calls :func:`configure_logging` or ``logger.enable("beds")``.
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any

import orjson
from loguru import logger

if TYPE_CHECKING:
    from loguru import Message, Record

    from beds.config.model import LogSettings

__all__ = ("DIAGNOSE_VARIABLE", "JSON_KEYS", "configure_logging", "json_line", "no_color")

DIAGNOSE_VARIABLE = "BEDS_LOG_DIAGNOSE"
"""Set to ``1`` to show variable values in logged tracebacks (development only)."""

JSON_KEYS = ("time", "level", "logger", "message", "event_id", "node", "template", "exception")
"""The keys of a JSON log line, in order. ``time``, ``level``, ``logger``, ``message`` and
``event_id`` are always there; ``node`` when the node's name is known, ``template`` when the
request's template is bound to the record (``logger.contextualize(template=...)``) and
``exception`` when an exception is logged."""

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


def json_line(record: Record, node: str = "") -> str:
    """One log record as a flat JSON object on one line (the keys of :data:`JSON_KEYS`).

    The exception, when there is one, is the plain traceback text: no variable values.
    """
    extra = record["extra"]
    time = record["time"].astimezone(dt.UTC).isoformat(timespec="milliseconds")
    line: dict[str, str] = {
        "time": time.replace("+00:00", "Z"),
        "level": record["level"].name,
        "logger": record["name"] or "",
        "message": record["message"],
        "event_id": str(extra.get("event_id") or ""),
    }
    if node:
        line["node"] = node
    if extra.get("template"):
        line["template"] = str(extra["template"])
    error = record["exception"]
    if error is not None and error.type is not None:
        line["exception"] = "".join(
            traceback.format_exception(error.type, error.value, error.traceback)
        ).rstrip("\n")
    return orjson.dumps(line, default=str).decode() + "\n"


def _bare(record: Any) -> str:
    return "{message}"


class _JsonSink:
    """Write each record as one JSON line on the current ``sys.stderr``."""

    def __init__(self, node: str) -> None:
        self.node = node

    def __call__(self, message: Message) -> None:
        stream = sys.stderr
        stream.write(json_line(message.record, self.node))
        stream.flush()


def no_color() -> bool:
    """Whether ``NO_COLOR`` asks for output without ANSI colours (set and not empty)."""
    return bool(os.environ.get("NO_COLOR"))


def diagnose_requested() -> bool:
    """Whether ``BEDS_LOG_DIAGNOSE=1`` asks for variable values in tracebacks."""
    return os.environ.get(DIAGNOSE_VARIABLE) == "1"


class _InterceptHandler(logging.Handler):
    """Send stdlib log records (aiormq, asyncmy, pymongo) to loguru, under their own names."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        # The caller's frame (for function and line): the first outside the logging module.
        frame, depth = inspect.currentframe(), 0
        while frame is not None and (depth == 0 or frame.f_code.co_filename == logging.__file__):
            frame = frame.f_back
            depth += 1
        name = record.name

        def rename(loguru_record: Record) -> None:
            loguru_record["name"] = name

        logger.patch(rename).opt(depth=depth, exception=record.exc_info).log(
            level, record.getMessage()
        )


def configure_logging(
    settings: LogSettings,
    *,
    tracebacks: bool = True,
    node: str = "",
    diagnose: bool | None = None,
) -> None:
    """Replace loguru's sinks with one on stderr in the configured format and level.

    Args:
        settings: the ``[log]`` settings.
        tracebacks: print a logged exception's traceback below its console line (JSON lines
            always carry it); the ``beds`` commands other than ``run`` turn it off.
        node: the node's name, the ``node`` key of JSON lines (left out when empty).
        diagnose: show variable values in console tracebacks (loguru's ``diagnose``); None
            (the default) reads ``BEDS_LOG_DIAGNOSE``. Development only: values may be secrets.
    """
    logger.remove()
    # Every record carries event_id: the request's while a broker handles one, else "".
    logger.configure(extra={"event_id": ""})
    if settings.format == "json":
        # The sink formats the record itself (no variable values): loguru formats nothing.
        logger.add(_JsonSink(node), level=settings.level, format=_bare, diagnose=False)
    else:
        logger.add(
            sys.stderr,
            level=settings.level,
            format=_console_format if tracebacks else _console_format_without_traceback,
            colorize=False if no_color() else None,  # None: colour on a terminal only
            diagnose=diagnose_requested() if diagnose is None else diagnose,
        )
    logger.enable("beds")
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.WARNING, force=True)
