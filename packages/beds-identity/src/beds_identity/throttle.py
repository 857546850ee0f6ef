"""Failed logins, counted per handle and per origin, so guessing is refused before it costs.

Each node counts its own failures in memory (a sliding window of ``[auth.throttle]``): a
caller spreading guesses over many nodes gets ``attempts`` per node. The count is checked
before any password hash is computed, so a flood of guesses costs a dictionary look-up each.
"""

from __future__ import annotations

import time
from collections import deque

from beds.errors import TooManyAttempts

__all__ = ("Throttle",)

_MAX_TRACKED = 100_000
"""Most handles and origins remembered; the oldest are forgotten first (memory stays bounded)."""


class Throttle:
    """Counts failures by key (``handle:ann``, ``origin:web``) within a sliding window."""

    def __init__(self, *, attempts: int, window: float) -> None:
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self.refused = 0
        """Logins refused before any hash was computed (a metric)."""

    def check(self, *keys: str, now: float | None = None) -> None:
        """Refuse if any key has ``attempts`` failures within the window.

        Raises:
            TooManyAttempts: with the seconds until the oldest counted failure expires.
        """
        now = time.monotonic() if now is None else now
        wait = 0.0
        for key in keys:
            failures = self._recent(key, now)
            if failures is not None and len(failures) >= self.attempts:
                wait = max(wait, failures[0] + self.window - now)
        if wait > 0:
            self.refused += 1
            raise TooManyAttempts("too many failed logins; try again later", retry_after=wait)

    def failed(self, *keys: str, now: float | None = None) -> None:
        """Count one failure for each key."""
        now = time.monotonic() if now is None else now
        for key in keys:
            failures = self._recent(key, now)
            if failures is None:
                if len(self._failures) >= _MAX_TRACKED:
                    self._failures.pop(next(iter(self._failures)))
                failures = self._failures[key] = deque()
            failures.append(now)
            while len(failures) > self.attempts:
                failures.popleft()

    def attempt(self, *keys: str, now: float | None = None) -> None:
        """Check, then count this attempt as failed until :meth:`succeeded` says otherwise.

        Counting it before the password is verified holds back concurrent guesses too: a
        burst that arrives together cannot all pass the check while the first ones are
        still being verified.

        Raises:
            TooManyAttempts: as :meth:`check`.
        """
        self.check(*keys, now=now)
        self.failed(*keys, now=now)

    def succeeded(self, handle: str, *others: str) -> None:
        """The attempt counted for these keys was right.

        Forgets the handle's failures and takes the attempt back from the other keys (the
        origin).
        """
        self._failures.pop(handle, None)
        for key in others:
            failures = self._failures.get(key)
            if failures:
                failures.pop()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        # The same sum as check's wait: a failure counts exactly while its wait is above 0.
        while failures and failures[0] + self.window - now <= 0:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures
