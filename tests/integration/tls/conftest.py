"""Session servers of the TLS tests: a TLS-only RabbitMQ node and a TLS-only MariaDB server.

Both are started by :mod:`tests.integration.tls.servers` (shared with the benchmarks) on free
loopback ports, in folders from ``tempfile.mkdtemp`` (not pytest's temporary folder: that is
private to this user, and the servers may run as their own users), with certificates made per
run; they are stopped by their PID and their folders removed.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.integration.tls.helpers import TlsBroker
from tests.integration.tls.servers import (
    ServerNotStarted,
    TlsMariadb,
    tls_mariadb,
    tls_rabbitmq,
)

T = TypeVar("T")


@contextlib.contextmanager
def _started(server: contextlib.AbstractContextManager[T]) -> Iterator[T]:
    """Enter a server's context; one that does not start fails the tests that need it."""
    with contextlib.ExitStack() as stack:
        try:
            running = stack.enter_context(server)
        except ServerNotStarted as exc:
            pytest.fail(str(exc), pytrace=False)
        yield running


@pytest.fixture(scope="session")
def tls_broker() -> Iterator[TlsBroker]:
    folder = Path(tempfile.mkdtemp(prefix="beds-tls-rabbitmq-"))
    with _started(tls_rabbitmq(folder)) as broker:
        yield broker


@pytest.fixture(scope="session")
def tls_mariadb_server() -> Iterator[TlsMariadb]:
    """A mariadbd with ``require_secure_transport = ON`` and a good certificate."""
    folder = Path(tempfile.mkdtemp(prefix="beds-tls-mariadb-"))
    with _started(tls_mariadb(folder)) as server:
        yield server


@pytest.fixture(scope="module")
def bad_cert_mariadb(tls_mariadb_server: TlsMariadb) -> Iterator[TlsMariadb]:
    """A second TLS mariadbd (same CA) whose certificate a test swaps for a bad one."""
    folder = Path(tempfile.mkdtemp(prefix="beds-tls-mariadb-bad-"))
    with _started(tls_mariadb(folder, ca=tls_mariadb_server.ca)) as server:
        yield server
