"""Telemetry without RabbitMQ: config, accumulators, the HTTP endpoints and the status table.

The node is a real, unstarted :class:`BedsNode` whose pools are stand-ins; the endpoints are
served by aiohttp's test server on the loopback interface.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal

import attrs
import orjson
import pytest
from aiohttp import test_utils
from pamqp.commands import Basic
from prometheus_client.parser import text_string_to_metric_families

from beds.codec import encode_request
from beds.config import Config, load_config
from beds.config.model import NodeSettings, RoleSettings, TelemetrySettings
from beds.dispatch import Dispatcher
from beds.envelopes import ErrorBody, Operation, Request, RequestMeta, Response, ResponseMeta
from beds.errors import ConfigError
from beds.factory import Factory
from beds.node import BedsNode, StartupError
from beds.telemetry import LatencyHistogram, Telemetry, format_status
from beds.telemetry.http import make_app
from beds.telemetry.metrics import BrokerInstruments
from beds.telemetry.queues import DeadLetterDepth, QueueDepth
from beds.telemetry.status import (
    StatusUnavailable,
    build_status,
    fetch_status,
    format_duration,
    status_url,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

# -- configuration ---------------------------------------------------------------------------


def test_telemetry_defaults() -> None:
    settings = load_config(None, environ={}).telemetry
    assert settings == TelemetrySettings(
        enabled=True, host="127.0.0.1", port=9464, queue_poll_seconds=15.0
    )


def test_telemetry_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "beds.toml"
    path.write_text(
        "schema_version = 1\n[telemetry]\nhost = '0.0.0.0'\nport = 0\nqueue_poll_seconds = 2\n",
        encoding="utf-8",
    )
    settings = load_config(path, environ={"BEDS__TELEMETRY__ENABLED": "false"}).telemetry
    assert settings == TelemetrySettings(
        enabled=False, host="0.0.0.0", port=0, queue_poll_seconds=2.0
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("port = 70000", "telemetry.port: must be a TCP port from 0 to 65535, got 70000"),
        ("port = -1", "telemetry.port: must be a TCP port from 0 to 65535, got -1"),
        ("queue_poll_seconds = 0", "telemetry.queue_poll_seconds: must be greater than 0, got 0"),
        ("host = ' '", "telemetry.host: must be a host name or address, got ''"),
        ("prot = 1", "telemetry.prot: is not a known key"),
    ],
)
def test_telemetry_errors_name_key_and_file(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "beds.toml"
    path.write_text(f"schema_version = 1\n[telemetry]\n{table}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(caught.value).startswith(message)
    assert f"(file {path}, key telemetry." in str(caught.value)


# -- accumulators ----------------------------------------------------------------------------


def test_histogram_buckets_are_cumulative_with_le_labels() -> None:
    histogram = LatencyHistogram((0.001, 0.01))
    for seconds in (0.0005, 0.001, 0.002, 5.0):
        histogram.observe(seconds)
    assert histogram.count == 4
    assert histogram.sum == pytest.approx(5.0035)
    assert histogram.cumulative() == [("0.001", 2), ("0.01", 3), ("+Inf", 4)]


def response(code: str | None = None, **timings: float) -> Response:
    error = ErrorBody(code=code, message="m") if code else None
    return Response(ok=error is None, status=200, error=error, meta=ResponseMeta(timings=timings))


def test_instruments_count_messages_errors_and_latencies() -> None:
    store = LatencyHistogram()
    instruments = BrokerInstruments("wBroker", {"note": store})
    request = Request(operation=Operation.CREATE, template="note")
    instruments.dispatched(request, response(store=2.0, total=3.0))
    instruments.dispatched(request, response("BEDS-404", store=1.0, total=1.5))
    instruments.dispatched(None, response("BEDS-400", total=0.1))  # undecodable: no store call
    instruments.dispatched(Request(operation=Operation.PING, template="beds"), response(total=0.05))
    instruments.dead_lettered("BEDS-503")
    assert instruments.handled == 4
    assert instruments.errors == {"BEDS-404": 1, "BEDS-400": 1}
    assert instruments.dead_letters == {"BEDS-503": 1}
    assert instruments.latency.count == 4
    assert instruments.latency.sum == pytest.approx(0.00465)
    assert store.count == 2
    assert store.sum == pytest.approx(0.003)


def test_dead_letter_age() -> None:
    assert DeadLetterDepth(queue="q", messages=0).oldest_age(100.0) == 0.0
    assert DeadLetterDepth(queue="q", messages=2).oldest_age(100.0) is None
    assert DeadLetterDepth(queue="q", messages=2, oldest_at=40.0).oldest_age(100.0) == 60.0


# -- a node that is not started, with stand-in pools -----------------------------------------


class FakePool:
    def __init__(self, consuming: bool = True) -> None:
        self.consuming = consuming
        self.paused = False
        self.held: list[tuple[float, Any]] = []
        self.over_budget = 0
        self.stopped = 0
        self.replies_lost = 0
        self.settle = SimpleNamespace(unsettled_count=0)
        self.unsettled_since: float | None = None

    def oldest_unsettled(self, now: float) -> float:
        return 0.0 if self.unsettled_since is None else now - self.unsettled_since

    @property
    def in_flight(self) -> int:
        return len(self.held)

    def holding(self) -> list[tuple[float, Any]]:
        return list(self.held)


def message(request: Request) -> Any:
    properties = Basic.Properties(
        content_type="application/json", correlation_id="c1", message_id="c1"
    )
    return SimpleNamespace(
        body=encode_request(request), header=SimpleNamespace(properties=properties)
    )


def make_node(**telemetry: Any) -> BedsNode:
    config = Config(
        node=NodeSettings(name="n1", env="test"),
        roles={"appServer": RoleSettings(brokers=load_config(None, environ={}).brokers)},
        telemetry=TelemetrySettings(**{"port": 0, **telemetry}),
    )
    return BedsNode(config)


def serve(node: BedsNode) -> tuple[Telemetry, dict[str, FakePool]]:
    """Make ``node`` look ready: telemetry, a dispatcher and a consuming pool per broker."""
    telemetry = node.telemetry or Telemetry(node, process_metrics=False)
    node.telemetry = telemetry
    pools = {name: FakePool() for name in node.config.brokers}
    node.pools = pools  # type: ignore[assignment]
    for name in node.config.brokers:
        node.dispatchers[name] = Dispatcher(
            Factory({}, {}), node="n1", env="test", max_message_bytes=1024
        )
    node.ready = True
    return telemetry, pools


@pytest.fixture
async def client() -> AsyncIterator[tuple[BedsNode, test_utils.TestClient[Any, Any]]]:
    node = make_node()
    telemetry = Telemetry(node, process_metrics=False)
    node.telemetry = telemetry
    async with test_utils.TestClient(test_utils.TestServer(make_app(telemetry))) as http:
        yield node, http


async def test_health_and_readiness(client: tuple[BedsNode, Any]) -> None:
    node, http = client
    reply = await http.get("/health")
    assert reply.status == 200
    assert await reply.json() == {"status": "alive", "node": "n1"}
    reply = await http.get("/ready")
    assert (reply.status, await reply.json()) == (503, {"ready": False, "state": "starting"})

    assert node.telemetry is not None
    _, pools = serve(node)
    reply = await http.get("/ready")
    assert (reply.status, await reply.json()) == (200, {"ready": True, "state": "ready"})

    pools["wBroker"].consuming = False
    reply = await http.get("/ready")
    assert reply.status == 503
    assert (await reply.json())["state"] == "not consuming: wBroker"

    pools["wBroker"].consuming = True
    node._stopping = True
    reply = await http.get("/ready")
    assert (reply.status, (await reply.json())["state"]) == (503, "stopping")


async def test_metrics_in_both_formats(client: tuple[BedsNode, Any]) -> None:
    node, http = client
    telemetry, _ = serve(node)
    instruments = telemetry.observer("wBroker")
    assert telemetry.observer("wBroker") is instruments  # made once, kept across reconnects
    instruments.dispatched(None, response("BEDS-400", total=0.2))
    node.dispatchers["wBroker"].retried = 3
    telemetry.poller.brokers = {"wBroker": QueueDepth(queue="q.w", messages=5, consumers=2)}
    telemetry.poller.dead = DeadLetterDepth(queue="beds.test.dead", messages=1, oldest_at=1.0)
    telemetry.poller.polled_at = 1.0

    reply = await http.get("/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(await reply.text())
        for sample in family.samples
    }

    def sample(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted({"node": "n1", "role": "appServer", **labels}.items())))]

    assert sample("beds_broker_messages_total", broker="wBroker") == 1
    assert sample("beds_broker_errors_total", broker="wBroker", code="BEDS-400") == 1
    assert sample("beds_broker_retries_total", broker="wBroker") == 3
    assert sample("beds_queue_messages", broker="wBroker", queue="q.w") == 5
    assert sample("beds_queue_consumers", broker="wBroker", queue="q.w") == 2
    assert sample("beds_dead_letter_messages", queue="beds.test.dead") == 1
    assert sample("beds_dead_letter_oldest_age_seconds", queue="beds.test.dead") > 0
    assert sample("beds_node_ready") == 1
    assert not any(name.startswith("process_") for name, _ in samples)  # process_metrics=False

    reply = await http.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert reply.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await reply.text()).endswith("# EOF\n")


async def test_registries_are_per_node() -> None:
    first, second = Telemetry(make_node()), Telemetry(make_node())
    assert first.metrics.registry is not second.metrics.registry
    first.observer("rBroker").dispatched(None, response(total=1.0))
    assert second.metrics.broker("rBroker").handled == 0


async def test_status_names_handlers_over_budget(client: tuple[BedsNode, Any]) -> None:
    node, http = client
    telemetry, pools = serve(node)
    telemetry.monotonic = lambda: 1000.0
    slow = Request(
        operation=Operation.CREATE,
        template="note",
        meta=RequestMeta(event_id="app.test.0123456789abcdef0123456789abcdef"),
    )
    pools["wBroker"].held = [(993.0, message(slow)), (999.5, message(slow))]  # 7 s and 0.5 s
    pools["rBroker"].held = [(990.0, SimpleNamespace(body=b"junk", header=message(slow).header))]
    pools["wBroker"].unsettled_since = 988.0  # a delivery waiting 12 s, not yet settled

    metrics = await (await http.get("/metrics")).text()
    assert (
        'beds_broker_oldest_unsettled_seconds{broker="wBroker",node="n1",role="appServer"} 12.0'
        in metrics
    )

    reply = await http.get("/status")
    assert reply.status == 200
    status = await reply.json()
    brokers = {broker["name"]: broker for broker in status["brokers"]}
    assert brokers["wBroker"]["in_flight"] == 2
    assert brokers["wBroker"]["oldest_unsettled_seconds"] == 12.0
    assert brokers["rBroker"]["oldest_unsettled_seconds"] == 0.0
    assert brokers["wBroker"]["over_budget"] == [
        {
            "event_id": "app.test.0123456789abcdef0123456789abcdef",
            "seconds": 7.0,
            "template": "note",
            "operation": "create",
            "correlation_id": "c1",
            "message_id": "c1",
        }
    ]
    assert brokers["rBroker"]["over_budget"][0]["event_id"] is None  # not a request envelope
    assert status["ready"] is True
    assert status["dead_letter_queue"] == {"queue": None, "depth": None, "oldest_age_seconds": None}

    text = format_status(status)
    assert "  wBroker app.test.0123456789abcdef0123456789abcdef: 7.0 s (create note)" in text
    assert "  rBroker (no event id): 10.0 s" in text
    assert "over budget now (budget 5.0 s):" in text
    assert "dead-letter queue: not read yet" in text


def test_status_table() -> None:
    node = make_node()
    telemetry, _ = serve(node)
    telemetry.time = lambda: telemetry.started_at + 3725
    telemetry.observer("wBroker").dispatched(None, response("BEDS-404", total=2.0))
    telemetry.poller.brokers = {
        name: QueueDepth(queue=node.config.queue_name(name), messages=4, consumers=1)
        for name in node.config.brokers
    }
    telemetry.poller.dead = DeadLetterDepth(
        queue="beds.test.dead", messages=3, oldest_at=telemetry.started_at + 3600
    )
    text = format_status(orjson.loads(orjson.dumps(build_status(telemetry))))
    lines = text.splitlines()
    assert lines[0] == "node n1 (role appServer, env test, beds " + telemetry.version + "): ready"
    assert lines[1].startswith("up 1h02m since ")
    assert lines[3].split() == [
        "BROKER", "QUEUE", "DEPTH", "IN", "FLIGHT", "HANDLED", "ERRORS", "RETRIED",
        "DEAD-LETTERED", "OVER", "BUDGET", "UNSETTLED", "MEAN",
    ]  # fmt: skip
    assert lines[5].split() == [
        "wBroker",
        "4",
        "0",
        "1",
        "1",
        "0",
        "0",
        "0",
        "now,",
        "0",
        "total",
        "0,",
        "oldest",
        "0",
        "ms",
        "2.00",
        "ms",
    ]
    assert "  wBroker BEDS-404: 1" in lines
    assert lines[-1] == "dead-letter queue beds.test.dead: 3 messages, oldest 2m05s"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.0123, "12 ms"),
        (7.25, "7.2 s"),
        (185, "3m05s"),
        (7380, "2h03m"),
        (277200, "3d05h"),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


# -- beds status: where and how it reads ---------------------------------------------------


def test_status_url() -> None:
    assert status_url(None, TelemetrySettings()) == "http://127.0.0.1:9464/status"
    assert (
        status_url(None, TelemetrySettings(host="0.0.0.0", port=80)) == "http://127.0.0.1:80/status"
    )
    assert status_url(None, TelemetrySettings(host="::")) == "http://[::1]:9464/status"
    assert status_url("http://h:1/") == "http://h:1/status"
    assert status_url("http://h:1/status") == "http://h:1/status"
    with pytest.raises(ConfigError, match=r"pass --url \(key telemetry.port\)"):
        status_url(None, TelemetrySettings(port=0))
    with pytest.raises(ConfigError, match=r"key telemetry.enabled"):
        status_url(None, TelemetrySettings(enabled=False))


async def test_fetch_status(client: tuple[BedsNode, Any]) -> None:
    node, http = client
    serve(node)
    base = str(http.make_url(""))
    document = await asyncio.to_thread(fetch_status, f"{base}/status")
    assert document["node"] == "n1"
    with pytest.raises(StatusUnavailable, match=r"answered HTTP 404"):
        await asyncio.to_thread(fetch_status, f"{base}/nothing")
    with pytest.raises(StatusUnavailable, match=r"did not answer with a BEDS status document"):
        await asyncio.to_thread(fetch_status, f"{base}/health")


# -- the node's IPL step ---------------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def test_a_free_port_is_picked_and_named() -> None:
    node = make_node()
    await node._start_telemetry()
    try:
        assert node.telemetry is not None
        assert node.telemetry_url == f"http://127.0.0.1:{node.telemetry.server.port}"
        assert node.telemetry.server.port != 0
        assert node.checks[-1].name == "telemetry"
        assert node.checks[-1].detail == node.telemetry_url
    finally:
        assert node.telemetry is not None
        await node.telemetry.stop()


async def test_a_busy_port_warns_in_development_and_fails_in_production(busy_port: int) -> None:
    node = make_node(port=busy_port)
    await node._start_telemetry()
    assert node.telemetry is None
    assert node.checks[-1].status == "warning"
    assert node.checks[-1].detail.startswith(f"cannot listen on 127.0.0.1:{busy_port}: ")

    production = BedsNode(
        Config(
            node=NodeSettings(mode="production"),
            roles=node.config.roles,
            telemetry=TelemetrySettings(port=busy_port),
        )
    )
    with pytest.raises(StartupError, match=r"start-up failed at telemetry: cannot listen on"):
        await production._start_telemetry()


async def test_disabled_telemetry_serves_nothing() -> None:
    node = make_node(enabled=False)
    await node._start_telemetry()
    assert node.telemetry is None
    assert node.telemetry_url is None
    assert node.checks == []


# -- the beds status command -----------------------------------------------------------------


def test_beds_status_watch_prints_until_interrupted(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from click.testing import CliRunner

    from beds import cli as cli_module
    from beds.telemetry import status as status_module

    node = make_node()
    telemetry, _ = serve(node)
    document = orjson.loads(orjson.dumps(build_status(telemetry)))
    answers: list[Any] = [document, StatusUnavailable("no node answers at http://h:1/status")]
    asked: list[str] = []

    def fetch(url: str, timeout: float = 5.0) -> dict[str, Any]:
        asked.append(url)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    def sleep(seconds: float) -> None:
        assert seconds == 0.5
        if not answers:
            raise KeyboardInterrupt

    monkeypatch.setattr(status_module, "fetch_status", fetch)
    monkeypatch.setattr(time, "sleep", sleep)
    result = CliRunner().invoke(cli_module.cli, ["status", "--url", "http://h:1", "--watch", "0.5"])
    assert result.exit_code == 0, result.output
    assert asked == ["http://h:1/status", "http://h:1/status"]
    assert "http://h:1/status, every 0.5 s (Ctrl-C stops)" in result.output
    assert "node n1 (role appServer, env test, beds" in result.output
    assert "beds: error: no node answers at http://h:1/status" in result.output


def test_beds_status_needs_a_fixed_address(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from beds import cli as cli_module

    path = tmp_path / "beds.toml"
    path.write_text("schema_version = 1\n[telemetry]\nport = 0\n", encoding="utf-8")
    result = CliRunner().invoke(cli_module.cli, ["status", "--config", str(path)])
    assert result.exit_code == 2
    assert "telemetry.port is 0: each node picks a free port and logs it; pass --url" in (
        result.output
    )


# -- the queue poller, on a stand-in channel -------------------------------------------------


class FakeChannel:
    def __init__(self, depths: dict[str, int], head: Basic.Properties | None) -> None:
        self.depths = depths
        self.head = head
        self.is_closed = False
        self.gets = 0
        self.nacks: list[tuple[int, bool]] = []

    async def queue_declare(self, queue: str, *, passive: bool, timeout: float) -> Any:
        assert passive
        return SimpleNamespace(message_count=self.depths.get(queue, 0), consumer_count=1)

    async def basic_get(self, queue: str, *, no_ack: bool, timeout: float) -> Any:
        assert not no_ack
        self.gets += 1
        tag = 7 if self.head is not None else None
        return SimpleNamespace(
            delivery_tag=tag,
            body=b"{}",
            routing_key="note.write",
            header=SimpleNamespace(properties=self.head),
        )

    async def basic_nack(self, tag: int, *, requeue: bool) -> None:
        self.nacks.append((tag, requeue))

    async def close(self) -> None:
        self.is_closed = True


class FakeConnection:
    def __init__(self, channel: FakeChannel) -> None:
        self.is_closed = False
        self._channel = channel

    async def channel(self, *, timeout: float) -> FakeChannel:
        return self._channel


def polled_node(
    channel: FakeChannel, queue_type: Literal["classic", "quorum"] = "classic"
) -> Telemetry:
    node = make_node()
    config = node.config
    node.config = Config(
        node=config.node,
        amqp=attrs.evolve(config.amqp, queue_type=queue_type),
        roles=config.roles,
        telemetry=config.telemetry,
    )
    node._connection = FakeConnection(channel)  # type: ignore[assignment]
    return Telemetry(node, process_metrics=False)


async def test_poller_reads_depths_and_the_head_only_when_it_may_have_changed() -> None:
    dead = "beds.test.dead"
    head = Basic.Properties(
        headers={"x-beds-error-code": "BEDS-503", "x-beds-dead-lettered-at": 1000}
    )
    channel = FakeChannel({"beds.test.appServer.wBroker": 4, dead: 2}, head)
    poller = polled_node(channel).poller
    assert await poller.poll()
    assert poller.brokers["wBroker"] == QueueDepth(
        queue="beds.test.appServer.wBroker", messages=4, consumers=1
    )
    assert poller.dead == DeadLetterDepth(queue=dead, messages=2, oldest_at=1000.0, head_read=True)
    assert (channel.gets, channel.nacks) == (1, [(7, True)])  # given straight back

    await poller.poll()
    assert channel.gets == 1  # same depth: the same head
    channel.depths[dead] = 3
    await poller.poll()
    assert channel.gets == 2
    channel.depths[dead] = 0
    await poller.poll()
    assert poller.dead == DeadLetterDepth(queue=dead, messages=0, head_read=True)
    assert poller.dead.oldest_age(5000.0) == 0.0
    assert channel.gets == 2


async def test_poller_never_reads_the_head_of_a_quorum_queue() -> None:
    channel = FakeChannel({"beds.test.dead": 2}, Basic.Properties(headers={}))
    poller = polled_node(channel, "quorum").poller
    assert await poller.poll()
    assert poller.dead == DeadLetterDepth(queue="beds.test.dead", messages=2)
    assert poller.dead.oldest_age(5000.0) is None
    assert channel.gets == 0


async def test_poller_forgets_the_depths_while_rabbitmq_is_away() -> None:
    channel = FakeChannel({"beds.test.dead": 0}, None)
    telemetry = polled_node(channel)
    poller = telemetry.poller
    assert await poller.poll()
    assert set(poller.brokers) == {"rBroker", "wBroker", "mBroker"}
    node = telemetry.node
    assert isinstance(node, BedsNode)
    node._connection = None
    assert not await poller.poll()
    assert (poller.brokers, poller.dead) == ({}, None)
    assert poller.polled_at is not None  # when the last good reading was


def test_store_latency_works_after_a_scrape_during_ipl(demo_template: Any) -> None:
    node = make_node()
    telemetry = Telemetry(node, process_metrics=False)
    early = telemetry.metrics.broker("wBroker")  # /metrics or /status before plugins loaded
    node.templates["demo_item"] = demo_template
    assert telemetry.observer("wBroker") is early
    request = Request(operation=Operation.CREATE, template="demo_item")
    early.dispatched(request, response(store=4.0, total=5.0))
    assert telemetry.metrics.stores["memory"].count == 1


async def test_replica_fallbacks_are_counted_per_connection(
    client: tuple[BedsNode, Any],
) -> None:
    node, http = client
    serve(node)
    with_replicas = SimpleNamespace(replicas=SimpleNamespace(fallbacks=3))
    node.ipl.adapters = {"rel": with_replicas, "rec": SimpleNamespace()}
    text = await (await http.get("/metrics")).text()
    counted = {
        sample.labels["store"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "beds_store_replica_fallbacks_total"
    }
    assert counted == {"rel": 3}  # a store without replicas is not listed
