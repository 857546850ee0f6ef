"""Service accounts end to end: provision, run a node of each role as its own accounts, review.

A fresh vhost, MariaDB database and MongoDB database; ``beds provision`` makes the accounts of
appServer, admin and clients on RabbitMQ, MariaDB and MongoDB (SecantusDB); both nodes run in
production mode as those accounts and serve a client's calls; a client cannot consume a broker
queue and a node's MariaDB account cannot read a table; ``beds check --production`` finds
nothing, then names a privilege granted on top; re-running the provisioning changes nothing;
no password appears in any output or log. Everything made is removed, also on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import aiormq
import asyncmy
import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from beds.testing import unique_name
from tests.e2e.helpers import NodeProcess, config_text, wait_until
from tests.helpers import operator_token

if TYPE_CHECKING:
    from aiormq.abc import DeliveredMessage

pytestmark = [pytest.mark.rabbitmq, pytest.mark.mariadb, pytest.mark.mongodb]

ROLES = ("appServer", "admin")


def _run(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The beds command with ``env`` added to an environment without BEDS_ variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BEDS_")}
    return subprocess.run(
        [sys.executable, "-m", "beds", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**clean, **env},
        check=False,
    )


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


class Deployment:
    """The test's names, files and everything it made (for the clean-up)."""

    def __init__(self, root: Path, amqp_url: str, mariadb_url: str, mongo_uri: str) -> None:
        self.env = unique_name("prov")
        self.vhost = unique_name("beds-prov")
        self.database = unique_name("beds_prov")
        self.mongo_uri = mongo_uri
        self.root = root
        self.secrets = root / "secrets"
        self.outputs: list[str] = []
        text = config_text(
            _with_path(amqp_url, f"/{self.vhost}"),
            _with_path(mariadb_url, f"/{self.database}"),
            mongo_uri,
            self.database,
            self.env,
        )
        self.config = root / "beds.toml"
        self.config.write_text(text, encoding="utf-8")
        production = root / "production"
        production.mkdir()
        self.production = production / "beds.toml"
        # Production: each node's URLs come from its secret files (admin has no MariaDB one).
        rel_line = next(line for line in text.splitlines() if line.startswith('url = "mysql'))
        production_text = text.replace(f"{rel_line}\n", "").replace(
            "[node]\n", '[node]\nmode = "production"\n', 1
        )
        self.production.write_text(production_text, encoding="utf-8")
        self.nodes: list[NodeProcess] = []
        self.cursor_secret = secrets.token_hex(16)
        """Production signs page cursors with a secret of its own (reads.cursor_secret)."""

    def user(self, role: str) -> str:
        return f"beds-{self.env}-{role}"

    def beds(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = _run(env or {}, *args)
        self.outputs += [result.stdout, result.stderr]
        return result

    def as_role(self, role: str) -> dict[str, str]:
        """The environment of a production node (or client) of ``role``: its accounts' URLs."""
        users = json.dumps([self.user(r) for r in ROLES])
        env = {
            "BEDS__AMQP__URL_FILE": str(self.secrets / f"rabbitmq-{self.user(role)}.url"),
            "BEDS__CONTROL__TRUSTED_USERS": users,
            "BEDS__LINEAGE__TRUSTED_USERS": users,
            "BEDS__READS__CURSOR_SECRET": self.cursor_secret,
        }
        for service, key in (("mariadb", "REL__URL"), ("mongodb", "REC__URI")):
            path = self.secrets / f"{service}-{self.user(role)}.url"
            if path.is_file():
                env[f"BEDS__STORES__{key}_FILE"] = str(path)
        return env

    def start(self, role: str, name: str) -> NodeProcess:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("BEDS_")}
        environ.update(self.as_role(role), BEDS__NODE__NAME=name)
        process = subprocess.Popen(
            [sys.executable, "-m", "beds", "run", "--config", str(self.production), "--node", role],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        node = NodeProcess(process)
        self.nodes.append(node)
        return node

    def passwords(self) -> list[str]:
        """Every password made, and the cursor secret: none may be in any output."""
        files = self.secrets.glob("*.password")
        return [*(path.read_text(encoding="utf-8").strip() for path in files), self.cursor_secret]


def _sql(url: str, statement: str, database: str | None = None) -> list[tuple[object, ...]]:
    parts = urlsplit(url)

    async def run() -> list[tuple[object, ...]]:
        conn = await asyncmy.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=parts.username or "root",
            password=parts.password or "",
            database=database,
        )
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(statement)
                return list(await cursor.fetchall())
        finally:
            conn.close()

    return asyncio.run(run())


