"""A RabbitMQ cluster of three nodes on this machine, on loopback, for the cluster fault tests.

Each node is a ``rabbitmq-server`` process of its own: its node name (``bedsc1@localhost``…),
AMQP and distribution ports (free loopback ports), data, log and enabled-plugins files in a
temporary folder, and one Erlang cookie written for the cluster. Nodes 2 and 3 join node 1 with
``rabbitmqctl stop_app / join_cluster / start_app``; a vhost and a user are created. The system
RabbitMQ (``rabbit@localhost`` on 5672) is left alone: other node names and ports; epmd is
shared, which it is made for.

Every process is stopped by its process group (the server script, ``beam.smp`` and its helper
processes share the group this module gave them) and the folder is removed, also when starting
fails half-way.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Final
from urllib.parse import quote

import attrs

__all__ = ("Cluster", "ClusterNode", "ClusterStartError", "start_cluster")

SERVER: Final = "/usr/lib/rabbitmq/bin/rabbitmq-server"
"""The server script itself: ``/usr/sbin/rabbitmq-server`` would ``su`` to the rabbitmq user
and drop the environment that makes each node its own."""
CTL: Final = "/usr/lib/rabbitmq/bin/rabbitmqctl"
QUEUES: Final = "/usr/lib/rabbitmq/bin/rabbitmq-queues"
BOOT_SECONDS: Final = 90.0
"""How long a node may take to boot (three boot at once on two shared cores)."""
CTL_SECONDS: Final = 60.0


class ClusterStartError(RuntimeError):
    """The cluster could not be started; the message holds the command and its output."""


@attrs.define
class ClusterNode:
    """One ``rabbitmq-server`` of the cluster."""

    name: str
    """Erlang node name, ``bedsc1@localhost``."""
    port: int
    """AMQP port on 127.0.0.1."""
    dist_port: int
    """Erlang distribution port on 127.0.0.1."""
    home: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the node's processes (as a machine that dies), and reap the server script."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


@attrs.define
class Cluster:
    """The running cluster: its nodes, and the vhost and user clients log in with."""

    nodes: list[ClusterNode]
    folder: Path
    cookie: str
    vhost: str
    user: str
    password: str
    run_as: str | None
    """The system RabbitMQ's user the nodes run as; None: this user (with its own HOME)."""

    def url(self, node: ClusterNode | int) -> str:
        """The AMQP URL of one node, with the cluster's user, password and vhost."""
        target = self.nodes[node] if isinstance(node, int) else node
        return (
            f"amqp://{self.user}:{self.password}@127.0.0.1:{target.port}/"
            f"{quote(self.vhost, safe='')}"
        )

    @property
    def urls(self) -> list[str]:
        return [self.url(node) for node in self.nodes]

    def node_named(self, name: str) -> ClusterNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def ctl(self, node: ClusterNode, *args: str, tool: str = CTL) -> str:
        """Run ``rabbitmqctl`` (or ``tool``) against ``node``; its output.

        Raises:
            ClusterStartError: the command failed (with its output).
        """
        argv = [tool, "-q", "-n", node.name, "--erlang-cookie", self.cookie, *args]
        done = subprocess.run(
            _as_user(self.run_as, argv),
            capture_output=True,
            text=True,
            timeout=CTL_SECONDS,
            env=_environ(node, self.folder, self.cookie),
            check=False,
        )
        if done.returncode != 0:
            shown = " ".join(a for a in argv if a != self.cookie)
            raise ClusterStartError(f"{shown}: exit {done.returncode}\n{done.stdout}{done.stderr}")
        return done.stdout

    def queue_leader(self, queue: str) -> ClusterNode:
        """The node that leads the quorum queue ``queue`` now (asked of a live node)."""
        for asked in self.nodes:
            if not asked.alive:
                continue
            out = self.ctl(
                asked, "list_queues", "--no-table-headers", "-p", self.vhost, "name", "leader"
            )
            for line in out.splitlines():
                name, _, leader = line.strip().partition("\t")
                if name == queue and leader.strip():
                    return self.node_named(leader.strip())
            raise KeyError(f"no leader listed for {queue}:\n{out}")
        raise ClusterStartError("no cluster node is alive")

    def stop(self) -> None:
        """Kill every node still running and remove the folder."""
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _system_user() -> str | None:
    """The system RabbitMQ's user (``rabbitmq``), when this process may run commands as it."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("rabbitmq")
    except KeyError:
        return None
    return "rabbitmq"


def _as_user(user: str | None, argv: list[str]) -> list[str]:
    # setpriv keeps the environment (su would reset it): each node needs its own variables.
    if user is None:
        return argv
    entry = pwd.getpwnam(user)
    return [
        "setpriv",
        f"--reuid={entry.pw_uid}",
        f"--regid={entry.pw_gid}",
        "--init-groups",
        "--",
        *argv,
    ]


def _environ(node: ClusterNode, folder: Path, cookie: str) -> dict[str, str]:
    """The variables that make ``node`` its own server (and point rabbitmqctl at it)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
    cookie_args = f"-setcookie {cookie} -kernel inet_dist_use_interface {{127,0,0,1}}"
    return {
        **base,
        "HOME": str(node.home),
        "RABBITMQ_NODENAME": node.name,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(node.port),
        "RABBITMQ_DIST_PORT": str(node.dist_port),
        "RABBITMQ_MNESIA_BASE": str(node.home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(node.home / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(node.home / "rabbitmq.conf"),
        # Not /etc/rabbitmq/rabbitmq-env.conf: it names the system node.
        "RABBITMQ_CONF_ENV_FILE": str(folder / "rabbitmq-env.conf"),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": cookie_args,
        "RABBITMQ_CTL_ERL_ARGS": cookie_args,
        "ERL_EPMD_ADDRESS": "127.0.0.1",
    }


def _wait_booted(cluster: Cluster, node: ClusterNode, deadline: float) -> None:
    while True:
        if node.process is not None and node.process.poll() is not None:
            log = "\n".join(
                p.read_text(errors="replace")[-3000:] for p in (node.home / "log").glob("*.log")
            )
            raise ClusterStartError(f"{node.name} exited with {node.process.returncode}\n{log}")
        try:
            cluster.ctl(node, "await_startup", "--timeout", "5")
            return
        except (ClusterStartError, subprocess.TimeoutExpired) as exc:
            if time.monotonic() > deadline:
                raise ClusterStartError(f"{node.name} did not boot in time: {exc}") from None
            time.sleep(0.5)


def start_cluster(folder: Path, *, size: int = 3, prefix: str = "bedsc") -> Cluster:
    """Start ``size`` RabbitMQ nodes in ``folder`` (which this takes over) and cluster them.

    Raises:
        ClusterStartError: a node did not boot or join; everything started is stopped again.
    """
    folder.mkdir(parents=True, exist_ok=True)
    run_as = _system_user()
    cookie = secrets.token_hex(16).upper()
    (folder / "enabled_plugins").write_text("[].\n", encoding="utf-8")
    (folder / "rabbitmq-env.conf").write_text("", encoding="utf-8")
    suffix = secrets.token_hex(3)
    nodes = []
    for index in range(1, size + 1):
        home = folder / f"n{index}"
        home.mkdir()
        nodes.append(
            ClusterNode(
                name=f"{prefix}{index}_{suffix}@localhost",
                port=_free_port(),
                dist_port=_free_port(),
                home=home,
            )
        )
        # Loopback only; loopback_users none: the cluster's user logs in (from loopback anyway).
        (home / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{nodes[-1].port}\nloopback_users = none\n"
            "log.console = false\nlog.file.level = warning\n",
            encoding="utf-8",
        )
    cluster = Cluster(
        nodes=nodes,
        folder=folder,
        cookie=cookie,
        vhost=f"beds-cluster-{suffix}",
        user=f"beds_cluster_{suffix}",
        password=secrets.token_hex(12),
        run_as=run_as,
    )
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        for path in [folder, *folder.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
    try:
        for node in nodes:
            with (node.home / "server.out").open("wb") as out:
                node.process = subprocess.Popen(
                    _as_user(run_as, [SERVER]),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=_environ(node, folder, cookie),
                    cwd=node.home,
                    start_new_session=True,  # its own process group: killed as one
                )
        deadline = time.monotonic() + BOOT_SECONDS
        for node in nodes:
            _wait_booted(cluster, node, deadline)
        first = nodes[0]
        for node in nodes[1:]:
            cluster.ctl(node, "stop_app")
            cluster.ctl(node, "join_cluster", first.name)
            cluster.ctl(node, "start_app")
        cluster.ctl(first, "add_vhost", cluster.vhost)
        cluster.ctl(first, "add_user", cluster.user, cluster.password)
        cluster.ctl(first, "set_permissions", "-p", cluster.vhost, cluster.user, ".*", ".*", ".*")
    except BaseException:
        cluster.stop()
        raise
    return cluster


if __name__ == "__main__":  # start, show, stop: python -m tests.integration.cluster.servers
    import tempfile

    started = time.monotonic()
    made = start_cluster(Path(tempfile.mkdtemp(prefix="beds-cluster-")))
    try:
        print(f"started in {time.monotonic() - started:.1f} s: {made.urls}")
        print(made.ctl(made.nodes[0], "cluster_status"))
    finally:
        made.stop()
