"""The spare servers of a benchmark run (a RabbitMQ node and a mariadbd), and two node configs.

Started only when a selected scenario needs them (``server = "beds-tls"`` or ``"beds-spare"``),
by the functions the TLS tests use (``tests/integration/tls/servers.py``), on free loopback
ports and in folders of their own; :meth:`TlsSide.close` stops them by PID and removes
everything, also after a failure. Each server takes both TLS and plaintext connections: the
RabbitMQ node has an ``amqps`` and an ``amqp`` listener, the mariadbd runs with
``require_secure_transport = OFF``. The TLS node config (``beds-tls.toml``) is the plaintext one
with the RabbitMQ and MariaDB URLs swapped for the spare servers' and ``[amqp.tls]`` /
``[stores.rel.tls]`` added; the spare plaintext config (``beds-spare.toml``) points at the same
servers without TLS. REC stays on the run's SecantusDB. The spare database gets the same schema
and seed rows as the machine's, so ``beds_*_tls`` against ``beds_*_spare`` prices TLS alone, on
both hops, and ``beds_*_spare`` against ``beds_*`` what the spare servers differ in from the
machine's.
"""

from __future__ import annotations

import contextlib
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.resources import apply_schema, seed_posts
from tests.integration.tls.servers import rabbitmq_node, tls_mariadb, tls_rabbitmq

if TYPE_CHECKING:
    from benchmarks.resources import Resources, Server
    from tests.integration.tls.servers import TlsMariadb, TlsRabbitmq

CONFIGS = {"beds-tls": "beds-tls.toml", "beds-spare": "beds-spare.toml"}
"""The node config of each server kind on the spare servers, in the run's temporary folder
(``server_argv`` runs it): over TLS, and in plaintext."""


class TlsSide:
    """The spare servers of one run and the node configs that use them."""

    def __init__(self, res: Resources) -> None:
        self.res = res
        self.configs = {kind: res.tmp / name for kind, name in CONFIGS.items()}
        self._stack = contextlib.ExitStack()
        self.broker: TlsRabbitmq | None = None
        self.mariadb: TlsMariadb | None = None
        self._status_queries = 0

    def open(self, *, rel_pool: int, instances: int, prefetch: int) -> None:
        """Start both servers, write the node configs, apply the schema and seed the posts."""
        res = self.res
        self.broker = broker = self._stack.enter_context(
            tls_rabbitmq(Path(tempfile.mkdtemp(prefix="beds-bench-tls-rabbitmq-")), plain_port=True)
        )
        self.mariadb = mariadb = self._stack.enter_context(
            tls_mariadb(
                Path(tempfile.mkdtemp(prefix="beds-bench-tls-mariadb-")),
                database=res.database,
                # The TLS node's connections still use TLS: [stores.rel.tls] asks for it.
                require_secure_transport=False,
            )
        )
        base = res.config_text(rel_pool=rel_pool, instances=instances, prefetch=prefetch)

        def swapped(amqp_url: str) -> str:
            text = base.replace(f'url = "{res.amqp_url}"', f'url = "{amqp_url}"', 1).replace(
                f'url = "{res.mysql_url}"', f'url = "{mariadb.url()}"', 1
            )
            if text.count("localhost:") != 2:
                raise RuntimeError("a spare node config lost a URL: Resources.config_text changed?")
            return text

        tls = swapped(broker.url()) + (
            f'\n[amqp.tls]\nca_file = "{broker.ca_file}"\n'
            f'\n[stores.rel.tls]\nca_file = "{mariadb.ca_file}"\n'
        )
        self.configs["beds-tls"].write_text(tls, encoding="utf-8")
        self.configs["beds-spare"].write_text(swapped(broker.plain_url()), encoding="utf-8")
        apply_schema(self.configs["beds-tls"], "TLS")
        self._seed(mariadb)

    @staticmethod
    def _seed(mariadb: TlsMariadb) -> None:
        """Posts 1..SEED_POSTS, as in the machine's database (over TLS, as the TLS node)."""
        seed_posts(mariadb.url(), ssl=ssl.create_default_context(cafile=mariadb.ca_file))

    def client_params(self, kind: str) -> dict[str, Any]:
        """What the load generator's BedsClient needs: over TLS (``beds-tls``) the amqps URL and
        the CA to verify, in plaintext (``beds-spare``) the amqp URL of the same node."""
        assert self.broker is not None, "TlsSide.open() first"
        if kind == "beds-tls":
            return {"url": self.broker.url(), "ca_file": self.broker.ca_file}
        return {"url": self.broker.plain_url()}

    def mariadb_connections(self) -> dict[str, int]:
        """How many connections the spare mariadbd has taken so far, and how many over TLS.

        Their growth during a scenario shows its node reached MariaDB as it should (over TLS
        for ``beds-tls``, not for ``beds-spare``): TLS is the client's choice on this server.
        Asked as root over the Unix socket without TLS (PyMySQL and the ``mariadb`` command
        line client would use it there too, unless told not to); these connections are not
        counted.
        """
        import pymysql

        assert self.mariadb is not None, "TlsSide.open() first"
        self._status_queries += 1
        conn = pymysql.connect(unix_socket=self.mariadb.socket, user="root", ssl_disabled=True)
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    "SHOW GLOBAL STATUS WHERE Variable_name IN ('Connections', 'Ssl_accepts')"
                )
                status = {str(name): int(value) for name, value in cursor.fetchall()}
        finally:
            conn.close()
        return {"all": status["Connections"] - self._status_queries, "tls": status["Ssl_accepts"]}

    def pids(self) -> dict[str, int]:
        """The spare servers' processes (the Erlang VM, not the start script)."""
        assert self.broker is not None, "TlsSide.open() first"
        assert self.mariadb is not None, "TlsSide.open() first"
        return {
            "rabbitmq": int((self.broker.folder / "pid").read_text().strip()),
            "mariadb": self.mariadb.pid,
        }

    def watched(self, server: Server | None) -> dict[str, int]:
        """The processes whose CPU time a spare-server run accounts for: ``Resources.watched``, with
        the spare servers in place of the machine's."""
        return {**self.res.watched(server, exclude=frozenset(self.pids().values())), **self.pids()}

    def purge_logs_queue(self) -> None:
        """``Resources.purge_logs_queue`` on the spare RabbitMQ node (vhost ``/``)."""
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
        for config in self.configs.values():
            config.unlink(missing_ok=True)
