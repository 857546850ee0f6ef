"""Flame graphs of the default paths: py-spy on the node and on the load generator at once.

For ping, REL fetch, REL keyed create and REC keyed+audited create (16 in flight, asyncio loop
on both sides, lineage on, idempotency keys on, ``spew_profile`` audited), start a node like
``run.py --profile`` does, drive it with :mod:`benchmarks.load`, and record the node and the
client (BedsClient) with py-spy: a flame graph SVG and collapsed stacks for each, plus the CPU
microseconds per request of every process (client, node, RabbitMQ, MariaDB, SecantusDB).

Usage: ``python -m benchmarks.profile_paths OUT_DIR [PATH ...]`` (paths: ping, rel_fetch,
rel_create, rec_create; also rel_create_many, rel_fetch_many, rec_create_many, 500 records a
message at 4 in flight; a ``_no_lineage`` suffix, e.g. ``rel_fetch_no_lineage``, profiles the
same path on a node with lineage off). Writes ``OUT_DIR/<path>-{node,client}.svg``, ``.txt``
(collapsed stacks) and ``OUT_DIR/summary.json`` (a path given twice is keyed ``path#2``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.resources import PYTHON, ROOT, Resources, _env
from benchmarks.run import summarize_profile
from benchmarks.scenarios import BATCH_RECORDS, Layout

PATHS = ("ping", "rel_fetch", "rel_create", "rec_create")
BATCH_PATHS = ("rel_create_many", "rel_fetch_many", "rec_create_many")
"""Also profiled when asked: 500 records a message, 4 messages in flight."""
SPY_SECONDS = 15


def _spy(pid: int, out: Path, fmt: str) -> subprocess.Popen[bytes]:
    spy = str(Path(PYTHON).with_name("py-spy"))
    argv = [spy, "record", "--pid", str(pid), "--duration", str(SPY_SECONDS), "--rate", "200"]
    argv += ["--nonblocking", "--format", fmt, "--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def profile_path(res: Resources, path: str, out_dir: Path) -> dict[str, Any]:
    """One path; a ``_no_lineage`` suffix runs the node with ``[lineage] enabled = false``."""
    operation = path.removesuffix("_no_lineage")
    config = res.config_without_lineage if path != operation else res.config
    argv = [PYTHON, "-m", "beds", "run", "--config", str(config)]
    server = res.start(f"profile-{path}", argv, env={"BEDS_EVENT_LOOP": "asyncio"})
    batch = operation in BATCH_PATHS
    concurrency = 4 if batch else 16
    out: dict[str, Any] = {"operation": operation, "concurrency": concurrency}
    load: subprocess.Popen[str] | None = None
    try:
        spec: dict[str, Any] = {
            "target": "beds",
            "params": {"url": res.amqp_url, "operation": operation, "idempotent_writes": True},
            "points": [{"concurrency": concurrency, "count": 1_000_000, "seconds": 24}],
            "warmup": 300,
            "repeats": 1,
            "watch": res.watched(server),
        }
        if batch:  # as the beds_*_many scenarios: 500 records a message, keyed
            spec |= {
                "module": "benchmarks.batch_load",
                "target": "beds_batch",
                "params": {"url": res.amqp_url, "operation": operation, "records": BATCH_RECORDS},
                "per_call": {"unit": "records", "n": BATCH_RECORDS},
                "ready_call_seconds": 30.0,
                "warmup": 4,
            }
        load = subprocess.Popen(
            [PYTHON, "-m", spec.get("module", "benchmarks.load"), json.dumps(spec)],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(7)  # node up, client connected, warm-up done
        spies = []
        for role, pid in (("node", server.pid), ("client", load.pid)):
            svg, raw = out_dir / f"{path}-{role}.svg", out_dir / f"{path}-{role}.txt"
            spies.append((role, raw, _spy(pid, svg, "flamegraph"), _spy(pid, raw, "raw")))
        for role, raw, *procs in spies:
            for proc in procs:
                proc.wait(90)
                if proc.returncode != 0:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"py-spy failed on the {role}: {err}")
            out[role] = summarize_profile(raw.read_text(encoding="utf-8"))
        stdout, _ = load.communicate(timeout=120)
        out["load"] = json.loads(stdout.strip().splitlines()[-1])["runs"]
        server.check_alive()
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}\n{server.tail()}"
    finally:
        if load is not None and load.poll() is None:
            load.terminate()
            load.wait(10)
        res.stop(server)
        res.purge_logs_queue()
    return out


def main() -> None:
    out_dir = Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = sys.argv[2:] or list(PATHS)
    layout = Layout()
    res = Resources()
    results: dict[str, Any] = {}
    try:
        res.open(
            rel_pool=layout.rel_pool, instances=layout.instances, prefetch=layout.beds_prefetch
        )
        for operation in paths:
            print(f"profiling {operation}", file=sys.stderr, flush=True)
            key = operation
            while key in results:  # interleaved rounds of the same path
                key = f"{operation}#{int(key.partition('#')[2] or 1) + 1}"
            results[key] = profile_path(res, operation, out_dir)
            (out_dir / "summary.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    finally:
        res.close()


if __name__ == "__main__":
    main()
