"""Worker scaling: the same REL load on ``beds run --workers 1`` and ``--workers 2`` (issue 19).

How to plug in (benchmarks/run.py): after ``res.open(...)``, call ``workers.run(res, options)``
and store what it returns under ``results["workers"]``; ``options`` is the suite's argparse
namespace (``quick`` and ``repeats`` are read when present). Standalone:
``python -m benchmarks.workers [--quick] [--repeats N] [--json FILE]``.

For each worker count the node is started as a user starts it (``beds run --workers N``, the
run's config, asyncio's event loop like the suite's ``beds_*``), and ``benchmarks.load`` drives
REL fetch by id and REL create with an idempotency key (``BedsClient``'s default) at 16 and
128 in flight. Besides req/s and latency, each point reports the CPU time per request of the
node (the process started, and with several workers the supervisor and every worker, read
from ``/proc/<pid>/stat`` by the load generator), of RabbitMQ, MariaDB and the load generator:
on 2 shared cores the req/s of 2 workers says little, the CPU a request costs predicts what
a larger machine gives. The ratio "2 workers / 1 worker req/s" is reported without a target.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.resources import PYTHON, run_load
from benchmarks.targets import target_row

if TYPE_CHECKING:
    from benchmarks.resources import Resources, Server

WORKER_COUNTS: Final = (1, 2)
OPERATIONS: Final = ("rel_fetch", "rel_create")
"""REL fetch by id; REL create with an idempotency key (the client's default)."""
CONCURRENCIES: Final = (16, 128)
NODE_ROLES: Final = "node"
"""Role prefix of the node's processes in a run's ``cpu_us`` (:func:`node_roles`)."""


def node_queues(res: Resources) -> tuple[list[str], frozenset[str]]:
    """The queues every node process of the run's config consumes once: its role's broker
    queues (``tickets`` brokers consume none) and the environment's control stream; and,
    apart, the control stream (which other processes read too)."""
    from beds.config.loader import load_config
    from beds.transport.control import control_stream

    config = load_config(res.config)
    stream = control_stream(config)
    queues = sorted({*(config.queue_name(broker) for broker in config.brokers), stream})
    return queues, frozenset({stream})


def queue_consumers(res: Resources) -> dict[str, int]:
    """Consumers per queue on the run's vhost."""
    ctl = shutil.which("rabbitmqctl") or "rabbitmqctl"
    listed = subprocess.run(
        [ctl, "-q", "list_queues", "-p", res.vhost, "name", "consumers", "--no-table-headers"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    counts: dict[str, int] = {}
    for line in listed.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def missing(
    counts: dict[str, int], queues: list[str], workers: int, shared: frozenset[str] = frozenset()
) -> list[str]:
    """What keeps ``workers`` node processes from being ready: each of ``queues`` must have
    exactly one consumer per worker (fewer: a worker is not bound yet; more: a replaced
    worker's consumer is not gone yet), each of ``shared`` at least one per worker (the control
    stream: an HTTP edge, or a process of the previous module still closing, reads it too)."""
    return [
        f"{queue}: {counts.get(queue, 0)} consumers, want {workers}"
        for queue in queues
        if (counts.get(queue, 0) < workers if queue in shared else counts.get(queue, 0) != workers)
    ]


def wait_consumers(
    res: Resources, server: Server, workers: int, seconds: float = 90, *, polls: int = 2
) -> int:
    """Wait until every worker consumes every node queue, on ``polls`` polls in a row.

    A node's consumers appear one by one as it starts (and a consumer may come and go while it
    does), so the total over the vhost, or a count learnt from a one-worker run, can look
    settled too early. The check is per queue, against what the config says a node consumes.

    Returns:
        The consumers on the broker queues (the control stream left out).

    Raises:
        RuntimeError: by the deadline, some queue still has the wrong count (each one named).
    """
    queues, shared = node_queues(res)
    deadline = time.monotonic() + seconds
    settled = 0
    problems = ["not polled yet"]
    while time.monotonic() < deadline:
        server.check_alive()
        counts = queue_consumers(res)
        problems = missing(counts, queues, workers, shared)
        settled = 0 if problems else settled + 1
        if settled >= polls:
            return sum(counts[queue] for queue in queues if queue not in shared)
        time.sleep(1.0)
    raise RuntimeError(
        f"{server.name}: {workers} worker(s) not all consuming after {seconds:g} s: "
        + "; ".join(problems)
    )


def node_pids(pid: int) -> list[int]:
    """The process started and its children (the workers of a supervisor)."""
    import psutil

    try:
        return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return [pid]


def node_roles(pids: list[int]) -> dict[str, int]:
    """The watched roles of a node's processes: ``node`` alone, else ``node_supervisor`` and
    ``node_worker0``… (every one starts with ``NODE_ROLES``, summed as the node's CPU)."""
    if len(pids) == 1:
        return {NODE_ROLES: pids[0]}
    workers = {f"{NODE_ROLES}_worker{i}": pid for i, pid in enumerate(pids[1:])}
    return {f"{NODE_ROLES}_supervisor": pids[0], **workers}


def _node_cpu(cpu_us: dict[str, float]) -> float:
    return round(sum(v for k, v in cpu_us.items() if k.startswith(NODE_ROLES)), 1)


def _settings(args: argparse.Namespace | None) -> tuple[int, int, float, int]:
    """Repeats, requests a point, seconds a point, warm-up requests (``--quick``: a smoke run)."""
    quick = bool(getattr(args, "quick", False))
    repeats = getattr(args, "repeats", None) or (1 if quick else 3)
    return (repeats, 500, 3.0, 100) if quick else (repeats, 4000, 10.0, 300)


def measure(res: Resources, workers: int, args: Any) -> dict[str, Any]:
    """Both operations against one ``beds run --workers N``; the runs by operation."""
    repeats, count, seconds, warmup = _settings(args)
    argv = [PYTHON, "-m", "beds", "run", "--config", str(res.config), "--workers", str(workers)]
    server = res.start(f"workers-{workers}", argv, env={"BEDS_EVENT_LOOP": "asyncio"})
    out: dict[str, Any] = {}
    try:
        out["consumers"] = wait_consumers(res, server, workers)
        pids = node_pids(server.pid)
        if len(pids) != (1 if workers == 1 else workers + 1):
            raise RuntimeError(f"{server.name}: processes {pids}, want {workers} worker(s)")
        watch = {
            **res.watched(None),
            **node_roles(pids),
        }
        for operation in OPERATIONS:
            spec = {
                "target": "beds",
                "params": {"url": res.amqp_url, "operation": operation},
                "points": [
                    {"concurrency": c, "count": count, "seconds": seconds} for c in CONCURRENCIES
                ],
                "repeats": repeats,
                "warmup": warmup,
                "watch": watch,
            }
            print(f"  workers={workers} {operation}", file=sys.stderr, flush=True)
            timeout = seconds * len(CONCURRENCIES) * repeats + 150
            out[operation] = run_load(spec, timeout)["runs"]
            res.purge_logs_queue()
        server.check_alive()
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}\n{server.tail()}"
    finally:
        res.stop(server)
    return out


def rows_of(workers: int, operation: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per number in flight: medians over the repeats, node CPU summed over processes."""
    from benchmarks.report import summarize

    rows = []
    for concurrency, point in summarize(runs).items():
        cpu = point["cpu_us"]
        rows.append(
            {
                "workers": workers,
                "operation": operation,
                "concurrency": int(concurrency),
                "rps": point["rps"],
                "p50_ms": point["p50_ms"],
                "p99_ms": point["p99_ms"],
                "errors": point["errors"],
                "requests": point["requests"],
                "rps_runs": point["rps_runs"],
                "cpu_us_node": _node_cpu(cpu),
                "cpu_us_rabbitmq": cpu.get("rabbitmq"),
                "cpu_us_mariadb": cpu.get("mariadb"),
                "cpu_us_client": cpu.get("client"),
                "cpu_us": cpu,
            }
        )
    return rows


def run(res: Resources, args: Any = None) -> dict[str, Any]:
    """The worker-scaling rows and the informative ratios (``results.json`` key ``workers``).

    ``res`` must be open (schema applied, posts seeded). A failed worker count is reported in
    ``errors`` and leaves its rows out.
    """
    rows: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    for workers in WORKER_COUNTS:
        measured = measure(res, workers, args)
        if "error" in measured:
            errors[str(workers)] = measured["error"]
            print(f"  workers={workers} FAILED: {measured['error']}", file=sys.stderr, flush=True)
            continue
        for operation in OPERATIONS:
            rows += rows_of(workers, operation, measured[operation])
    by_key = {(r["workers"], r["operation"], r["concurrency"]): r for r in rows}
    targets = []
    for operation in OPERATIONS:
        for concurrency in CONCURRENCIES:
            one, two = (
                by_key.get((1, operation, concurrency)),
                by_key.get((2, operation, concurrency)),
            )
            value = round(two["rps"] / one["rps"], 3) if one and two and one["rps"] else None
            note = (
                f"node CPU µs/request {one['cpu_us_node']} (1 worker) vs {two['cpu_us_node']} "
                "(2 workers)"
                if one and two
                else "not measured"
            )
            targets.append(
                target_row(
                    f"{operation} c={concurrency}: 2 workers / 1 worker req/s",
                    value,
                    None,
                    where=note,
                )
            )
    out: dict[str, Any] = {"rows": rows, "targets": targets}
    if errors:
        out["errors"] = errors
    return out


def print_rows(result: dict[str, Any]) -> None:
    print(
        f"\n{'workers':>7} {'operation':<11}{'c':>5}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'err':>5}  CPU µs/req: {'node':>6}{'rabbit':>7}{'maria':>7}{'client':>7}"
    )
    for r in result["rows"]:
        print(
            f"{r['workers']:>7} {r['operation']:<11}{r['concurrency']:>5}{r['rps']:>9,.0f}"
            f"{r['p50_ms'] or 0:>8.2f}{r['p99_ms'] or 0:>8.2f}{r['errors']:>5}              "
            f"{r['cpu_us_node']:>6.0f}{r['cpu_us_rabbitmq'] or 0:>7.0f}"
            f"{r['cpu_us_mariadb'] or 0:>7.0f}{r['cpu_us_client'] or 0:>7.0f}"
        )
    for t in result["targets"]:
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        print(f"{t['name']:<48} {value:>6}  ({t['note']})")
    for workers, error in result.get("errors", {}).items():
        print(f"workers={workers} FAILED: {error.splitlines()[0]}")


def main(argv: list[str] | None = None) -> int:
    from benchmarks.resources import run_alone

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few requests, 1 repeat")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per point (3)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    result = run_alone(run, parser.parse_args(argv), print_rows)
    return 1 if result.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