def _clean_up(deployment: Deployment, mariadb_url: str) -> None:
    """Remove the vhost, the users, the accounts and the databases, whatever happened."""
    ctl = shutil.which("rabbitmqctl")
    assert ctl is not None
    for role in (*ROLES, "client"):
        subprocess.run(
            [ctl, "-q", "delete_user", deployment.user(role)], check=False, capture_output=True
        )
    subprocess.run([ctl, "-q", "delete_vhost", deployment.vhost], check=False, capture_output=True)
    for user, host in _sql(
        mariadb_url, f"SELECT User, Host FROM mysql.user WHERE User LIKE 'beds-{deployment.env}-%'"
    ):
        _sql(mariadb_url, f"DROP USER IF EXISTS '{user}'@'{host}'")
    _sql(mariadb_url, f"DROP DATABASE IF EXISTS `{deployment.database}`")
    client: MongoClient[dict[str, object]] = MongoClient(deployment.mongo_uri)
    try:
        database = client[deployment.database]
        for role in ROLES:
            for command in ("dropUser", "dropRole"):
                with contextlib.suppress(OperationFailure):  # it may not have been made
                    database.command(command, deployment.user(role))
        client.drop_database(deployment.database)
    finally:
        client.close()


@pytest.fixture
def deployment(
    tmp_path: Path, amqp_url: str, mariadb_url: str, mongo_server_uri: str
) -> Iterator[Deployment]:
    made = Deployment(tmp_path, amqp_url, mariadb_url, mongo_server_uri)
    try:
        yield made
    finally:
        codes = [(node.stop(), node) for node in made.nodes]
        _clean_up(made, mariadb_url)
        for code, node in codes:
            assert code == 0, node.output()


