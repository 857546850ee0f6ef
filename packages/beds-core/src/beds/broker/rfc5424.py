"""Lineage events as syslog messages: their severity, and one RFC 5424 line per event.

A ``syslog`` broker (:mod:`beds.broker.syslog`) maps each event to a severity
(:func:`severity_of`), keeps those at or above ``syslog.level`` and formats each as one RFC 5424
message (:class:`Rfc5424`)::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [beds@32473 event_id="…" …] MSG

PRI is ``facility * 8 + severity``; TIMESTAMP the event's time (UTC, microseconds); HOSTNAME
this machine's; APP-NAME ``syslog.app_name``; PROCID this process; MSGID the event's kind; the
structured data names the event (``event_id``, ``node``, ``env``, ``template``, ``operation``,
``status``, ``code``; empty ones left out) and MSG says what happened in a few words.

Whatever an event holds, the line is well formed: header fields keep printable ASCII only,
parameter values escape ``"``, the backslash and ``]``, control characters (line breaks included)
become spaces or U+FFFD, so one event is one line, and the whole message stays within
``syslog.max_message_bytes`` (the text is cut first, then the parameter values). An audit
record's data (its ``before`` and ``after`` records) is never sent: only that it happened.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import socket
import unicodedata
from typing import TYPE_CHECKING, Final

import attrs

from beds.errors import HandlerStopped, ReplyUndeliverable, error_catalogue

if TYPE_CHECKING:
    from collections.abc import Iterable

    from beds.config.model import SyslogFacility, SyslogLevel, SyslogSettings
    from beds.lineage import Event

__all__ = ("FACILITIES", "SD_ID", "SEVERITIES", "Rfc5424", "at_level", "severity_of", "summary")

SEVERITIES: Final[dict[SyslogLevel, int]] = {
    "emerg": 0,
    "alert": 1,
    "crit": 2,
    "err": 3,
    "warning": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}
"""RFC 5424 severities: the smaller, the more severe."""

FACILITIES: Final[dict[SyslogFacility, int]] = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "local0": 16,
    "local1": 17,
    "local2": 18,
    "local3": 19,
    "local4": 20,
    "local5": 21,
    "local6": 22,
    "local7": 23,
}
"""RFC 5424 facilities by their usual names."""

SD_ID: Final = "beds@32473"
"""The structured data's id: a private name needs ``@`` and an IANA enterprise number; BEDS has
none, so it uses 32473, the number IANA reserves for examples (RFC 5612)."""

_CRIT, _ERR, _WARNING, _NOTICE, _INFO, _DEBUG = 2, 3, 4, 5, 6, 7
_LOG_LEVELS: Final = {
    "TRACE": _DEBUG,
    "DEBUG": _DEBUG,
    "INFO": _INFO,
    "SUCCESS": _NOTICE,
    "WARNING": _WARNING,
    "ERROR": _ERR,
    "CRITICAL": _CRIT,
}
"""A log record's event carries its loguru level in ``code``."""
_DEAD_LETTERED: Final = frozenset({HandlerStopped.CODE, ReplyUndeliverable.CODE})
"""Codes of requests the broker settles by dead-lettering them (with the transient ones)."""


@functools.lru_cache(maxsize=256)
def _error_status(code: str) -> tuple[int, bool]:
    """The status of an error code and whether its request was dead-lettered (unknown: 500)."""
    kind = error_catalogue().get(code)
    if kind is None:
        return 500, False
    return kind.STATUS, kind.TRANSIENT or code in _DEAD_LETTERED


def severity_of(event: Event) -> int:
    """The syslog severity of an event (docs/telemetry.md, "Syslog", has the table).

    A request: ``crit`` if it was dead-lettered (a transient failure still failing after its
    retries, a handler stopped past its budget, an undeliverable reply), ``err`` for any other
    5xx, ``warning`` for a 4xx, ``info`` otherwise; an HTTP request an edge forwarded the same.
    A database call: by its error's status (``err``, ``warning``), ``debug`` when it succeeded.
    A log record: by its level. An audit record: ``notice``.
    """
    kind, code = event.kind, event.code
    if kind == "audit":
        return _NOTICE
    if kind == "log":
        return _LOG_LEVELS.get(code, _INFO)
    status, dead_lettered = _error_status(code) if code else (event.status, False)
    if kind in ("request", "http"):
        if dead_lettered:
            return _CRIT
        status = event.status or status
    elif not code:
        return _DEBUG  # a database call that succeeded
    if status >= 500:
        return _ERR
    if status >= 400:
        return _WARNING
    return _INFO


