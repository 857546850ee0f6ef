"""``beds run`` under tracemalloc, probed with signals: a diagnostic for the soak benchmark.

``python -m benchmarks.servers.traced_node OUT.jsonl FRAMES beds-args...`` starts tracemalloc
(keeping FRAMES frames per allocation), then runs the ``beds`` command with ``beds-args``. Each
probe appends one JSON line to OUT.jsonl:

- SIGUSR1 (cheap, a few milliseconds): the objects the garbage collector tracks and the memory
  tracemalloc traces;
- SIGUSR2 (a snapshot; it stops the node for a second or more): the same, and the first time a
  baseline snapshot, afterwards the 25 allocation sites whose traced memory grew most since it.

Tracing slows the node down and the baseline snapshot adds to its RSS, so the soak only uses this
with ``--trace-node``, never for the figures it reports by default.
"""

from __future__ import annotations

import gc
import json
import linecache
import signal
import sys
import time
import tracemalloc
from typing import Any

_NOT_THE_NODE = tuple(
    tracemalloc.Filter(False, path) for path in (tracemalloc.__file__, linecache.__file__, __file__)
)


class Probe:
    def __init__(self, path: str) -> None:
        self.path = path
        self.baseline: tracemalloc.Snapshot | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        started = time.perf_counter()
        current, peak = tracemalloc.get_traced_memory()
        entry: dict[str, Any] = {
            "signal": signal.Signals(signum).name,
            "time": time.time(),
            "gc_objects": len(gc.get_objects()),
            "traced_mib": round(current / 2**20, 3),
            "traced_peak_mib": round(peak / 2**20, 3),
        }
        if signum == signal.SIGUSR2:
            snapshot = tracemalloc.take_snapshot().filter_traces(_NOT_THE_NODE)
            if self.baseline is None:
                self.baseline = snapshot
                entry["baseline"] = True
            else:
                entry["top_growth"] = [
                    {
                        # innermost frame first, without source lines (no linecache reads)
                        "stack": [f"{f.filename}:{f.lineno}" for f in reversed(stat.traceback)],
                        "kib": round(stat.size / 1024, 1),
                        "kib_growth": round(stat.size_diff / 1024, 1),
                        "blocks_growth": stat.count_diff,
                    }
                    for stat in snapshot.compare_to(self.baseline, "traceback")[:25]
                ]
        entry["probe_ms"] = round((time.perf_counter() - started) * 1000, 1)
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")


def main() -> None:
    path, frames, *argv = sys.argv[1:]
    tracemalloc.start(int(frames))
    probe = Probe(path)
    signal.signal(signal.SIGUSR1, probe)
    signal.signal(signal.SIGUSR2, probe)
    from beds.cli import main as beds

    sys.argv = ["beds", *argv]
    beds()


if __name__ == "__main__":
    main()
