"""Throwaway TLS-only servers on loopback ports: a RabbitMQ node and a MariaDB server.

The TLS tests' session fixtures (``conftest.py`` beside this file) and the benchmark harness
(``benchmarks/tls.py``) start them with :func:`tls_rabbitmq` and :func:`tls_mariadb`; the
harness also asks for a plaintext listener beside the TLS one (``plain_port``,
``require_secure_transport=False``), to measure the same servers without TLS. Each runs beside
the machine's own server, in a folder of its own (from ``tempfile.mkdtemp``) with certificates
made for the run (trustme: a CA, and a server certificate for ``localhost`` and ``127.0.0.1``),
and on leaving the ``with`` block is stopped by its PID (SIGTERM, then SIGKILL) and its folder
removed. Nothing here imports pytest: a server that does not start raises
:class:`ServerNotStarted` with the end of its log.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from tests.integration.tls.helpers import TlsBroker, free_port, port_open

__all__ = (
    "ServerNotStarted",
    "TlsMariadb",
    "TlsRabbitmq",
    "rabbitmq_node",
    "tls_mariadb",
    "tls_rabbitmq",
)

MARIADBD = "/usr/sbin/mariadbd"


class ServerNotStarted(RuntimeError):
    """A throwaway server did not start; the message says why and where its log is."""


@attrs.frozen
class TlsRabbitmq(TlsBroker):
    """A :func:`tls_rabbitmq` node: the TLS listener, and a plaintext one when asked for."""

    plain_port: int | None = None
    """The plaintext (``amqp://``) listener's port; ``None`` on a TLS-only node."""

    def plain_url(self, host: str = "localhost") -> str:
        """The ``amqp://`` URL of the plaintext listener (``tls_rabbitmq(plain_port=True)``)."""
        if self.plain_port is None:
            raise ValueError("this RabbitMQ node has no plaintext listener (plain_port=False)")
        return f"amqp://guest:guest@{host}:{self.plain_port}/"


@attrs.frozen
class TlsMariadb:
    """A running TLS-only mariadbd (``require_secure_transport``), with a database and a user."""

    port: int
    folder: Path
    ca_file: str
    """The CA that signed the server's certificate (PEM)."""
    ca: Any
    """The trustme CA itself, to issue other certificates (expired, another host's)."""
    database: str
    user: str
    password: str = attrs.field(repr=False)
    pid: int

    @property
    def socket(self) -> str:
        """The server's Unix socket: root logs in there (no TLS needed on a socket)."""
        return str(self.folder / "mysqld.sock")

    def url(self, host: str = "localhost", *, password: str | None = None) -> str:
        """The ``stores.rel.url`` of the test database (``password`` replaces the user's)."""
        secret = self.password if password is None else password
        return f"mysql://{self.user}:{secret}@{host}:{self.port}/{self.database}"

    def sql(self, statements: str) -> str:
        """Run SQL as root over the Unix socket; return what the client printed.

        The statements go on standard input, so a password in them is never on a command line.
        """
        done = subprocess.run(
            ["mariadb", "--no-defaults", "--batch", f"--socket={self.socket}", "--user=root"],
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

    def use_certificate(self, cert_file: str, key_file: str) -> None:
        """Present another certificate to new connections from now on (``FLUSH SSL``)."""
        shutil.copyfile(cert_file, self.folder / "cert.pem")
        shutil.copyfile(key_file, self.folder / "key.pem")
        self.sql("FLUSH SSL;")


def _issue(ca: Any, folder: Path) -> None:
    """The server's certificate (for ``localhost`` and ``127.0.0.1``) and the CA, as PEM files."""
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    issued = ca.issue_cert("localhost", "127.0.0.1")
    issued.private_key_pem.write_to_path(str(folder / "key.pem"))
    issued.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))


def _stop(pids: list[int], up: Any, seconds: float = 30) -> None:
    """SIGTERM each PID, wait while ``up()`` holds, then SIGKILL them if it still does.

    Only while the server is up: a PID that has gone may already be another process's.
    """
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + seconds
    while up() and time.monotonic() < deadline:
        time.sleep(0.1)
    if up():
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