def at_level(events: Iterable[Event], threshold: int) -> list[tuple[Event, int]]:
    """The events at least as severe as ``threshold`` (a severity number), with their severity."""
    kept = []
    for event in events:
        severity = severity_of(event)
        if severity <= threshold:
            kept.append((event, severity))
    return kept


def summary(event: Event) -> str:
    """What happened, in a few words: the message's text (never an audit record's data)."""
    if event.kind == "request":
        code = f" {event.code}" if event.code else ""
        what = f"{event.operation or '?'} {event.template or '?'}"
        return f"{what} answered {event.status}{code}"
    if event.kind == "http":  # method, route template: never a query string
        code = f" {event.code}" if event.code else ""
        return f"{event.operation} {event.message} answered {event.status}{code}"
    if event.kind == "db":
        return f"{event.message} failed {event.code}" if event.code else event.message
    if event.kind == "audit":
        return f"audit {event.operation} {event.template}"
    return event.message


_SPACES: Final = frozenset("\t\n\v\f\r\x1c\x1d\x1e\x1f\x85\u2028\u2029")
_HOSTNAME_MAX: Final = 64
"""Bytes of HOSTNAME kept (Linux host names are at most 64; RFC 5424 allows 255)."""
_PROCID_MAX: Final = 32
"""Bytes of PROCID kept (this process's id; RFC 5424 allows 128)."""
_MSGID_MAX: Final = 32
_VALUE_MAX: Final = 192
"""Bytes of a parameter value kept, before escaping; halved while the header is too long."""
_VALUE_MIN: Final = 8
_BOM: Final = b"\xef\xbb\xbf"
_NIL: Final = "-"


def _token(text: str, limit: int) -> str:
    """A header field: printable US-ASCII only (others become ``_``), at most ``limit``."""
    kept = "".join(c if "!" <= c <= "~" else "_" for c in text[:limit])
    return kept or _NIL


def _printable(text: str) -> str:
    """``text`` without control characters: spaces for line breaks and tabs, U+FFFD for others."""
    if text.isprintable():
        return text
    return "".join(
        " " if c in _SPACES else "\ufffd" if unicodedata.category(c)[0] == "C" else c for c in text
    )


def _cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, at a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: max(limit, 0)].decode("utf-8", errors="ignore")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _timestamp(at: float) -> str:
    try:
        moment = dt.datetime.fromtimestamp(at, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return _NIL  # no such time: RFC 5424's NILVALUE
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


@attrs.frozen(kw_only=True)
class Rfc5424:
    """Formats events as RFC 5424 messages of one sender (its facility, names and size bound)."""

    facility: int
    app_name: str = "beds"
    hostname: str = attrs.field(factory=socket.gethostname)
    procid: str = attrs.field(factory=lambda: str(os.getpid()))
    max_bytes: int = 2048

    @classmethod
    def from_settings(cls, settings: SyslogSettings) -> Rfc5424:
        """The formatter ``[syslog]`` describes, with this machine's host name and process."""
        return cls(
            facility=FACILITIES[settings.facility],
            app_name=settings.app_name,
            max_bytes=settings.max_message_bytes,
        )

    def format(self, event: Event, severity: int) -> bytes:
        """One message: no line break in it, at most ``max_bytes`` bytes."""
        params = (
            ("event_id", event.event_id),
            ("node", event.node),
            ("env", event.env),
            ("template", event.template),
            ("operation", event.operation),
            ("status", str(event.status) if event.status else ""),
            ("code", event.code),
        )
        values = [(name, _printable(value)) for name, value in params if value]
        header = " ".join(
            (
                f"<{self.facility * 8 + severity}>1",
                _timestamp(event.at),
                _token(self.hostname, _HOSTNAME_MAX),
                _token(self.app_name, 48),
                _token(self.procid, _PROCID_MAX),
                _token(event.kind, _MSGID_MAX),
            )
        )
        limit = _VALUE_MAX
        while True:
            data = " ".join(f'{name}="{_escape(_cut(value, limit))}"' for name, value in values)
            head = f"{header} [{SD_ID} {data}]".encode() if data else f"{header} -".encode()
            if len(head) < self.max_bytes or limit <= _VALUE_MIN:
                break
            limit //= 2
        return head + self._text(summary(event), self.max_bytes - len(head))

    @staticmethod
    def _text(text: str, room: int) -> bytes:
        """`` MSG`` within ``room`` bytes (nothing if it does not fit or is empty)."""
        body = _printable(text).strip()
        if body.isascii():
            encoded = _cut(body, room - 1).encode("utf-8")
            return b" " + encoded if encoded else b""
        # RFC 5424: a UTF-8 MSG starts with a byte order mark.
        encoded = _cut(body, room - 1 - len(_BOM)).encode("utf-8")
        return b" " + _BOM + encoded if encoded else b""
