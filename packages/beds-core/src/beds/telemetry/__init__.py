"""Operator telemetry: health and readiness probes, Prometheus metrics and a live status.

A node started with ``[telemetry] enabled = true`` (the default) serves ``/health``,
``/ready``, ``/metrics`` and ``/status`` over HTTP (docs/telemetry.md); ``beds status`` prints
the status of a running node.
"""

from beds.telemetry.metrics import BrokerInstruments as BrokerInstruments
from beds.telemetry.metrics import LatencyHistogram as LatencyHistogram
from beds.telemetry.metrics import NodeMetrics as NodeMetrics
from beds.telemetry.queues import QueuePoller as QueuePoller
from beds.telemetry.service import Telemetry as Telemetry
from beds.telemetry.status import build_status as build_status
from beds.telemetry.status import format_status as format_status

__all__ = (
    "BrokerInstruments",
    "LatencyHistogram",
    "NodeMetrics",
    "QueuePoller",
    "Telemetry",
    "build_status",
    "format_status",
)
