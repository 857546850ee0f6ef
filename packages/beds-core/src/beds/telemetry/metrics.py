"""A node's Prometheus metrics: cheap per-message accumulators, read by a collector at scrape.

Every node has its own :class:`~prometheus_client.CollectorRegistry` (never the process-wide
default one), so several nodes can run in one process. The hot path touches plain Python
numbers only: a pool calls :meth:`BrokerInstruments.dispatched` once per message, which adds
to a counter and one or two :class:`LatencyHistogram` buckets. Nothing there takes a lock or
builds a label dictionary. Each node runs on one event loop, so no lock is needed; the
collector turns the numbers into metric families when Prometheus scrapes ``/metrics``, and
prometheus_client writes the exposition format.

Everything read at scrape time (in flight, over budget, retries, queue depths) costs the
message path nothing. docs/telemetry.md lists every metric.

Why this module is long: every metric a node exports is declared and collected here, in one
place, so docs/telemetry.md and the collector can be checked against each other.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping

    from aiormq.abc import DeliveredMessage

    from beds.broker.pool import BrokerPool
    from beds.envelopes import Request, Response
    from beds.telemetry.queues import QueuePoller
    from beds.telemetry.view import NodeView

__all__ = (
    "BUCKETS",
    "BrokerInstruments",
    "LatencyHistogram",
    "NodeMetrics",
    "TelemetryView",
    "over_budget",
)

BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Upper bounds (seconds) of the latency buckets; a BEDS request usually takes about 1 ms."""


class LatencyHistogram:
    """Bucket counts and a sum of observed seconds, without a lock (one event loop per node)."""

    __slots__ = ("bounds", "counts", "labels", "sum")

    def __init__(self, bounds: tuple[float, ...] = BUCKETS) -> None:
        self.bounds = bounds
        self.labels = (*(repr(float(bound)) for bound in bounds), "+Inf")
        """The ``le`` label of each bucket."""
        self.counts = [0] * (len(bounds) + 1)
        """Observations per bucket (not cumulative); the last one is ``+Inf``."""
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation in the first bucket whose bound is at least ``seconds``."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        """Observations so far."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, observations at or below it)`` pairs, ending with ``+Inf``, for Prometheus."""
        pairs: list[tuple[str, float]] = []
        running = 0
        for label, count in zip(self.labels, self.counts, strict=True):
            running += count
            pairs.append((label, running))
        return pairs


class BrokerInstruments:
    """One broker's counters, kept for the node's life (pools are replaced on reconnect).

    It is the pool's :class:`~beds.broker.pool.BrokerObserver`.
    """

    __slots__ = ("broker", "dead_letters", "errors", "handled", "latency", "store_latency")

    def __init__(self, broker: str, store_latency: Mapping[str, LatencyHistogram]) -> None:
        self.broker = broker
        self.handled = 0
        """Messages the dispatcher answered (error answers included)."""
        self.errors: dict[str, int] = {}
        """Error answers by catalogue code."""
        self.dead_letters: dict[str, int] = {}
        """Messages this broker dead-lettered, by the code in ``x-beds-error-code``."""
        self.latency = LatencyHistogram()
        """The dispatcher's time per message (``meta.timings["total"]``)."""
        self.store_latency = store_latency
        """Template name → the histogram of its store's adapter calls."""

    def dispatched(self, request: Request | None, response: Response) -> None:
        """Count one answered message (the pool calls this once per message)."""
        self.handled += 1
        timings = response.meta.timings
        total = timings.get("total")
        if total is not None:
            self.latency.observe(total / 1000.0)
        error = response.error
        if error is not None:
            self.errors[error.code] = self.errors.get(error.code, 0) + 1
        store = timings.get("store")
        if store is not None and request is not None:
            histogram = self.store_latency.get(request.template)
            if histogram is not None:
                histogram.observe(store / 1000.0)

    def dead_lettered(self, code: str) -> None:
        """Count one dead letter published by the pool."""
        self.dead_letters[code] = self.dead_letters.get(code, 0) + 1


