"""Telemetry of real nodes: an appServer node and an admin node as ``beds run`` processes.

Issue 4 ("Tests (real services)"): ``/ready`` answers 503 until IPL is over and 200 once the
node serves, 503 again from SIGTERM on while the node drains, and ``/metrics`` counts exactly
the requests sent, per broker and error code.

Nothing here guesses at timings. A gate plugin (an entry point of the ``beds`` group on the
appServer's ``PYTHONPATH``) holds IPL at its last step, the ``beds_node_started`` hooks, until
the test opens the gate: the brokers consume by then, but the node must not say it is ready. A
MariaDB table lock (as a DBA would take it) keeps one create in its handler while the node
stops, so the drain lasts until the test releases it.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import signal
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncmy
import pytest
from prometheus_client.parser import text_string_to_metric_families

from beds.client import BedsClient
from beds.envelopes import Operation, Response
from beds.routing import PING_TEMPLATE
from beds.testing import unique_name
from tests.e2e.helpers import NodeProcess, Start
from tests.helpers import operator_token

pytestmark = [pytest.mark.mariadb, pytest.mark.mongodb]

GATE_PLUGIN = '''"""Holds IPL at the beds_node_started hooks until the file $E2E_IPL_GATE exists."""

import asyncio
import os
import time
from pathlib import Path

from beds import hookimpl
from tests.helpers import operator_token


@hookimpl
async def beds_node_started(node):
    gate = os.environ.get("E2E_IPL_GATE")
    if not gate:
        return
    Path(gate + ".reached").touch()
    deadline = time.monotonic() + 60
    while not Path(gate).exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
'''

TELEMETRY_LINE = re.compile(r"IPL telemetry: ok \((http://[^)\s]+)\)")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def install_gate_plugin(directory: Path) -> Path:
    """The gate plugin as an installed distribution in ``directory`` (for ``PYTHONPATH``)."""
    directory.mkdir()
    (directory / "beds_e2e_gate.py").write_text(GATE_PLUGIN, encoding="utf-8")
    info = directory / "beds_e2e_gate-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: beds-e2e-gate\nVersion: 0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text("[beds]\ne2e_gate = beds_e2e_gate\n", encoding="utf-8")
    return directory


async def poll(
    node: NodeProcess, what: str, check: Callable[[], object], seconds: float = 30
) -> Any:
    """Until ``check()`` (awaited if it is a coroutine) is true, while the node runs; return it."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if node.process.poll() is not None:
            pytest.fail(f"the node exited while waiting for {what}:\n{node.output()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds} s waiting for {what}:\n{node.output()}")
        await asyncio.sleep(0.005)


async def telemetry_url(node: NodeProcess) -> str:
    """The URL the node logged at the telemetry step of IPL (``telemetry.port = 0``)."""

    def logged() -> str | None:
        found = TELEMETRY_LINE.search(node.output())
        return found.group(1) if found else None

    url: str = await poll(node, "the telemetry line of IPL", logged)
    return url


