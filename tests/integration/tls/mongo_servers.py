"""SecantusDB servers that speak TLS only, on free loopback ports, for the MongoDB TLS tests.

Certificates are made per run (trustme). Each server keeps its data in a folder from
``tempfile.mkdtemp``, removed after it stops.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs

__all__ = ("MongoTlsFiles", "Server", "make_files", "tls_mongos")


@attrs.frozen
class MongoTlsFiles:
    """The run's certificates, in one folder."""

    folder: Path
    ca_file: str
    """The CA that signs every certificate below."""
    other_ca_file: str
    """Another CA, which signs none of them."""
    server_cert: str
    server_key: str
    """The servers' certificate, for ``localhost`` only (not for ``127.0.0.1``)."""
    expired_cert: str
    expired_key: str
    """An expired certificate for ``localhost``, signed by the CA."""
    client_pem: str
    """A client certificate and its key, in one file (as pymongo reads them)."""
    expired_client_pem: str
    """An expired client certificate and its key."""
    encrypted_client_pem: str
    """The client certificate and its key, encrypted with a passphrase."""


def make_files() -> MongoTlsFiles:
    """A fresh CA and the certificates of the tests, in a new folder (remove it after)."""
    import trustme

    folder = Path(tempfile.mkdtemp(prefix="beds-tls-mongo-"))
    ca, other = trustme.CA(), trustme.CA()
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    expired_dates: dict[str, Any] = {"not_before": past - dt.timedelta(days=1), "not_after": past}
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    other.cert_pem.write_to_path(str(folder / "other-ca.pem"))
    for name, issued in [
        ("server", ca.issue_cert("localhost")),
        ("expired", ca.issue_cert("localhost", **expired_dates)),
    ]:
        issued.cert_chain_pems[0].write_to_path(str(folder / f"{name}.crt"))
        issued.private_key_pem.write_to_path(str(folder / f"{name}.key"))
    client = ca.issue_cert("beds-node@example.test")
    client.private_key_and_cert_chain_pem.write_to_path(str(folder / "client.pem"))
    (folder / "encrypted-client.pem").write_bytes(_encrypted(client))
    ca.issue_cert(
        "beds-node@example.test", **expired_dates
    ).private_key_and_cert_chain_pem.write_to_path(str(folder / "expired-client.pem"))
    return MongoTlsFiles(
        folder=folder,
        ca_file=str(folder / "ca.pem"),
        other_ca_file=str(folder / "other-ca.pem"),
        server_cert=str(folder / "server.crt"),
        server_key=str(folder / "server.key"),
        expired_cert=str(folder / "expired.crt"),
        expired_key=str(folder / "expired.key"),
        client_pem=str(folder / "client.pem"),
        expired_client_pem=str(folder / "expired-client.pem"),
        encrypted_client_pem=str(folder / "encrypted-client.pem"),
    )


def _encrypted(issued: Any) -> bytes:
    """The certificate of ``issued`` and its key, encrypted with a passphrase, in one PEM."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    certificate: bytes = issued.cert_chain_pems[0].bytes()
    return certificate + encrypted


@attrs.frozen
class Server:
    """What :func:`tls_mongos` starts: a server's certificate, key, and client CA."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    """Given, the server requires a client certificate signed by this CA."""


@contextlib.contextmanager
def tls_mongos(*servers: Server) -> Iterator[list[int]]:
    """Standalone SecantusDB servers on 127.0.0.1 that speak TLS only; yields their ports.

    They are stopped side by side: each stop waits about two seconds for its accept thread.
    """
    from secantus import SecantusDBServer

    started: list[tuple[Any, str]] = []
    try:
        for spec in servers:
            storage = tempfile.mkdtemp(prefix="beds-tls-secantus-")
            server = SecantusDBServer(
                storage_path=storage,
                replica_set_name=None,  # standalone (SPEC)
                tls_cert_file=spec.cert_file,
                tls_key_file=spec.key_file,
                tls_ca_file=spec.client_ca_file,
                tls_require_client_cert=spec.client_ca_file is not None,
            )
            started.append((server, storage))
            _bound_handshakes(server)
            server.start()
        yield [int(server.port) for server, _ in started]
    finally:
        with ThreadPoolExecutor(max_workers=max(1, len(started))) as pool:
            list(pool.map(lambda pair: pair[0].stop(), started))
        for _, storage in started:
            shutil.rmtree(storage, ignore_errors=True)


def _bound_handshakes(server: Any, seconds: float = 5.0) -> None:
    """Give the server's TLS handshakes a time limit.

    SecantusDB does each handshake on its one accept thread, with no timeout: a client that
    opens a connection and never starts the handshake (pymongo can leave a cancelled monitor
    connection open until the garbage collector closes it) would stop the server from accepting
    anyone else, and the next test would see a server that never answers.
    """
    context: ssl.SSLContext = server._ssl_context

    class Bounded:
        def wrap_socket(self, sock: Any, **options: Any) -> ssl.SSLSocket:
            sock.settimeout(seconds)
            return context.wrap_socket(sock, **options)

    server._ssl_context = Bounded()
