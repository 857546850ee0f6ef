"""The workers module's readiness rule (no services: the counts are given)."""

from __future__ import annotations

from benchmarks.workers import missing

QUEUES = ["beds.bench.appServer.rBroker", "beds.bench.control"]
SHARED = frozenset({"beds.bench.control"})


def test_broker_queues_need_exactly_one_consumer_per_worker() -> None:
    counts = {"beds.bench.appServer.rBroker": 3, "beds.bench.control": 2}
    assert missing(counts, QUEUES, 2, SHARED) == [
        "beds.bench.appServer.rBroker: 3 consumers, want 2"
    ]
    counts["beds.bench.appServer.rBroker"] = 1
    assert missing(counts, QUEUES, 2, SHARED) == [
        "beds.bench.appServer.rBroker: 1 consumers, want 2"
    ]


def test_the_control_stream_needs_at_least_one_per_worker() -> None:
    # An HTTP edge, or a process of the previous module still closing, reads the stream too.
    assert (
        missing({"beds.bench.appServer.rBroker": 1, "beds.bench.control": 2}, QUEUES, 1, SHARED)
        == []
    )
    assert missing(
        {"beds.bench.appServer.rBroker": 2, "beds.bench.control": 1}, QUEUES, 2, SHARED
    ) == ["beds.bench.control: 1 consumers, want 2"]
