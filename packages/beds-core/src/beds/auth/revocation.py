"""Revoked sessions and subjects, held in memory, learnt from control events.

A logout revokes one session (``sid``); deactivating a user or changing a password revokes every
token of that subject issued before a moment (``sub`` + ``before``). Each entry is kept until
``until``, the last moment a token it refuses could still be valid, then dropped, so the set holds
only what still matters. Events travel on the control channel (kind ``auth.revoke``), which a
node that starts late replays (``control.replay_seconds``, longer than ``auth.token_ttl``), so it
learns every revocation still relevant. Checking a token is two dictionary look-ups.
"""

from __future__ import annotations

import heapq
import time
from typing import Any

__all__ = ("REVOKE_KIND", "Revocations")

REVOKE_KIND = "auth.revoke"
"""The control-event kind of a revocation: data ``{"sid"}`` or ``{"sub", "before"}``, and
``until``."""


class Revocations:
    """What is revoked now; fed by :meth:`apply` (control events) and :meth:`revoke_*`."""

    def __init__(self) -> None:
        self._sessions: dict[str, float] = {}
        self._subjects: dict[str, tuple[float, float]] = {}
        """sub → (tokens issued before this moment are revoked, until)."""
        self._expiry: list[tuple[float, str, str]] = []
        self.applied = 0
        """Revocation events applied (a metric)."""

    def revoke_session(self, session: str, *, until: float) -> None:
        """Refuse the tokens of ``session`` until ``until`` (Unix time)."""
        if until > self._sessions.get(session, 0):
            self._sessions[session] = until
            heapq.heappush(self._expiry, (until, "sid", session))

    def revoke_subject(self, subject: str, *, before: float, until: float) -> None:
        """Refuse ``subject``'s tokens issued before ``before``, until ``until``."""
        known = self._subjects.get(subject)
        if known is None or before > known[0] or until > known[1]:
            merged = (max(before, known[0]), max(until, known[1])) if known else (before, until)
            self._subjects[subject] = merged
            heapq.heappush(self._expiry, (merged[1], "sub", subject))

    def is_revoked(self, claims: dict[str, Any], *, now: float | None = None) -> bool:
        """Whether a token with ``claims`` (``sid``, ``sub``, ``iat``) is revoked."""
        self._prune(time.time() if now is None else now)
        session = claims.get("sid")
        if session and session in self._sessions:
            return True
        subject = self._subjects.get(claims.get("sub", ""))
        return subject is not None and float(claims.get("iat", 0)) < subject[0]

    def apply(self, data: dict[str, Any]) -> bool:
        """Apply a revocation event's data; return ``False`` (ignored) if it is malformed."""
        until = data.get("until")
        if not isinstance(until, int | float) or isinstance(until, bool):
            return False
        session, subject, before = data.get("sid"), data.get("sub"), data.get("before")
        if isinstance(session, str) and session:
            self.revoke_session(session, until=float(until))
            self.applied += 1
            return True
        if isinstance(subject, str) and subject and isinstance(before, int | float):
            self.revoke_subject(subject, before=float(before), until=float(until))
            self.applied += 1
            return True
        return False

    def __len__(self) -> int:
        return len(self._sessions) + len(self._subjects)

    def _prune(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            until, kind, name = heapq.heappop(self._expiry)
            if kind == "sid" and self._sessions.get(name) == until:
                del self._sessions[name]
            elif kind == "sub" and name in self._subjects and self._subjects[name][1] == until:
                del self._subjects[name]
