"""Report unexpected exceptions on the hot path: one line each, one traceback per failure site.

A bug that one kind of message triggers would otherwise print a traceback per message: a flood
that buries everything else in the log (and, with loguru's ``diagnose``, the variables of every
frame). :func:`report_bug` logs one ERROR line per occurrence, with the exception's type and
message, and the traceback once per distinct failure site (exception type, file and line) at
DEBUG, where a developer who turns DEBUG on finds it.
"""

from __future__ import annotations

from typing import Any, Final

from loguru import logger

__all__ = ("report_bug",)

_MAX_SITES: Final = 1024
_seen: set[tuple[str, str, int]] = set()


def _site(exc: BaseException) -> tuple[str, str, int]:
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    if frame is None:
        return (type(exc).__qualname__, "", 0)
    return (type(exc).__qualname__, frame.tb_frame.f_code.co_filename, frame.tb_lineno)


def report_bug(exc: BaseException, message: str, *args: Any, event_id: str = "") -> None:
    """Log ``message`` (``str.format`` style) with the exception, as described above."""
    site = _site(exc)
    if site not in _seen and len(_seen) < _MAX_SITES:
        _seen.add(site)
        logger.opt(exception=exc).bind(event_id=event_id).debug(
            "first failure at {}:{}", site[1], site[2]
        )
    text = str(exc)
    logger.bind(event_id=event_id).error(
        message + " ({}: {})", *args, type(exc).__name__, text[:200] if text else "-"
    )
