"""The REL store's replicas (``stores.rel.secondaries``): where a ``secondary`` read goes.

A fetch with consistency ``secondary`` reads on a replica, chosen round-robin among those that
answer, and on the primary when none does. Each replica is up or down:

* up: reads take turns on it. A read that fails on it with ``StoreUnavailable`` (no connection,
  lost connection, refused login) marks it down and goes on to the next replica, then the
  primary: a read is never refused because a replica is away.
* down: reads skip it for ``replica_retry_seconds``. Then one read tries it first (and moves
  the next try on by another interval, so concurrent reads do not all try it); it is up again
  when that read is answered. A replica that is down therefore costs one read per interval one
  connection attempt, not every read a connect timeout.

Each change of state is logged once (a warning when a replica goes down, info when it answers
again), never once per read; :attr:`ReplicaSet.fallbacks` counts the reads the primary served
because no replica answered. Other errors (a missing object, a rejected call) are the replica's
answer and are raised as they are. Writes, journals, tickets and ``primary`` reads never come
here: they use the primary's pool.

The state machine does no I/O: the adapter passes :meth:`ReplicaSet.read` the call to make on a
replica's pool (``None``: the primary's), and owns the pools' life (:class:`Replica.pool`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TypeVar

import asyncmy
import attrs
from loguru import logger

from beds.errors import StoreUnavailable
from beds_rel.settings import RelSettings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from beds.errors import RequestError

__all__ = ("Replica", "ReplicaSet")

T = TypeVar("T")


@attrs.define(eq=False)
class Replica:
    """One replica: its settings, its connection pool and whether it answers."""

    settings: RelSettings
    pool: asyncmy.Pool | None = None
    """Its connection pool while the adapter is started (``None`` before and after)."""
    retry_at: float | None = None
    """``None`` while up; when down, the monotonic time from which a read tries it again."""

    @property
    def name(self) -> str:
        """``host:port``: what logs and checks call it (never the URL: it may hold a password)."""
        return f"{self.settings.host}:{self.settings.port}"

    @property
    def up(self) -> bool:
        """Whether the last read (or check) on it was answered."""
        return self.retry_at is None


class ReplicaSet:
    """The replicas of one REL connection, their health and the round-robin between them.

    Args:
        replicas: the settings of each replica (``RelSettings.secondaries``).
        retry_seconds: how long a replica that failed is skipped.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        replicas: Sequence[RelSettings],
        *,
        retry_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.replicas = tuple(Replica(settings) for settings in replicas)
        self.retry_seconds = retry_seconds
        self.fallbacks = 0
        """Reads the primary served because no replica answered (none when none is set)."""
        self._clock = clock
        self._turn = 0

    def candidates(self) -> list[Replica]:
        """The replicas one read tries, in order; claims the retries it hands out.

        A down replica whose retry is due comes first (its retry moves on by ``retry_seconds``,
        so the next read does not try it too), then the up ones, starting one further along
        each call (round-robin).
        """
        now = self._clock()
        due = [r for r in self.replicas if r.retry_at is not None and r.retry_at <= now]
        for replica in due:
            replica.retry_at = now + self.retry_seconds
        up = [r for r in self.replicas if r.up]
        if up:
            start = self._turn % len(up)
            self._turn += 1
            up = up[start:] + up[:start]
        return due + up

    def failed(self, replica: Replica, error: RequestError) -> None:
        """Mark ``replica`` down; say so once, when it was up."""
        was_up = replica.up
        replica.retry_at = self._clock() + self.retry_seconds
        if was_up:
            logger.warning(
                "REL replica {} ({}) is down: {}; secondary reads go to {} and try it again "
                "every {:g} s",
                replica.name,
                replica.settings.url_key,
                "; ".join((error.message, *error.details)),
                "the other replicas" if any(r.up for r in self.replicas) else "the primary",
                self.retry_seconds,
            )

    def answered(self, replica: Replica) -> None:
        """Mark ``replica`` up; say so once, when it was down."""
        if not replica.up:
            replica.retry_at = None
            logger.info(
                "REL replica {} ({}) answers again: secondary reads go to it",
                replica.name,
                replica.settings.url_key,
            )

    async def read(self, run: Callable[[Replica | None], Awaitable[T]]) -> T:
        """Run a read on a replica that answers, else on the primary.

        Args:
            run: the read, given the replica to run on (``None``: the primary).

        Returns:
            What the first replica (or the primary) that answered returned.

        Raises:
            RequestError: the primary's error when no replica answered, or the error of a
                replica that answered with one (anything but ``StoreUnavailable``).
        """
        for replica in self.candidates():
            try:
                result = await run(replica)
            except StoreUnavailable as exc:
                self.failed(replica, exc)
                continue
            self.answered(replica)
            return result
        if self.replicas:
            self.fallbacks += 1
        return await run(None)