def over_budget(
    pool: BrokerPool, budget: float, now: float
) -> list[tuple[float, DeliveredMessage]]:
    """The pool's messages in flight for longer than ``budget`` seconds: ``(age, message)``.

    Args:
        pool: the broker pool.
        budget: ``reliability.handler_budget``.
        now: ``time.monotonic()``.
    """
    return [(now - taken, message) for taken, message in pool.holding() if now - taken > budget]


class TelemetryView(Protocol):
    """What the collector, ``/status`` and the HTTP endpoints read of the node's telemetry.

    :class:`~beds.telemetry.Telemetry` satisfies it; the Protocol keeps this module, ``status``
    and ``http`` from importing the service that builds them (no import cycle).
    """

    @property
    def node(self) -> NodeView:
        """The node observed."""
        ...

    @property
    def version(self) -> str:
        """The beds-core version the node runs."""
        ...

    @property
    def started_at(self) -> float:
        """Unix time the node started (IPL began)."""
        ...

    @property
    def time(self) -> Callable[[], float]:
        """The wall clock."""
        ...

    @property
    def monotonic(self) -> Callable[[], float]:
        """The clock of ``BrokerPool.holding()``."""
        ...

    @property
    def metrics(self) -> NodeMetrics:
        """The node's registry and instruments."""
        ...

    @property
    def poller(self) -> QueuePoller:
        """The last reading of the queue depths."""
        ...

    def ready(self) -> tuple[bool, str]:
        """Whether the node serves, and its state or which brokers do not consume."""
        ...


class NodeMetrics:
    """The registry of one node and the instruments its pools report to.

    Args:
        telemetry: the node's telemetry, which the collector reads at scrape time.
        process_metrics: also register prometheus_client's process, platform and GC
            collectors (``process_cpu_seconds_total``, ``python_gc_*``…).
    """

    def __init__(self, telemetry: TelemetryView, *, process_metrics: bool = True) -> None:
        self.telemetry = telemetry
        self.registry = CollectorRegistry()
        self.brokers: dict[str, BrokerInstruments] = {}
        self.stores: dict[str, LatencyHistogram] = {}
        """Connection → latency of its adapter calls (``meta.timings["store"]``): the label
        ``store`` is the store's name for its default connection (``rel``), and
        ``rel.warehouse`` for a named database, which may be another server."""
        self._by_template: dict[str, LatencyHistogram] = {}
        self.registry.register(_NodeCollector(self))
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    def broker(self, name: str) -> BrokerInstruments:
        """The instruments of one broker, made once and then reused (across reconnects)."""
        if not self._by_template:
            # Templates are known once IPL loaded the plugins, before any pool starts; a scrape
            # during IPL finds none yet. Every BrokerInstruments shares this one dictionary.
            for template in self.telemetry.node.templates.values():
                histogram = self.stores.setdefault(template.connection, LatencyHistogram())
                self._by_template[template.name] = histogram
        instruments = self.brokers.get(name)
        if instruments is None:
            instruments = self.brokers[name] = BrokerInstruments(name, self._by_template)
        return instruments