async def ready_of(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    """``/ready``'s status and state; ``(0, "not listening")`` when nothing answers."""
    try:
        async with http.get(url + "/ready") as reply:
            document = await reply.json()
            return reply.status, str(document["state"])
    except aiohttp.ClientConnectionError:
        return 0, "not listening"


async def watch_ready(
    http: aiohttp.ClientSession,
    url: str,
    node: NodeProcess,
    answers: list[tuple[int, str]],
    until: Callable[[tuple[int, str]], bool],
    what: str,
) -> tuple[int, str]:
    """Ask ``/ready`` every few milliseconds, keeping each answer, until ``until(answer)``."""

    async def ask() -> tuple[int, str] | None:
        answer = await ready_of(http, url)
        answers.append(answer)
        return answer if until(answer) else None

    answer: tuple[int, str] = await poll(node, what, ask)
    return answer


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as reply:
        return reply.status, await reply.text()


async def health_of(http: aiohttp.ClientSession, url: str) -> tuple[int, object]:
    async with http.get(url + "/health") as reply:
        return reply.status, await reply.json()


async def scrape(http: aiohttp.ClientSession, url: str) -> Samples:
    """Every sample of ``/metrics``, parsed by prometheus_client: (name, labels) → value."""
    status, text = await get(http, url + "/metrics")
    assert status == 200, text
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def values(found: Samples, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """The samples named ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return [
        (dict(have), count)
        for (named, have), count in found.items()
        if named == name and wanted <= have
    ]


def value(found: Samples, name: str, **labels: str) -> float:
    """The one sample named ``name`` with these labels (among others)."""
    matches = values(found, name, **labels)
    assert len(matches) == 1, f"{name} {labels}: {len(matches)} samples, {matches}"
    return matches[0][1]


def errors_by_code(found: Samples, **labels: str) -> dict[str, float]:
    errors = values(found, "beds_broker_errors_total", **labels)
    return {have["code"]: count for have, count in errors}


async def lock_waiters(dba: Any, database: str) -> int:
    """Sessions on ``database`` waiting for a table lock (handlers stuck behind the DBA's)."""
    async with dba.cursor() as cursor:
        await cursor.execute(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s AND STATE LIKE %s",
            (database, "Waiting for table%"),
        )
        (waiting,) = await cursor.fetchone()
    return int(waiting)


class Sent:
    """What the test sent the appServer: messages per broker, error answers per broker and code."""

    def __init__(self, client: BedsClient) -> None:
        self.client = client
        self.messages: Counter[str] = Counter()
        self.errors: Counter[tuple[str, str]] = Counter()
        self.store_calls = 0
        """Requests that reach the rel store: spew_post creates and fetches that pass validation."""

    async def call(
        self,
        broker: str,
        template: str,
        operation: Operation,
        payload: dict[str, Any] | None = None,
        *,
        code: str = "",
    ) -> Response:
        """Send one request, which ``broker`` answers with the error ``code`` (``""``: none)."""
        self.messages[broker] += 1
        if code:
            self.errors[(broker, code)] += 1
        elif template == "spew_post":
            self.store_calls += 1
        response = await self.client.call(template, operation, payload)
        assert (response.error.code if response.error is not None else "") == code, response
        return response

    async def create(self, record: dict[str, Any], code: str = "") -> Response:
        return await self.call("wBroker", "spew_post", Operation.CREATE, record, code=code)

    async def fetch(self, template: str, payload: dict[str, Any], code: str = "") -> Response:
        return await self.call("rBroker", template, Operation.FETCH, payload, code=code)

    async def ping(self) -> None:
        response = await self.call("rBroker", PING_TEMPLATE, Operation.PING)
        assert response.data == {"pong": "app1"}


HEALTHY = (200, {"status": "alive", "node": "app1"})
READY = (200, "ready")
STARTING = (503, "starting")
STOPPING = (503, "stopping")


async def test_readiness_metrics_and_drain_of_real_nodes(
    deployment: tuple[Path, Start], tmp_path: Path, amqp_url: str, mariadb_url: str
) -> None:
    config, start = deployment
    env = tomllib.loads(config.read_text(encoding="utf-8"))["node"]["env"]
    gate = tmp_path / "ipl-gate"
    reached = tmp_path / "ipl-gate.reached"
    admin = start("admin", "adm1")
    app = start(
        "appServer",
        "app1",
        env={
            "PYTHONPATH": str(install_gate_plugin(tmp_path / "gate-plugin")),
            "E2E_IPL_GATE": str(gate),
            # The drain ends when the locked create is answered, long before this.
            "BEDS__NODE__DRAIN_SECONDS": "60",
        },
    )
    ids = {"node": "app1", "role": "appServer"}
    client = BedsClient(
        amqp_url,
        exchange=f"beds.events.{env}",
        env=env,
        origin="e2e",
        timeout=30,
        token=operator_token(env),
    )
    async with (
        aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=5),
            connector=aiohttp.TCPConnector(force_close=True),  # a new connection per probe
        ) as http,
        client,
    ):
        sent = Sent(client)

        # Start-up. Telemetry is IPL's first step: /ready answers 503 from its first answer on,
        # through RabbitMQ, plugins, stores, templates and brokers, to the node_started hooks.
        app_url = await telemetry_url(app)
        answers: list[tuple[int, str]] = []
        await watch_ready(
            http, app_url, app, answers, lambda _: reached.exists(), "IPL at node_started"
        )
        # Held there: the brokers consume (a ping is answered), the node is not ready yet.
        assert await health_of(http, app_url) == HEALTHY
        assert value(await scrape(http, app_url), "beds_node_ready", **ids) == 0
        await sent.ping()
        assert await ready_of(http, app_url) == STARTING
        gate.touch()
        await watch_ready(http, app_url, app, answers, lambda a: a[0] == 200, "/ready 200")
        assert answers[-1] == READY
        assert set(answers[:-1]) == {STARTING}, answers  # never anything else before
        await sent.ping()  # ready means serving
        assert await ready_of(http, app_url) == READY
        await poll(
            app,
            "the ready log line",
            lambda: f"node app1 (appServer, env {env}) ready" in app.output(),
        )

        admin_url = await telemetry_url(admin)
        admin_answers: list[tuple[int, str]] = []
        await watch_ready(
            http, admin_url, admin, admin_answers, lambda a: a[0] == 200, "the admin node ready"
        )
        assert admin_answers[-1] == READY
        assert set(admin_answers[:-1]) <= {STARTING}, admin_answers

        # Requests of several kinds, concurrently; the appServer counts exactly these.
        author = unique_name("tel")[:30]
        creates, fetches, pings, invalid, unknown = 6, 5, 4, 3, 2
        created = await asyncio.gather(
            *(sent.create({"author": author, "body": f"post {n}"}) for n in range(creates))
        )
        posts = [response.data["id"] for response in created]
        await asyncio.gather(
            *(
                sent.fetch("spew_post", {"query": "by_id", "params": {"id": posts[n % creates]}})
                for n in range(fetches)
            ),
            *(sent.ping() for _ in range(pings)),
            # body has min_length 1: a validation error, before any store call.
            *(sent.create({"author": author, "body": ""}, "BEDS-422") for _ in range(invalid)),
            *(sent.fetch("no_such_template", {"params": {}}, "BEDS-404T") for _ in range(unknown)),
        )
        assert sent.messages == {
            "rBroker": 2 + fetches + pings + unknown,  # 2: the pings of the start-up
            "wBroker": creates + invalid,
        }

        found = await scrape(http, app_url)
        assert value(found, "beds_node_ready", **ids) == 1
        assert value(found, "beds_node_info", **ids, env=env) == 1
        for broker in ("rBroker", "wBroker", "mBroker"):
            labels = {**ids, "broker": broker}
            handled = value(found, "beds_broker_messages_total", **labels)
            assert handled == sent.messages[broker], (broker, handled, sent.messages)
            errors = {code: n for (b, code), n in sent.errors.items() if b == broker}
            assert errors_by_code(found, **labels) == errors, broker
            assert value(found, "beds_broker_handler_seconds_count", **labels) == handled
            assert (
                value(found, "beds_broker_handler_seconds_bucket", **labels, le="+Inf") == handled
            )
            assert value(found, "beds_broker_in_flight", **labels) == 0
            assert value(found, "beds_broker_retries_total", **labels) == 0
        rel = {**ids, "store": "rel"}
        rel_calls = value(found, "beds_store_call_seconds_count", **rel)
        assert sent.store_calls == creates + fetches
        assert rel_calls >= sent.store_calls, (rel_calls, sent.store_calls)
        assert value(found, "beds_store_call_seconds_bucket", **rel, le="+Inf") == rel_calls
        assert value(found, "beds_store_call_seconds_count", **ids, store="rec") == 0
        # The admin node has a registry of its own: not the appServer's brokers or work.
        admin_found = await scrape(http, admin_url)
        assert value(admin_found, "beds_node_ready", node="adm1", role="admin") == 1
        assert not values(admin_found, "beds_broker_messages_total", broker="rBroker")
        assert value(admin_found, "beds_broker_messages_total", broker="adminBrokerIn") == 0
        # Its logs broker counts the event batches it stored (the appServer's lineage).
        logs = {"broker": "adminLogsBroker"}
        stored = 0.0
        for _ in range(200):
            stored = value(admin_found, "beds_broker_messages_total", **logs)
            if stored >= 1:
                break
            await asyncio.sleep(0.05)
            admin_found = await scrape(http, admin_url)
        assert stored >= 1, "adminLogsBroker reports no stored batch"
        assert value(admin_found, "beds_broker_handler_seconds_count", **logs) == stored
        assert not errors_by_code(admin_found, **logs)

        # SIGTERM with a create in its handler, held there by a DBA's table lock: /ready
        # answers 503 at once and for the whole drain; the create is answered; exit 0.
        parts = urlsplit(mariadb_url)
        database = parts.path.lstrip("/")
        dba = await asyncmy.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=parts.username or "root",
            password=parts.password or "",
            database=database,
        )
        try:
            async with dba.cursor() as cursor:
                await cursor.execute("LOCK TABLES spp_posts WRITE")
            slow = asyncio.create_task(
                client.call("spew_post", Operation.CREATE, {"author": author, "body": "slow"})
            )
            await poll(app, "the create to wait for the lock", lambda: lock_waiters(dba, database))
            found = await scrape(http, app_url)
            assert value(found, "beds_broker_in_flight", **ids, broker="wBroker") == 1

            app.process.send_signal(signal.SIGTERM)
            answers = []
            await watch_ready(http, app_url, app, answers, lambda a: a != READY, "/ready not 200")
            assert answers[-1] == STOPPING, answers
            # Still draining (the create holds it): alive, unready, and it stays so.
            for _ in range(5):
                assert await ready_of(http, app_url) == STOPPING
            assert await health_of(http, app_url) == HEALTHY
            found = await scrape(http, app_url)
            assert value(found, "beds_node_ready", **ids) == 0
            assert value(found, "beds_broker_in_flight", **ids, broker="wBroker") == 1
            assert app.process.poll() is None
            assert not slow.done()
            assert await ready_of(http, admin_url) == READY  # the other node serves on
        finally:
            async with dba.cursor() as cursor:
                await cursor.execute("UNLOCK TABLES")
            dba.close()

        answered = await asyncio.wait_for(slow, 30)
        assert (answered.ok, answered.meta.node) == (True, "app1"), answered  # during the drain
        deadline = time.monotonic() + 30
        while app.process.poll() is None:
            assert time.monotonic() < deadline, f"no exit 30 s after the drain:\n{app.output()}"
            await asyncio.sleep(0.02)
        assert app.process.returncode == 0, app.output()
        assert "signal SIGTERM: draining and stopping" in app.output()
        assert await ready_of(http, app_url) == (0, "not listening")
