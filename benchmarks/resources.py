"""Isolated resources for one benchmark run, always cleaned up: a RabbitMQ vhost, a MariaDB
database, a SecantusDB server process in a temporary folder, the BEDS node config, and the
server-side subprocesses.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from benchmarks.work import BIO_TEXT, POST_TEXT, SEED_POSTS, SEED_PROFILES, mysql_kwargs

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
AMQP_BASE = os.environ.get("BEDS_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
MYSQL_BASE = os.environ.get("BEDS_BENCH_MARIADB_URL", "mysql://root@127.0.0.1:3306/")


def _env() -> dict[str, str]:
    """The environment of every child: the repository importable, no BEDS_* overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEDS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def apply_schema(config: Path, what: str = "") -> None:
    """``beds schema apply`` with ``config``: the example domain's objects in its database.

    Raises:
        RuntimeError: it failed (its last error lines, and ``what`` it was for).
    """
    done = subprocess.run(
        [PYTHON, "-m", "beds", "schema", "apply", "--config", str(config)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        label = f" ({what})" if what else ""
        raise RuntimeError(f"beds schema apply{label} failed: {done.stderr[-2000:]}")


SEED_AUTHOR = "seed_author"
"""The author of the seed posts."""


def seed_posts(mysql_url: str, **connect: Any) -> None:
    """``SEED_POSTS`` posts by :data:`SEED_AUTHOR` through ``spp_create``, in ``mysql_url``
    (``connect``: more ``pymysql.connect`` arguments, such as ``ssl``)."""
    import pymysql

    conn = pymysql.connect(**mysql_kwargs(mysql_url), **connect)
    try:
        with conn.cursor() as cursor:
            for _ in range(SEED_POSTS):
                cursor.execute("CALL `spp_create`(%s, %s, NULL)", (SEED_AUTHOR, POST_TEXT))
                while cursor.nextset():
                    pass
    finally:
        conn.close()


def require_port(service: str, host: str, port: int, start: str) -> None:
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        raise SystemExit(
            f"{service} is not reachable at {host}:{port} ({exc}); start it: {start}"
        ) from None


class Server:
    """A server-side subprocess whose output goes to a log file."""

    def __init__(
        self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**_env(), **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with {code}: {self.tail()}")

    def tail(self, lines: int = 15) -> str:
        self._log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


class Resources:
    """Everything a run creates; ``close()`` removes all of it (safe after a partial set-up)."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.vhost = f"beds-bench-{tag}"
        self.database = f"beds_bench_{tag}"
        self.mongo_db = f"beds_bench_{tag}"
        self.tmp = Path(tempfile.mkdtemp(prefix="beds-bench-"))
        self.logs = self.tmp / "logs"
        self.logs.mkdir()
        self.amqp_url = AMQP_BASE.rstrip("/") + "/" + self.vhost
        self.mysql_url = MYSQL_BASE.rstrip("/") + "/" + self.database
        self.mongo_uri = ""
        self.config = self.tmp / "beds.toml"
        self.config_without_lineage = self.tmp / "beds-no-lineage.toml"
        """The same node with ``[lineage] enabled = false``."""
        self.without_audit = self.tmp / "no-audit"
        """On a node's ``PYTHONPATH`` first: the example domain with ``spew_profile`` unaudited."""
        self.servers: list[Server] = []
        self._vhost_made = False
        self._database_made = False
        self._secantus: subprocess.Popen[str] | None = None

    # -- set-up ---------------------------------------------------------------------------

    def open(self, *, rel_pool: int, instances: int, prefetch: int) -> None:
        from urllib.parse import urlsplit

        amqp = urlsplit(AMQP_BASE)
        require_port(
            "RabbitMQ", amqp.hostname or "127.0.0.1", amqp.port or 5672, "rabbitmq-server -detached"
        )
        mysql = urlsplit(MYSQL_BASE)
        require_port(
            "MariaDB",
            mysql.hostname or "127.0.0.1",
            mysql.port or 3306,
            "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
        )
        ctl = shutil.which("rabbitmqctl")
        if ctl is None:
            raise SystemExit("rabbitmqctl is needed to create the benchmark vhost")
        subprocess.run([ctl, "-q", "add_vhost", self.vhost], check=True, capture_output=True)
        self._vhost_made = True
        user = amqp.username or "guest"
        subprocess.run(
            [ctl, "-q", "set_permissions", "-p", self.vhost, user, ".*", ".*", ".*"],
            check=True,
            capture_output=True,
        )
        self.sql(f"CREATE DATABASE `{self.database}`", database=False)
        self._database_made = True
        self._start_secantus()
        text = self.config_text(rel_pool=rel_pool, instances=instances, prefetch=prefetch)
        self.config.write_text(text, encoding="utf-8")
        self.config_without_lineage.write_text(
            text + "\n[lineage]\nenabled = false\n", encoding="utf-8"
        )
        apply_schema(self.config)
        self._seed()
        self._copy_domain_without_audit()

    def _copy_domain_without_audit(self) -> None:
        """The example templates package with ``audit = false``: REC creates like the pipeline's."""
        import beds_templates_example

        package = Path(beds_templates_example.__file__).parent
        copy = self.without_audit / package.name
        shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
        profile = copy / "templates" / "spew_profile.toml"
        text = profile.read_text(encoding="utf-8")
        if "audit = true" not in text:
            raise RuntimeError(f"{profile} no longer declares audit = true")
        profile.write_text(text.replace("audit = true", "audit = false"), encoding="utf-8")

    def _start_secantus(self) -> None:
        storage = self.tmp / "secantus"
        storage.mkdir()
        self._secantus = subprocess.Popen(
            [PYTHON, "-m", "benchmarks.servers.secantus_server", str(storage)],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=(self.logs / "secantus.log").open("wb"),
            text=True,
            start_new_session=True,
        )
        assert self._secantus.stdout is not None
        line = self._secantus.stdout.readline().strip()
        if not line.startswith("mongodb://"):
            raise RuntimeError(f"SecantusDB did not start: {line!r}")
        self.mongo_uri = line

    def config_text(self, *, rel_pool: int, instances: int, prefetch: int) -> str:
        return f"""schema_version = 1

[node]
name = "bench"
env = "bench"
drain_seconds = 2

[amqp]
url = "{self.amqp_url}"

[log]
level = "WARNING"

[stores.rel]
url = "{self.mysql_url}"
pool_max = {rel_pool}

[stores.rec]
uri = "{self.mongo_uri}"
database = "{self.mongo_db}"

[roles.appServer.brokers.rBroker]
instances = {instances}
prefetch = {prefetch}

[roles.appServer.brokers.wBroker]
instances = {instances}
prefetch = {prefetch}
"""

    def sql(self, statement: str, *, database: bool = True) -> None:
        import pymysql

        conn = pymysql.connect(**mysql_kwargs(self.mysql_url, with_database=database))
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement)
        finally:
            conn.close()

    def _seed(self) -> None:
        """Posts 1..SEED_POSTS and profiles seed_0.. for the fetch scenarios."""
        from pymongo import MongoClient

        seed_posts(self.mysql_url)
        client: MongoClient[dict[str, Any]] = MongoClient(self.mongo_uri)
        try:
            now = dt.datetime.now(dt.UTC)
            client[self.mongo_db]["spf_profiles"].insert_many(
                [
                    {
                        "handle": f"seed_{i}",
                        "display_name": f"Seed {i}",
                        "bio": BIO_TEXT,
                        "created_at": now,
                    }
                    for i in range(SEED_PROFILES)
                ]
            )
        finally:
            client.close()

    # -- servers --------------------------------------------------------------------------

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Server:
        """Start a server side; ``env`` adds to the environment every child gets."""
        server = Server(name, argv, self.logs, env)
        self.servers.append(server)
        return server

    LOGS_QUEUE = "beds.bench.admin.adminLogsBroker"
    """The seed admin role's logs queue, which every node declares (no admin node runs here)."""

    def purge_logs_queue(self) -> None:
        """Drop the lineage events and audit records the nodes left in the logs queue.

        Publishing and persisting them is part of what a node costs, and stays in the figures;
        a queue that grows through the whole run would make RabbitMQ slower scenario after
        scenario, so each run starts with it empty.
        """
        ctl = shutil.which("rabbitmqctl") or "rabbitmqctl"
        subprocess.run(
            [ctl, "-q", "purge_queue", "-p", self.vhost, self.LOGS_QUEUE],
            capture_output=True,
            check=False,  # absent until a node declared it
            timeout=60,
        )

    def watched(
        self, server: Server | None, exclude: frozenset[int] = frozenset()
    ) -> dict[str, int]:
        """The processes whose CPU time a run accounts for: the server side and the services
        (not those in ``exclude``: the TLS side's RabbitMQ and MariaDB, when it runs)."""
        import psutil

        pids = {"server": server.pid} if server is not None else {}
        if self._secantus is not None:
            pids["secantusdb"] = self._secantus.pid
        for process in psutil.process_iter(["name"]):
            role = {"beam.smp": "rabbitmq", "mariadbd": "mariadb"}.get(process.info["name"])
            if role is not None and process.pid not in exclude:
                pids.setdefault(role, process.pid)
        return pids

    def stop(self, server: Server) -> None:
        server.stop()
        with contextlib.suppress(ValueError):
            self.servers.remove(server)

    # -- clean-up -------------------------------------------------------------------------

    def close(self) -> None:
        for server in list(self.servers):
            with contextlib.suppress(Exception):
                self.stop(server)
        if self._secantus is not None:
            self._secantus.send_signal(signal.SIGTERM)
            try:
                self._secantus.wait(15)
            except subprocess.TimeoutExpired:
                self._secantus.kill()
                self._secantus.wait(5)
        if self._database_made:
            with contextlib.suppress(Exception):
                self.sql(f"DROP DATABASE IF EXISTS `{self.database}`", database=False)
        if self._vhost_made:
            ctl = shutil.which("rabbitmqctl") or "rabbitmqctl"
            subprocess.run(
                [ctl, "-q", "delete_vhost", self.vhost], check=False, capture_output=True
            )
        shutil.rmtree(self.tmp, ignore_errors=True)


def wait_line(server: Server, expected: str, seconds: float = 60) -> None:
    """Wait until the server's log has a line starting with ``expected``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        server.check_alive()
        text = server.log_path.read_text(encoding="utf-8", errors="replace")
        if any(line.startswith(expected) for line in text.splitlines()):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} did not print {expected!r} within {seconds:g} s")


def run_alone(
    run: Callable[[Resources, Any], dict[str, Any]],
    options: Any,
    print_rows: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """A measuring module run on its own (``python -m benchmarks.workers``): the suite's
    resources around ``run``, its rows printed, and ``options.json`` written when given."""
    from benchmarks.scenarios import Layout

    layout = Layout()
    res = Resources()
    try:
        res.open(
            rel_pool=layout.rel_pool, instances=layout.instances, prefetch=layout.beds_prefetch
        )
        result: dict[str, Any] = run(res, options)
    finally:
        res.close()
    print_rows(result)
    if options.json is not None:
        options.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def run_load(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run the load generator in its own process; its progress is echoed to our stderr.

    ``spec["module"]`` names a load generator that adds targets to ``benchmarks.load``'s
    (``benchmarks.read_load``).
    """
    process = subprocess.Popen(
        [PYTHON, "-m", spec.get("module", "benchmarks.load"), json.dumps(spec)],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    tail: collections.deque[str] = collections.deque(maxlen=12)

    def echo() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            tail.append(line.rstrip())
            sys.stderr.write(line)

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    killer = threading.Timer(timeout, process.kill)
    killer.start()
    try:
        assert process.stdout is not None
        stdout = process.stdout.read()
        process.wait()
    finally:
        killer.cancel()
    reader.join(5)
    if process.returncode == -signal.SIGKILL:
        raise RuntimeError(f"the load generator ran past {timeout:g} s")
    if process.returncode != 0:
        detail = "\n".join(tail)
        raise RuntimeError(f"the load generator failed ({process.returncode}):\n{detail}")
    loaded: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return loaded


def load_timeout(spec: dict[str, Any]) -> float:
    points = sum(float(p["seconds"]) for p in spec["points"])
    return points * int(spec.get("repeats", 1)) + float(spec.get("ready_seconds", 60)) + 90