class _NodeCollector(Collector):
    """Builds the metric families from the node, its instruments and the last queue poll."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the families depend on the node's brokers and stores."""
        return ()

    def collect(self) -> Iterator[Metric]:
        """Read everything once, at scrape time."""
        telemetry = self.metrics.telemetry
        node = telemetry.node
        config = node.config
        ids = [config.node.name, config.node.role]
        info = InfoMetricFamily(
            "beds_node", "The node's identity.", labels=["node", "role", "env", "version"]
        )
        info.add_metric([*ids, config.node.env, telemetry.version], {})
        yield info
        yield _gauge("beds_node_ready", "1 while /ready answers 200.", ids, telemetry.ready()[0])
        yield _gauge(
            "beds_node_start_time_seconds",
            "Unix time the node started (IPL began).",
            ids,
            telemetry.started_at,
        )
        reconnects = CounterMetricFamily(
            "beds_node_reconnects",
            "Times the node reconnected to RabbitMQ.",
            labels=["node", "role"],
        )
        reconnects.add_metric(ids, node.reconnects)
        yield reconnects
        control = node.control
        events = CounterMetricFamily(
            "beds_control_events",
            "Control events, by kind and outcome (received, published, failed, refused:<reason>).",
            labels=["node", "role", "kind", "outcome"],
        )
        if control is not None:
            for kind, count in sorted(control.received.items()):
                events.add_metric([*ids, kind, "received"], count)
            for kind, count in sorted(control.published.items()):
                events.add_metric([*ids, kind, "published"], count)
            for kind, count in sorted(control.failed.items()):
                events.add_metric([*ids, kind, "failed"], count)
            for reason, count in sorted(control.refused.items()):
                events.add_metric([*ids, "", f"refused:{reason}"], count)
        yield events
        retired = CounterMetricFamily(
            "beds_retention_retired",
            "Records retired (archived or deleted) by the retention sweeps this node ran.",
            labels=["node", "role", "template"],
        )
        for template, count in sorted(node.retention_retired.items()):
            retired.add_metric([*ids, template], count)
        yield retired
        yield from self._brokers(ids)
        yield from self._stores(ids)
        yield from self._queues(ids)

    def _brokers(self, ids: list[str]) -> Iterator[Metric]:
        telemetry = self.metrics.telemetry
        node = telemetry.node
        labels = ["node", "role", "broker"]
        handled = CounterMetricFamily(
            "beds_broker_messages", "Messages the dispatcher answered.", labels=labels
        )
        errors = CounterMetricFamily(
            "beds_broker_errors", "Error answers, by catalogue code.", labels=[*labels, "code"]
        )
        dead = CounterMetricFamily(
            "beds_broker_dead_letters",
            "Messages the broker dead-lettered, by error code.",
            labels=[*labels, "code"],
        )
        retries = CounterMetricFamily(
            "beds_broker_retries",
            "Store calls tried again after a transient failure.",
            labels=labels,
        )
        budget_total = CounterMetricFamily(
            "beds_broker_over_budget",
            "Handlers that ran past reliability.handler_budget.",
            labels=labels,
        )
        in_flight = GaugeMetricFamily(
            "beds_broker_in_flight", "Messages being handled now.", labels=labels
        )
        budget_now = GaugeMetricFamily(
            "beds_broker_in_flight_over_budget",
            "Messages being handled now for longer than reliability.handler_budget.",
            labels=labels,
        )
        unsettled_age = GaugeMetricFamily(
            "beds_broker_oldest_unsettled_seconds",
            "Age of the broker's oldest delivery not yet acknowledged or dead-lettered "
            "(bounded by reliability.handler_budget + settle_grace).",
            labels=labels,
        )
        unsettled = GaugeMetricFamily(
            "beds_broker_unsettled",
            "Deliveries the broker holds unsettled (waiting or being handled).",
            labels=labels,
        )
        stopped = CounterMetricFamily(
            "beds_broker_handlers_stopped",
            "Handlers stopped past handler_budget + settle_grace (request dead-lettered).",
            labels=labels,
        )
        replies_lost = CounterMetricFamily(
            "beds_broker_replies_lost",
            "Replies that could not be delivered (a write's outcome is kept as a dead letter).",
            labels=labels,
        )
        latency = HistogramMetricFamily(
            "beds_broker_handler_seconds",
            "Seconds the dispatcher took per message (meta.timings total).",
            labels=labels,
        )
        budget = node.config.reliability.handler_budget
        now = telemetry.monotonic()
        for broker in node.config.brokers:
            values = [*ids, broker]
            instruments = self.metrics.broker(broker)
            handled.add_metric(values, instruments.handled)
            for code, count in sorted(instruments.errors.items()):
                errors.add_metric([*values, code], count)
            for code, count in sorted(instruments.dead_letters.items()):
                dead.add_metric([*values, code], count)
            dispatcher = node.dispatchers.get(broker)
            if dispatcher is not None:
                retries.add_metric(values, dispatcher.retried)
            pool = node.pools.get(broker)
            budget_total.add_metric(values, pool.over_budget if pool is not None else 0)
            in_flight.add_metric(values, pool.in_flight if pool is not None else 0)
            late = len(over_budget(pool, budget, now)) if pool is not None else 0
            budget_now.add_metric(values, late)
            unsettled_age.add_metric(values, pool.oldest_unsettled(now) if pool else 0.0)
            unsettled.add_metric(values, pool.settle.unsettled_count if pool else 0)
            stopped.add_metric(values, pool.stopped if pool is not None else 0)
            replies_lost.add_metric(values, pool.replies_lost if pool is not None else 0)
            histogram = instruments.latency
            latency.add_metric(values, histogram.cumulative(), histogram.sum)
        yield from (handled, errors, dead, retries, budget_total, in_flight, budget_now)
        yield from (unsettled_age, unsettled, stopped, replies_lost, latency)

    def _stores(self, ids: list[str]) -> Iterator[Metric]:
        latency = HistogramMetricFamily(
            "beds_store_call_seconds",
            "Seconds per adapter call, retries included (meta.timings store).",
            labels=["node", "role", "store"],
        )
        for store, histogram in sorted(self.metrics.stores.items()):
            latency.add_metric([*ids, store], histogram.cumulative(), histogram.sum)
        yield latency
        fallbacks = CounterMetricFamily(
            "beds_store_replica_fallbacks",
            "Reads asked of a replica (consistency secondary) that the primary answered.",
            labels=["node", "role", "store"],
        )
        for connection, adapter in sorted(self.metrics.telemetry.node.adapters.items()):
            replicas = getattr(adapter, "replicas", None)  # adapters with read replicas (REL)
            count = getattr(replicas, "fallbacks", None)
            if isinstance(count, int):
                fallbacks.add_metric([*ids, connection], count)
        yield fallbacks

    def _queues(self, ids: list[str]) -> Iterator[Metric]:
        poller = self.metrics.telemetry.poller
        labels = ["node", "role", "broker", "queue"]
        depth = GaugeMetricFamily(
            "beds_queue_messages", "Messages ready in the broker's queue.", labels=labels
        )
        consumers = GaugeMetricFamily(
            "beds_queue_consumers", "Consumers of the broker's queue (every node).", labels=labels
        )
        for broker, queue in poller.brokers.items():
            depth.add_metric([*ids, broker, queue.queue], queue.messages)
            consumers.add_metric([*ids, broker, queue.queue], queue.consumers)
        yield from (depth, consumers)
        dead_labels = ["node", "role", "queue"]
        dead_depth = GaugeMetricFamily(
            "beds_dead_letter_messages",
            "Messages in the environment's dead-letter queue.",
            labels=dead_labels,
        )
        oldest = GaugeMetricFamily(
            "beds_dead_letter_oldest_age_seconds",
            "Age of the dead-letter queue's head: since it was dead-lettered (classic queues).",
            labels=dead_labels,
        )
        dead_queue = poller.dead
        if dead_queue is not None:
            dead_depth.add_metric([*ids, dead_queue.queue], dead_queue.messages)
            age = dead_queue.oldest_age(self.metrics.telemetry.time())
            if age is not None:
                oldest.add_metric([*ids, dead_queue.queue], age)
        yield from (dead_depth, oldest)
        polled = GaugeMetricFamily(
            "beds_queue_polled_time_seconds",
            "Unix time of the last successful read of the queue depths.",
            labels=["node", "role"],
        )
        if poller.polled_at is not None:
            polled.add_metric(ids, poller.polled_at)
        yield polled


def _gauge(name: str, documentation: str, ids: list[str], value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["node", "role"])
    family.add_metric(ids, float(value))
    return family
