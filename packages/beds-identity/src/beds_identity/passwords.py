"""Password hashes: argon2id with the parameters of ``[auth.passwords]``.

Hashing and verifying take tens of milliseconds of CPU on purpose, so they run in a worker
thread: the node's event loop keeps serving other requests meanwhile.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

if TYPE_CHECKING:
    from beds.config.model import PasswordSettings

__all__ = ("Passwords",)


class Passwords:
    """Hash and verify passwords; tell when a hash was made with older parameters."""

    def __init__(self, settings: PasswordSettings) -> None:
        self.min_length = settings.min_length
        self._hasher = PasswordHasher(
            time_cost=settings.time_cost,
            memory_cost=settings.memory_kib,
            parallelism=settings.parallelism,
        )
        # Verified against when the handle is unknown, so that answer takes as long as a
        # wrong password (a caller cannot tell which handles exist by timing).
        self._decoy = self._hasher.hash("not a password of anyone")

    async def hash(self, password: str) -> str:
        """The argon2id hash of ``password``."""
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, hashed: str | None, password: str) -> bool:
        """Whether ``password`` matches ``hashed`` (``None``: no such user; always ``False``)."""
        try:
            await asyncio.to_thread(self._hasher.verify, hashed or self._decoy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return hashed is not None

    def needs_rehash(self, hashed: str) -> bool:
        """Whether ``hashed`` was made with other parameters than today's."""
        return self._hasher.check_needs_rehash(hashed)
