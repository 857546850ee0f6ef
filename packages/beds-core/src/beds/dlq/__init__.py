"""The dead-letter queue ``beds.{env}.dead``: describe dead letters, list, replay and purge them.

:mod:`beds.dlq.letters` describes a dead letter from its headers (no connection);
:mod:`beds.dlq.queue` operates the queue (``beds dlq``, docs/cli.md).
"""

from beds.dlq.letters import (
    PREVIEW_CHARS,
    REPLAYS_HEADER,
    DeadLetter,
    describe,
    format_table,
    preview,
    replay_properties,
    with_deadline,
)
from beds.dlq.queue import DeadLetterQueue, ReplayResult, TopologyMissing

__all__ = (
    "PREVIEW_CHARS",
    "REPLAYS_HEADER",
    "DeadLetter",
    "DeadLetterQueue",
    "ReplayResult",
    "TopologyMissing",
    "describe",
    "format_table",
    "preview",
    "replay_properties",
    "with_deadline",
)