def _provision(
    deployment: Deployment, service: str, *roles: str
) -> subprocess.CompletedProcess[str]:
    args = ["provision", service, "--config", str(deployment.config), "--apply"]
    args += ["--secrets-dir", str(deployment.secrets)]
    for role in roles:
        args += ["--role", role]
    result = deployment.beds(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _said(node: NodeProcess, text: str) -> bool:
    return text in node.output()


async def _ignore(message: DeliveredMessage) -> None:
    del message


async def _refused(url: str, queue: str) -> str:
    """Consume ``queue`` as the user of ``url``: RabbitMQ's refusal, or '' if it let us."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        try:
            await channel.basic_consume(queue, _ignore)
        except aiormq.exceptions.ChannelAccessRefused as exc:
            return str(exc)
        return ""
    finally:
        await connection.close()


def test_each_role_runs_as_its_own_least_privilege_accounts(
    deployment: Deployment, mariadb_url: str, mariadb_sql: Callable[[str], None]
) -> None:
    config = str(deployment.config)
    applied = deployment.beds("schema", "apply", "--config", config)
    assert applied.returncode == 0, applied.stderr

    # The plan first: nothing is touched, and no password is printed.
    plan = deployment.beds("provision", "rabbitmq", "--config", config, "--role", "appServer")
    assert plan.returncode == 0, plan.stderr
    assert (
        f"rabbitmqctl add_user {deployment.user('appServer')}   # password on stdin: ***"
        in plan.stdout
    )
    assert not deployment.secrets.exists()

    first = {
        "rabbitmq": _provision(deployment, "rabbitmq", *ROLES, "client"),
        "mariadb": _provision(deployment, "mariadb", *ROLES),
        "mongodb": _provision(deployment, "mongodb", *ROLES),
    }
    assert f"created vhost {deployment.vhost}" in first["rabbitmq"].stdout
    assert (
        f"created account '{deployment.user('appServer')}'@'127.0.0.1'" in first["mariadb"].stdout
    )
    assert "# role admin: uses no MariaDB object, so it has no account" in first["mariadb"].stdout
    assert f"created user {deployment.user('admin')}" in first["mongodb"].stdout
    for service in first:  # idempotent
        again = _provision(
            deployment, service, *ROLES, *(["client"] if service == "rabbitmq" else [])
        )
        assert again.stdout.splitlines()[-1] == "nothing changed: every account is as planned"

    admin = deployment.start("admin", "adm1")
    app = deployment.start("appServer", "app1")
    for node, ready in ((admin, "node adm1 (admin, env"), (app, "node app1 (appServer, env")):
        wait_until(partial(_said, node, ready), ready, 60)
    assert "store rel" not in admin.output()  # admin serves no MariaDB template: no account

    client = deployment.as_role("client") | {"BEDS_TOKEN": operator_token(deployment.env)}
    created = deployment.beds(
        "call",
        "spew_post",
        "create",
        '{"author": "prov", "body": "hi"}',
        "--config",
        str(deployment.production),
        env=client,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    answer = json.loads(created.stdout)
    assert answer["status"] == 201
    event = answer["meta"]["event_id"]
    found = deployment.beds(
        "call",
        "spew_post",
        "fetch",
        '{"query": "by_author", "params": {"author": "prov"}}',
        "--config",
        str(deployment.production),
        env=client,
    )
    assert json.loads(found.stdout)["data"][0]["body"] == "hi"

    def lineage() -> bool:
        tree = deployment.beds(
            "lineage",
            event,
            "--json",
            "--timeout",
            "2",
            "--config",
            str(deployment.production),
            env=client,
        )
        return tree.returncode == 0 and "db" in {e["kind"] for e in json.loads(tree.stdout)}

    wait_until(lineage, "the request's lineage, kept by the admin node as its MongoDB user")

    # What a role does not need, it cannot do.
    client_url = (
        (deployment.secrets / f"rabbitmq-{deployment.user('client')}.url").read_text().strip()
    )
    queue = f"beds.{deployment.env}.appServer.rBroker"
    assert "ACCESS_REFUSED" in asyncio.run(_refused(client_url, queue))
    admin_url = (
        (deployment.secrets / f"rabbitmq-{deployment.user('admin')}.url").read_text().strip()
    )
    assert "ACCESS_REFUSED" in asyncio.run(_refused(admin_url, queue))
    app_sql = (
        (deployment.secrets / f"mariadb-{deployment.user('appServer')}.url").read_text().strip()
    )
    with pytest.raises(asyncmy.errors.OperationalError, match="1142"):
        _sql(app_sql, "SELECT * FROM spp_posts", deployment.database)

    def check(role: str) -> subprocess.CompletedProcess[str]:
        return deployment.beds(
            "check",
            "--production",
            "--config",
            str(deployment.production),
            "--node",
            role,
            env=deployment.as_role(role),
        )

    for role in ROLES:
        clean = check(role)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert clean.stdout.splitlines()[-1] == "[ok  ] production: nothing to fix"

    account = f"'{deployment.user('appServer')}'@'127.0.0.1'"
    mariadb_sql(f"GRANT SELECT ON `{deployment.database}`.* TO {account}")
    excess = check("appServer")
    assert excess.returncode == 1, excess.stdout + excess.stderr
    assert (
        f"[FAIL] stores.rel.url: account {deployment.user('appServer')} has SELECT ON "
        f"`{deployment.database}`.* beyond what its templates need"
    ) in excess.stdout.splitlines()
    fixed = _provision(deployment, "mariadb", "appServer")
    assert fixed.stdout.splitlines() == [
        f"revoked SELECT ON `{deployment.database}`.* from {account}"
    ]
    assert check("appServer").returncode == 0

    for node in deployment.nodes:
        assert node.stop() == 0, node.output()
    said = "\n".join([*deployment.outputs, *(node.output() for node in deployment.nodes)])
    made = deployment.passwords()
    # RabbitMQ: appServer, admin, client; MariaDB: appServer; MongoDB: appServer, admin; cursors
    assert len(made) == 7
    leaked = [secret for secret in made if re.search(re.escape(secret), said)]
    assert not leaked
