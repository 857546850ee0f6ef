"""The edge's Prometheus metrics, on a registry of its own (``GET /metrics``).

=====================================  ======================================================
metric                                 meaning
=====================================  ======================================================
``beds_http_requests_total``           answered requests, by ``route`` (its path pattern;
                                       ``unmatched``, ``static``) and ``status``
``beds_http_refused_total``            requests the edge refused itself, never sent to a
                                       node, by ``reason`` (``json``, ``body_size``,
                                       ``content_type``, ``header``, ``token``, ``cors``,
                                       ``params``, ``cursor``, ``route``…)
``beds_http_stream_clients``           connected live-event clients now
``beds_http_stream_dropped_total``     clients dropped for falling behind
``beds_http_live_events_total``        live events, by ``outcome`` (``sent`` to a client,
                                       ``ignored``: not a live template of this edge)
``beds_http_lineage_events_total``     ``http`` lineage events, by ``outcome``
                                       (``recorded``, ``published``: confirmed by RabbitMQ,
                                       ``dropped``: the buffer overflowed while it was away)
``beds_http_lineage_failures_total``   lineage batches RabbitMQ did not take (retried), and
                                       events that could not be recorded
``beds_http_lineage_waiting``          lineage events buffered, not yet published
=====================================  ======================================================

Counting touches plain dictionaries; the collector builds metric families at scrape time, as
the node's metrics do (:mod:`beds.telemetry.metrics`).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.core import Metric

    from beds_http.lineage import EdgeLineage

__all__ = ("EdgeMetrics",)


class EdgeMetrics:
    """The edge's counters (see the module docstring)."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self.refused: Counter[str] = Counter()
        self.stream_clients = 0
        self.stream_dropped = 0
        self.live_sent = 0
        self.live_ignored = 0
        self.lineage: EdgeLineage | None = None
        """The edge's lineage recorder, read at scrape time."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _Collector(Collector):
    def __init__(self, metrics: EdgeMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        requests = CounterMetricFamily(
            "beds_http_requests",
            "Requests answered, by route and status.",
            labels=["route", "status"],
        )
        for (route, status), count in sorted(m.requests.items()):
            requests.add_metric([route, status], count)
        refused = CounterMetricFamily(
            "beds_http_refused",
            "Requests the edge refused without sending them to a node, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(m.refused.items()):
            refused.add_metric([reason], count)
        live = CounterMetricFamily(
            "beds_http_live_events", "Live events, by outcome.", labels=["outcome"]
        )
        live.add_metric(["sent"], m.live_sent)
        live.add_metric(["ignored"], m.live_ignored)
        yield requests
        yield refused
        yield live
        yield GaugeMetricFamily(
            "beds_http_stream_clients", "Live-event clients connected now.", value=m.stream_clients
        )
        yield CounterMetricFamily(
            "beds_http_stream_dropped",
            "Live-event clients dropped for falling behind.",
            value=m.stream_dropped,
        )
        lineage = m.lineage
        if lineage is not None:
            events = CounterMetricFamily(
                "beds_http_lineage_events", "HTTP lineage events, by outcome.", labels=["outcome"]
            )
            events.add_metric(["recorded"], lineage.recorded)
            events.add_metric(["published"], lineage.published)
            events.add_metric(["dropped"], lineage.dropped)
            yield events
            yield CounterMetricFamily(
                "beds_http_lineage_failures",
                "Lineage batches RabbitMQ did not take, and events not recorded.",
                value=lineage.failures,
            )
            yield GaugeMetricFamily(
                "beds_http_lineage_waiting",
                "Lineage events buffered, not yet published.",
                value=lineage.waiting,
            )
