"""An embedded MongoDB wire server for development and demos: SecantusDB.

SecantusDB (PyPI ``secantusdb``, import ``secantus``) is GPL-licensed, so it is an optional
extra (``pip install 'beds-rec[embedded]'``), imported only when a node asks for it, and refused
in production mode. It runs standalone (no replica set): its replica-set oplog slows it to about
100 inserts per second after some 10,000 writes, and BEDS needs no transactions from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
from typing import TYPE_CHECKING, Any

from beds.errors import ConfigError, StoreUnavailable

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ("EmbeddedServer", "in_use_by", "open_embedded")

_STARTED: set[Path] = set()
"""Storage folders this process's embedded servers use (their storage engine locks them)."""
_FLOCK = "hhqqi"
"""``struct flock`` on Linux: type, whence, start, length, pid (native alignment)."""


def in_use_by(path: Path) -> int | None:
    """The process whose storage engine holds ``path`` (its ``WiredTiger.lock``), if any.

    Only asks (``F_GETLK``), never takes the lock. Closing a file drops every lock this process
    holds on it, so a folder this process uses itself is answered from ``_STARTED`` instead.
    """
    if path.resolve() in _STARTED:
        return os.getpid()
    lock = path / "WiredTiger.lock"
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return None  # no storage there yet, or not ours to read: the start will say
    try:
        probe = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        kind, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, probe))
    except OSError:
        return None
    finally:
        os.close(fd)
    return pid if kind != fcntl.F_UNLCK else None


class EmbeddedServer:
    """A SecantusDB server on 127.0.0.1 (a free port), storing its data in one folder."""

    def __init__(self, path: Path, server_class: Any) -> None:
        self.path = path
        self._server_class = server_class
        self._server: Any = None

    @property
    def uri(self) -> str:
        """The ``mongodb://`` URI of the running server."""
        if self._server is None:
            raise RuntimeError("the embedded server is not running")
        return str(self._server.uri)

    async def start(self) -> str:
        """Start the server (idempotent) and return its URI.

        Raises:
            StoreUnavailable: another process (a running ``beds run``) uses the folder.
        """
        if self._server is None:
            holder = in_use_by(self.path)
            if holder is not None:
                raise StoreUnavailable(
                    f"the embedded MongoDB folder {self.path} is in use by process {holder}, "
                    "probably a running node: stop it, or give this command another folder "
                    "(stores.rec.embedded_path) or that node's server (stores.rec.uri)"
                )
            # SecantusDB binds and starts its accept thread synchronously; keep the loop free.
            self._server = await asyncio.to_thread(self._start)
        return self.uri

    def _start(self) -> Any:
        self.path.mkdir(parents=True, exist_ok=True)
        server = self._server_class(
            host="127.0.0.1", port=0, storage_path=str(self.path), replica_set_name=None
        )
        server.start()
        _STARTED.add(self.path.resolve())
        return server

    async def stop(self) -> None:
        """Stop the server and close its storage; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(_stop, server)
            _STARTED.discard(self.path.resolve())


def _stop(server: Any) -> None:
    """Stop a SecantusDB server from this thread, cleanly.

    SecantusDB's ``Storage.close`` marks the store closed and then writes its oplog counters
    through the calling thread's storage session, which a fresh thread does not have yet and can
    no longer open: it logs a "Storage is closed" traceback on every shutdown (0.7.0b3). Opening
    the session first, in the thread that closes, lets the last write happen. Without the
    private ``_session`` (another version), the server stops as before.
    """
    open_session = getattr(getattr(server, "storage", None), "_session", None)
    if callable(open_session):
        with contextlib.suppress(Exception):
            open_session()
    server.stop()


def open_embedded(
    path: Path, *, production: bool, store: str = "rec", file: str | None = None
) -> EmbeddedServer:
    """Return an embedded server for ``path`` (not started), after checking it may be used.

    Args:
        path: the server's storage folder.
        production: whether the node runs in production mode.
        store: the store's name, for the key path in errors.
        file: the config file that set the store's table, for errors.

    Raises:
        ConfigError: in production mode, or when ``secantusdb`` is not installed.
    """
    key = f"stores.{store}.uri"
    if production:
        raise ConfigError(
            "the embedded MongoDB server is for development only; set a mongodb:// URI",
            file=file,
            key=key,
        )
    try:  # imported here: an optional GPL extra, never loaded unless asked for
        from secantus import SecantusDBServer
    except ImportError:
        raise ConfigError(
            "the embedded MongoDB server needs SecantusDB: pip install 'beds-rec[embedded]', "
            "or set a mongodb:// URI",
            file=file,
            key=key,
        ) from None
    return EmbeddedServer(path, SecantusDBServer)
