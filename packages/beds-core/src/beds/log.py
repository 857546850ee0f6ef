"""Logging for the ``beds`` command: loguru sinks, and stdlib logging routed into loguru.

The library itself never adds sinks (``beds/__init__`` disables the "beds" logger); an
application embedding BEDS calls :func:`configure_logging` or ``logger.enable("beds")``.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from loguru import logger

if TYPE_CHECKING:
    from beds.config.model import LogSettings

__all__ = ("configure_logging",)

_CONSOLE_FORMAT = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> <cyan>{name}</cyan> {message}"
)


class _InterceptHandler(logging.Handler):
    """Send stdlib log records (aiormq, asyncmy, pymongo) to loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


def configure_logging(settings: LogSettings) -> None:
    """Replace loguru's sinks with one on stderr in the configured format and level."""
    logger.remove()
    if settings.format == "json":
        logger.add(sys.stderr, level=settings.level, serialize=True)
    else:
        logger.add(sys.stderr, level=settings.level, format=_CONSOLE_FORMAT, colorize=None)
    logger.enable("beds")
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.WARNING, force=True)