@contextlib.contextmanager
def tls_mariadb(
    folder: Path,
    *,
    ca: Any = None,
    require_secure_transport: bool = True,
    database: str = "beds",
    user: str = "beds",
    timeout: float = 30,
) -> Iterator[TlsMariadb]:
    """A mariadbd that takes TLS connections only, on a free loopback port.

    Its data folder is made with ``mariadb-install-db`` (root logs in over the Unix socket with
    an empty password; no test database), then ``database`` and ``user`` (with a random
    password, for TCP) are created. Starts in about a second.

    Args:
        folder: an empty folder of its own, removed on exit.
        ca: the trustme CA that signs the server's certificate (default: a new one).
        require_secure_transport: ``False`` also takes plaintext TCP connections.
        database: the database made for the caller; ``user`` has every right on it.
        user: the user made for the caller.
        timeout: seconds to wait for the server.

    Raises:
        ServerNotStarted: ``mariadb-install-db`` failed or the server did not answer.
    """
    import trustme

    log = folder / "mariadbd.log"
    process: subprocess.Popen[bytes] | None = None
    try:
        folder.chmod(0o755)
        ca = ca or trustme.CA()
        _issue(ca, folder)
        port = free_port()
        process = _start_mariadbd(folder, log, port, require_secure_transport)
        server = TlsMariadb(
            port=port,
            folder=folder,
            ca_file=str(folder / "ca.pem"),
            ca=ca,
            database=database,
            user=user,
            password=secrets.token_urlsafe(18),
            pid=process.pid,
        )
        deadline = time.monotonic() + timeout
        while not (port_open(port) and Path(server.socket).exists()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise ServerNotStarted(f"the TLS mariadbd did not start:\n{_tail(log)}")
            time.sleep(0.05)
        server.sql(
            f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4;\n"
            f"CREATE USER '{user}'@'%' IDENTIFIED BY '{server.password}';\n"
            f"GRANT ALL ON `{database}`.* TO '{user}'@'%';\n"
        )
        yield server
    finally:
        if process is not None:
            running = process
            _stop([running.pid], lambda: running.poll() is None)
            running.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def install_datadir(data: Path, as_user: list[str], attempts: int = 3) -> None:
    """Make a MariaDB data folder (root over the socket, no test database).

    Tried again on a clean folder when it fails: on a loaded machine its bootstrap server has
    been seen to fail once and succeed the next time.

    Raises:
        ServerNotStarted: the last attempt failed too.
    """
    for attempt in range(attempts):
        shutil.rmtree(data, ignore_errors=True)
        done = subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={data}",
                *as_user,
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode == 0:
            return
        if attempt == attempts - 1:
            raise ServerNotStarted(f"mariadb-install-db failed: {done.stderr[-2000:]}")
        time.sleep(1)


def _start_mariadbd(
    folder: Path, log: Path, port: int, require_secure_transport: bool
) -> subprocess.Popen[bytes]:
    """Make the data folder, then start mariadbd on ``port`` with the folder's certificate."""
    # mariadbd refuses to run as root unless told to; otherwise it runs as whoever starts it.
    as_user = ["--user=root"] if os.geteuid() == 0 else []
    install_datadir(folder / "data", as_user)
    return subprocess.Popen(
        [
            MARIADBD,
            "--no-defaults",
            *as_user,
            f"--datadir={folder / 'data'}",
            f"--socket={folder / 'mysqld.sock'}",
            f"--pid-file={folder / 'mysqld.pid'}",
            f"--log-error={log}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            "--skip-networking=0",
            "--skip-name-resolve",
            # As the machine's server (Debian's defaults), so the benchmark compares like for like.
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
            f"--ssl-ca={folder / 'ca.pem'}",
            f"--ssl-cert={folder / 'cert.pem'}",
            f"--ssl-key={folder / 'key.pem'}",
            f"--require-secure-transport={'ON' if require_secure_transport else 'OFF'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def rabbitmq_node(broker: TlsBroker) -> str:
    """The Erlang node name of a :func:`tls_rabbitmq` node (``rabbitmqctl -n``)."""
    return f"beds_tls_{broker.port}@localhost"


@contextlib.contextmanager
def tls_rabbitmq(
    folder: Path, *, ca: Any = None, plain_port: bool = False, timeout: float = 60
) -> Iterator[TlsRabbitmq]:
    """A RabbitMQ node with a TLS listener only (by default), on free loopback ports.

    Its own node name, ports, data folder and an empty plugin list; ``guest`` may log in (from
    loopback) to the default vhost.

    Args:
        folder: an empty folder of its own (readable by the ``rabbitmq`` user), removed on exit.
        ca: the trustme CA that signs the node's certificate (default: a new one).
        plain_port: also listen for plaintext AMQP on another free loopback port
            (:meth:`TlsRabbitmq.plain_url`): the benchmarks measure the same node with and
            without TLS. The tests need a TLS-only node, the default.
        timeout: seconds to wait for the node.

    Raises:
        ServerNotStarted: no ``rabbitmq-server``, or the node did not listen in time.
    """
    import trustme

    server = shutil.which("rabbitmq-server")
    if server is None:
        raise ServerNotStarted("rabbitmq-server is needed for a TLS RabbitMQ node")
    process: subprocess.Popen[bytes] | None = None
    port = free_port()
    plain = free_port() if plain_port else None
    try:
        broker = _configure_rabbitmq(folder, port, ca or trustme.CA(), plain)
        process = subprocess.Popen(
            [server],
            env={**os.environ, **_rabbitmq_environment(broker)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not (port_open(port) and (plain is None or port_open(plain))):
            if process.poll() is not None or time.monotonic() > deadline:
                logs = "\n".join(_tail(log) for log in sorted((folder / "log").glob("*.log")))
                raise ServerNotStarted(f"the TLS RabbitMQ node did not start:\n{logs}")
            time.sleep(0.3)
        yield broker
    finally:
        if process is not None:
            # The script's PID and the Erlang VM's (from the pid file), which outlives the script.
            pid_file = folder / "pid"
            pid = int(pid_file.read_text().strip()) if pid_file.exists() else None
            _stop([p for p in (pid, process.pid) if p is not None], lambda: port_open(port))
            process.wait(30)
        shutil.rmtree(folder, ignore_errors=True)


def _configure_rabbitmq(folder: Path, port: int, ca: Any, plain_port: int | None) -> TlsRabbitmq:
    """The node's certificates, config file, plugin list and data folders, in ``folder``."""
    # Not under pytest's temporary folder: that is private to this user, and the node may run
    # as the rabbitmq user.
    folder.chmod(0o755)
    _issue(ca, folder)
    broker = TlsRabbitmq(
        port=port, folder=folder, ca_file=str(folder / "ca.pem"), ca=ca, plain_port=plain_port
    )
    tcp = (
        "listeners.tcp = none"
        if plain_port is None
        else f"listeners.tcp.default = 127.0.0.1:{plain_port}"
    )
    (folder / "rabbitmq.conf").write_text(
        f"{tcp}\n"
        f"listeners.ssl.default = 127.0.0.1:{port}\n"
        f"ssl_options.cacertfile = {folder / 'ca.pem'}\n"
        f"ssl_options.certfile = {folder / 'cert.pem'}\n"
        f"ssl_options.keyfile = {folder / 'key.pem'}\n"
        "ssl_options.verify = verify_none\n"
        "ssl_options.fail_if_no_peer_cert = false\n",
        encoding="utf-8",
    )
    (folder / "enabled_plugins").write_text("[].\n", encoding="utf-8")
    for sub in ("mnesia", "log"):
        (folder / sub).mkdir()
    # The Debian rabbitmq-server script runs the node as the rabbitmq user when started as root.
    if os.geteuid() == 0:
        for path in (folder, *folder.iterdir()):
            shutil.chown(path, "rabbitmq", "rabbitmq")
    return broker


def _rabbitmq_environment(broker: TlsBroker) -> dict[str, str]:
    folder = broker.folder
    return {
        "RABBITMQ_NODENAME": rabbitmq_node(broker),
        "RABBITMQ_DIST_PORT": str(free_port()),
        "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
        "RABBITMQ_LOG_BASE": str(folder / "log"),
        "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(folder / "pid"),
    }
