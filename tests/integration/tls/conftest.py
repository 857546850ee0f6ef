"""A RabbitMQ node with a TLS listener only, started for the session on loopback ports.

Certificates are made per run (trustme). The node runs beside the machine's RabbitMQ with its
own node name, ports, data folder and an empty plugin list, and is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.tls.helpers import TlsBroker, free_port, port_open


@pytest.fixture(scope="session")
def tls_broker() -> Iterator[TlsBroker]:
    import tempfile

    import trustme

    server = shutil.which("rabbitmq-server")
    if server is None:
        pytest.fail("rabbitmq-server is needed for the TLS tests", pytrace=False)
    # Not under pytest's temporary folder: that is private to this user, and the node may run
    # as the rabbitmq user.
    folder = Path(tempfile.mkdtemp(prefix="beds-tls-rabbitmq-"))
    folder.chmod(0o755)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    issued = ca.issue_cert("localhost", "127.0.0.1")
    issued.private_key_pem.write_to_path(str(folder / "key.pem"))
    issued.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    port, dist = free_port(), free_port()
    (folder / "rabbitmq.conf").write_text(
        "listeners.tcp = none\n"
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
    node = f"beds_tls_{port}@localhost"
    env = {
        **os.environ,
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_DIST_PORT": str(dist),
        "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
        "RABBITMQ_LOG_BASE": str(folder / "log"),
        "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(folder / "pid"),
    }
    process = subprocess.Popen(
        [server], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while not port_open(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the TLS RabbitMQ node did not start (logs in {folder})")
            time.sleep(0.3)
        yield TlsBroker(port=port, folder=folder, ca_file=str(folder / "ca.pem"), ca=ca)
    finally:
        pid_file = folder / "pid"
        pid = int(pid_file.read_text().strip()) if pid_file.exists() else None
        for target in filter(None, (pid, process.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while port_open(port) and time.monotonic() < deadline:
            time.sleep(0.3)
        if pid is not None and port_open(port):
            os.kill(pid, signal.SIGKILL)
        process.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
