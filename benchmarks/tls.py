"""The TLS side of a benchmark run: a TLS-only RabbitMQ node, a TLS-only mariadbd, a node config.

Started only when a selected scenario needs it (``server = "beds-tls"``), by the functions the
TLS tests use (``tests/integration/tls/servers.py``), on free loopback ports and in folders of
their own; :meth:`TlsSide.close` stops them by PID and removes everything, also after a failure.
The node config is the plaintext one with the RabbitMQ and MariaDB URLs swapped for the TLS
servers' and ``[amqp.tls]`` / ``[stores.rel.tls]`` added; REC stays on the run's SecantusDB. The
TLS database gets the same schema and seed rows as the plaintext one, so ``beds_*_tls`` against
``beds_*`` prices TLS on both hops.
"""

from __future__ import annotations

import contextlib
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.resources import PYTHON, ROOT, _env
from benchmarks.work import POST_TEXT, SEED_POSTS, mysql_kwargs
from tests.integration.tls.servers import rabbitmq_node, tls_mariadb, tls_rabbitmq

if TYPE_CHECKING:
    from benchmarks.resources import Resources, Server
    from tests.integration.tls.helpers import TlsBroker
    from tests.integration.tls.servers import TlsMariadb

CONFIG_NAME = "beds-tls.toml"
"""The TLS node's config, in the run's temporary folder (``server_argv`` runs it)."""


class TlsSide:
    """The TLS servers of one run and the node config that uses them."""

    def __init__(self, res: Resources) -> None:
        self.res = res
        self.config = res.tmp / CONFIG_NAME
        self._stack = contextlib.ExitStack()
        self.broker: TlsBroker | None = None
        self.mariadb: TlsMariadb | None = None

    def open(self, *, rel_pool: int, instances: int, prefetch: int) -> None:
        """Start both servers, write the node config, apply the schema and seed the posts."""
        res = self.res
        self.broker = broker = self._stack.enter_context(
            tls_rabbitmq(Path(tempfile.mkdtemp(prefix="beds-bench-tls-rabbitmq-")))
        )
        self.mariadb = mariadb = self._stack.enter_context(
            tls_mariadb(
                Path(tempfile.mkdtemp(prefix="beds-bench-tls-mariadb-")), database=res.database
            )
        )
        plain = res.config_text(rel_pool=rel_pool, instances=instances, prefetch=prefetch)
        text = plain.replace(f'url = "{res.amqp_url}"', f'url = "{broker.url()}"', 1).replace(
            f'url = "{res.mysql_url}"', f'url = "{mariadb.url()}"', 1
        )
        if text.count("localhost:") != 2:
            raise RuntimeError("the TLS node config lost a URL: Resources.config_text changed?")
        text += (
            f'\n[amqp.tls]\nca_file = "{broker.ca_file}"\n'
            f'\n[stores.rel.tls]\nca_file = "{mariadb.ca_file}"\n'
        )
        self.config.write_text(text, encoding="utf-8")
        done = subprocess.run(
            [PYTHON, "-m", "beds", "schema", "apply", "--config", str(self.config)],
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"beds schema apply (TLS) failed: {done.stderr[-2000:]}")
        self._seed(mariadb)

    @staticmethod
    def _seed(mariadb: TlsMariadb) -> None:
        """Posts 1..SEED_POSTS, as in the plaintext database (over TLS: the server wants it)."""
        import pymysql

        conn = pymysql.connect(
            **mysql_kwargs(mariadb.url()), ssl=ssl.create_default_context(cafile=mariadb.ca_file)
        )
        try:
            with conn.cursor() as cursor:
                for _ in range(SEED_POSTS):
                    cursor.execute("CALL `spp_create`(%s, %s)", ("seed_author", POST_TEXT))
                    while cursor.nextset():
                        pass
        finally:
            conn.close()

    def client_params(self) -> dict[str, Any]:
        """What the load generator's BedsClient needs: the amqps URL and the CA to verify."""
        assert self.broker is not None, "TlsSide.open() first"
        return {"url": self.broker.url(), "ca_file": self.broker.ca_file}

    def pids(self) -> dict[str, int]:
        """The TLS servers' processes (the Erlang VM, not the start script)."""
        assert self.broker is not None, "TlsSide.open() first"
        assert self.mariadb is not None, "TlsSide.open() first"
        return {
            "rabbitmq": int((self.broker.folder / "pid").read_text().strip()),
            "mariadb": self.mariadb.pid,
        }

    def watched(self, server: Server | None) -> dict[str, int]:
        """The processes whose CPU time a TLS run accounts for: as ``Resources.watched``, with
        the TLS servers in place of the machine's."""
        return {**self.res.watched(server, exclude=frozenset(self.pids().values())), **self.pids()}

    def purge_logs_queue(self) -> None:
        """``Resources.purge_logs_queue`` on the TLS node (vhost ``/``)."""
        if self.broker is None:
            return
        ctl = shutil.which("rabbitmqctl") or "rabbitmqctl"
        node = rabbitmq_node(self.broker)
        subprocess.run(
            [ctl, "-q", "-n", node, "purge_queue", "-p", "/", self.res.LOGS_QUEUE],
            capture_output=True,
            check=False,  # absent until a node declared it
            timeout=60,
        )

    def close(self) -> None:
        """Stop both servers (by PID) and remove their folders; safe after a partial open."""
        self._stack.close()
        self.config.unlink(missing_ok=True)
