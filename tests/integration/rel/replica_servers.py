"""A throwaway MariaDB primary (binary log on) and its replica, on loopback ports.

The session's MariaDB has no binary log, so the REL replica tests start their own pair with
:func:`replica_pair`: two ``mariadbd`` processes, each in a folder of its own (from
``tempfile.mkdtemp``) with a data folder made by ``mariadb-install-db``, its own port and Unix
socket. The primary runs with ``--log-bin --server-id=1 --binlog-format=ROW``; the replica with
``--server-id=2 --read-only`` replicates it (``CHANGE MASTER TO … ; START SLAVE``, as a
replication user made on the primary). An application user, made on the primary and so on the
replica too, has every right on one database and no other: ``read_only`` refuses its writes on
the replica, while root (over the socket) may still write there, which the tests use to make
the two differ. A test may stop the replica and start it again (:meth:`Mariadbd.stop`,
:meth:`Mariadbd.start`); on leaving the ``with`` block both are stopped by their PID and their
folders removed. Starting both takes a few seconds. Nothing here imports pytest: a server that
does not start raises :class:`~tests.integration.tls.servers.ServerNotStarted`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs

from tests.integration.tls.helpers import free_port, port_open
from tests.integration.tls.servers import (
    MARIADBD,
    ServerNotStarted,
    _stop,
    _tail,
    install_datadir,
)

__all__ = ("Mariadbd", "ReplicaPair", "replica_pair")


@attrs.define
class Mariadbd:
    """One private mariadbd: its folder, port and options; stopped and started by PID."""

    folder: Path
    port: int
    options: tuple[str, ...]
    """Server options beyond the folder's, port and socket (``--server-id=2``…)."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> str:
        """The server's Unix socket: root logs in there, with no password."""
        return str(self.folder / "mysqld.sock")

    @property
    def log(self) -> Path:
        return self.folder / "mariadbd.log"

    def install(self) -> None:
        """Make the data folder (root over the socket, no test database)."""
        self.folder.chmod(0o755)
        install_datadir(self.folder / "data", _as_user())

    def start(self, timeout: float = 30) -> None:
        """Start the server on its port and wait until it answers on its socket and port.

        Raises:
            ServerNotStarted: it exited or did not answer within ``timeout`` seconds.
        """
        folder = self.folder
        self.process = process = subprocess.Popen(
            [
                MARIADBD,
                "--no-defaults",
                *_as_user(),
                f"--datadir={folder / 'data'}",
                f"--socket={self.socket}",
                f"--pid-file={folder / 'mysqld.pid'}",
                f"--log-error={self.log}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                "--skip-networking=0",
                "--skip-name-resolve",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not (port_open(self.port) and Path(self.socket).exists()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise ServerNotStarted(f"mariadbd did not start:\n{_tail(self.log)}")
            time.sleep(0.05)
        # Listening is not ready: a SIGTERM before the first answer is lost (a 30 s stop).
        self.sql("SELECT 1;")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and reap it; nothing if it is not running."""
        process, self.process = self.process, None
        if process is None:
            return
        _stop([process.pid], lambda: process.poll() is None)
        process.wait(10)

    def sql(self, statements: str) -> str:
        """Run SQL as root over the Unix socket; return what the client printed (tab-separated).

        The statements go on standard input, so a password in them is never on a command line.
        """
        done = subprocess.run(
            [
                "mariadb",
                "--no-defaults",
                "--batch",
                "--skip-column-names",
                f"--socket={self.socket}",
                "--user=root",
            ],
            input=statements,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            # The client's message, not the statements: they may hold a password.
            raise RuntimeError(f"SQL as root failed: {done.stderr.strip()}")
        return done.stdout


@attrs.frozen
class ReplicaPair:
    """A running primary and its replica, with a database and an application user on both."""

    primary: Mariadbd
    replica: Mariadbd
    database: str
    user: str
    password: str = attrs.field(repr=False)

    def url(self, server: Mariadbd) -> str:
        """The ``mysql://`` URL of the database on ``server``, as the application user."""
        return f"mysql://{self.user}:{self.password}@127.0.0.1:{server.port}/{self.database}"

    def caught_up(self, timeout: float = 30) -> None:
        """Wait until the replica has applied everything the primary has written so far.

        Raises:
            TimeoutError: it had not within ``timeout`` seconds (the replica's status is said).
        """
        position = self.primary.sql("SELECT @@GLOBAL.gtid_binlog_pos;").strip()
        waited = self.replica.sql(f"SELECT MASTER_GTID_WAIT('{position}', {timeout:g});").strip()
        if waited != "0":
            status = self.replica.sql("SHOW SLAVE STATUS\\G")
            raise TimeoutError(f"the replica did not reach {position} in {timeout:g} s:\n{status}")


@contextlib.contextmanager
def replica_pair(database: str = "beds", user: str = "beds") -> Iterator[ReplicaPair]:
    """Start a primary and a replica of it; stop both and remove their folders on exit.

    Args:
        database: the database made for the caller (it replicates).
        user: the application user made for the caller: every right on ``database`` only.

    Raises:
        ServerNotStarted: ``mariadb-install-db`` failed or a server did not answer.
    """
    folders = [
        Path(tempfile.mkdtemp(prefix=f"beds-rel-{role}-")) for role in ("primary", "replica")
    ]
    primary = Mariadbd(
        folders[0],
        free_port(),
        (
            "--log-bin=mariadb-bin",
            "--server-id=1",
            "--binlog-format=ROW",
            # The DBA's functions are created by the application user, which is not SUPER.
            "--log-bin-trust-function-creators=1",
        ),
    )
    replica = Mariadbd(
        folders[1], free_port(), ("--server-id=2", "--read-only=1", "--relay-log=relay-bin")
    )
    try:
        with ThreadPoolExecutor(2) as installing:  # about 3 s each
            list(installing.map(Mariadbd.install, (primary, replica)))
        for server in (primary, replica):
            server.start()
        pair = ReplicaPair(primary, replica, database, user, secrets.token_urlsafe(18))
        _replicate(pair)
        yield pair
    finally:
        for server in (replica, primary):
            server.stop()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


def _replicate(pair: ReplicaPair) -> None:
    """Make the users and the database on the primary, then start the replica from its start."""
    secret = secrets.token_urlsafe(18)
    # Written after the primary started, so in its binary log: the replica makes them too.
    pair.primary.sql(
        f"CREATE USER 'repl'@'%' IDENTIFIED BY '{secret}';\n"
        "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';\n"
        f"CREATE DATABASE `{pair.database}` CHARACTER SET utf8mb4;\n"
        f"CREATE USER '{pair.user}'@'%' IDENTIFIED BY '{pair.password}';\n"
        f"GRANT ALL ON `{pair.database}`.* TO '{pair.user}'@'%';\n"
    )
    pair.replica.sql(
        f"CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {pair.primary.port}, "
        f"MASTER_USER = 'repl', MASTER_PASSWORD = '{secret}', MASTER_USE_GTID = slave_pos, "
        "MASTER_CONNECT_RETRY = 1;\n"
        "START SLAVE;\n"
    )
    pair.caught_up()


def _as_user() -> list[str]:
    # mariadbd refuses to run as root unless told to; otherwise it runs as whoever starts it.
    return ["--user=root"] if os.geteuid() == 0 else []
