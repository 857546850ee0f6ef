"""Run the BEDS benchmark suite: docs/benchmarks/results.{json,md}, throughput.png, targets.png.

``nox -s bench`` (or ``python benchmarks/run.py``) sets up its own vhost, MariaDB database and
SecantusDB server, runs every scenario (server side and client side in separate processes),
repeats each point, computes the ratios and target verdicts, prints a table and removes
everything it created, also on failure or Ctrl-C. See docs/benchmarks.md.

Options: ``--quick`` (a smoke run: few requests, one repeat, no memory check), ``--only KEYS``
(comma-separated scenario keys or prefixes), ``--rounds N`` (run the selected scenarios N times
in turn and pool their repeats: on a shared machine, drift then weighs on every scenario of a
ratio alike), ``--no-memory``, ``--profile`` (py-spy on the node
during ping, REL fetch and REL create), ``--sweep`` (try AMQP ceiling layouts only), ``--out DIR``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import calgon, failover, http_edge, machine, reads, report, targets, workers
from benchmarks.resources import (
    PYTHON,
    ROOT,
    Resources,
    Server,
    _env,
    load_timeout,
    run_load,
    wait_line,
)
from benchmarks.scenarios import Layout, Scenario, build, server_argv, server_env
from benchmarks.tls import CONFIGS, TlsSide

MODULES = {"workers": workers, "http": http_edge, "failover": failover}
"""Groups measured by a module of their own, after the scenarios (results.json key → module):
``--only workers`` (or ``http``, ``failover``) runs one; a full run runs them all."""


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few requests")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per point (3)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the scenarios this many times in turn (1)"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated scenario keys or prefixes ('=key': exactly)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the memory check")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the node: ping, rel fetch, rel create (and rel fetch on the spare servers)",
    )
    parser.add_argument("--sweep", action="store_true", help="compare AMQP ceiling layouts")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    parser.add_argument(
        "--rerender", action="store_true", help="rewrite results.md and the plot from results.json"
    )
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class Suite:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.quick = options.quick
        self.repeats = options.repeats or (1 if self.quick else 3)
        self.counts = {1: 200, 16: 500, 128: 500} if self.quick else {1: 1500, 16: 4000, 128: 4000}
        self.seconds = 3.0 if self.quick else 10.0
        self.warmup = 100 if self.quick else 300
        self.layout = Layout()
        self.res = Resources()
        self.tls: TlsSide | None = None
        """The spare servers, started when a selected scenario needs them (``beds-tls``,
        ``beds-spare``)."""

    def close(self) -> None:
        """Remove everything the run created (the spare servers first: their configs are in
        res.tmp)."""
        try:
            if self.tls is not None:
                self.tls.close()
        finally:
            self.res.close()

    def points(self, scenario: Scenario | None = None) -> list[dict[str, Any]]:
        """The load points: 1, 16 and 128 in flight, or a scenario's own ``concurrencies``.

        A call carrying many items (``per_message``: a batch, a fan-out) gets as many calls
        per point as the single scenarios' 16-in-flight point has requests, divided by that.
        """
        extra = scenario.extra if scenario is not None else {}
        if "concurrencies" in extra:
            count = max(8, self.counts[16] * 8 // int(extra["per_message"]))
            return [
                {"concurrency": c, "count": count, "seconds": self.seconds}
                for c in extra["concurrencies"]
            ]
        return [
            {"concurrency": c, "count": n, "seconds": self.seconds} for c, n in self.counts.items()
        ]

    def wants(self, group: str) -> bool:
        """Whether a measuring module's group runs: in a full run, or named in ``--only``."""
        wanted = [w.strip().lstrip("=") for w in self.options.only.split(",") if w.strip()]
        return not self.options.sweep and (not wanted or group in wanted)

    def selected(self, scenarios: list[Scenario]) -> list[Scenario]:
        wanted = [w.strip() for w in self.options.only.split(",") if w.strip()]
        if not wanted:
            return scenarios
        # "=key" selects that scenario only; "key" also its variants (key_uvloop, key_tls...).
        exact = {w[1:] for w in wanted if w.startswith("=")}
        prefixes = [w for w in wanted if not w.startswith("=")]
        return [
            s
            for s in scenarios
            if s.key in exact or any(s.key == w or s.key.startswith(w) for w in prefixes)
        ]

    def start_server(self, scenario: Scenario) -> Server | None:
        argv = server_argv(scenario, self.res, self.layout)
        if argv is None:
            return None
        # A scenario's extra environment: the read scenarios' nodes find their templates' plugin.
        env = {**server_env(scenario, self.res), **scenario.extra.get("env", {})}
        server = self.res.start(scenario.key, argv, env=env)
        if scenario.server in ("amqp", "faststream"):
            wait_line(server, "ready")
        # beds and nameko: the load generator waits until the first request is answered.
        return server

    def run_scenario(self, scenario: Scenario) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "label": scenario.label,
            "group": scenario.group,
            "operation": scenario.operation,
            "server": scenario.server,
        }
        if scenario.note:
            entry["note"] = scenario.note
        spec = {
            **scenario.load,
            "points": self.points(scenario),
            "repeats": self.repeats,
            "warmup": self.warmup,
            "uvloop": scenario.uvloop,
        }
        server: Server | None = None
        started = time.monotonic()
        tls = self.tls if scenario.server in CONFIGS else None
        connections: dict[str, int] = {}
        if tls is not None:
            spec["params"] = {**spec["params"], **tls.client_params(scenario.server)}
            connections = tls.mariadb_connections()
        try:
            server = self.start_server(scenario)
            if tls is not None:
                spec["watch"] = tls.watched(server)
            elif self.tls is not None:
                spec["watch"] = self.res.watched(
                    server, exclude=frozenset(self.tls.pids().values())
                )
            else:
                spec["watch"] = self.res.watched(server)
            loaded = run_load(spec, load_timeout(spec))
            if server is not None:
                server.check_alive()
            entry["points"] = report.summarize(loaded["runs"])
            entry["runs"] = loaded["runs"]
            if tls is not None:
                after = tls.mariadb_connections()
                entry["mariadb_connections"] = opened = {
                    k: after[k] - connections[k] for k in after
                }
                print(
                    f"    spare mariadbd: {opened['all']} connections, {opened['tls']} over TLS",
                    file=sys.stderr,
                    flush=True,
                )
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"
            if server is not None:
                detail += f"\n--- {server.name} log ---\n{server.tail()}"
            entry["error"] = detail
            print(f"  FAILED: {detail}", file=sys.stderr, flush=True)
        finally:
            if server is not None:
                self.res.stop(server)
            (tls or self.res).purge_logs_queue()
        entry["seconds"] = round(time.monotonic() - started, 1)
        return entry

    # -- memory -----------------------------------------------------------------------------

    def memory(self) -> dict[str, Any]:
        small, large, concurrency = 20_000, 200_000, 16
        out: dict[str, Any] = {"small": small, "large": large, "concurrency": concurrency}
        argv = [PYTHON, "-m", "beds", "run", "--config", str(self.res.config)]
        server = self.res.start("memory-node", argv)
        try:
            base = {
                "target": "beds",
                "params": {"url": self.res.amqp_url, "operation": "ping"},
                "repeats": 1,
            }
            first = {**base, "points": [{"concurrency": 1, "count": 1, "seconds": 5}]}
            run_load(first, load_timeout(first))
            out["rss_mib_at_start"] = rss_mib(server.pid)
            spec = {
                **base,
                "points": [{"concurrency": concurrency, "count": small, "seconds": 240}],
            }
            done = run_load(spec, load_timeout(spec))["runs"]
            out["rss_mib_after_small"] = rss_mib(server.pid)
            spec["points"] = [{"concurrency": concurrency, "count": large - small, "seconds": 600}]
            done += run_load(spec, load_timeout(spec))["runs"]
            out["rss_mib_after_large"] = rss_mib(server.pid)
            out["errors"] = sum(run["errors"] for run in done)
            out["requests"] = sum(run["requests"] for run in done)
            out["rps"] = round(out["requests"] / sum(run["seconds"] for run in done), 1)
            out["within_5_percent"] = report.memory_verdict(out)
            server.check_alive()
        except Exception as exc:
            out["error"] = f"{type(exc).__name__}: {exc}\n{server.tail()}"
        finally:
            self.res.stop(server)
        return out

    # -- profile ----------------------------------------------------------------------------

    PROFILED = ("ping", "rel_fetch", "rel_create")

    def profile(self) -> dict[str, Any]:
        """py-spy on a node (asyncio, like ``beds_*``) under 16 requests in flight, per operation.

        Creates carry no idempotency key, as in the pipeline. The collapsed stacks are written to
        ``{operation}-profile.txt`` in the output folder. When the spare servers run (a TLS
        scenario was selected), REL fetch is also profiled on them over TLS and in plaintext
        (``rel_fetch_tls``, ``rel_fetch_spare``).
        """
        out = {operation: self.profile_one(operation) for operation in self.PROFILED}
        if self.tls is not None:
            for kind in CONFIGS:
                out["rel_fetch_" + kind.removeprefix("beds-")] = self.profile_one("rel_fetch", kind)
        return out

    def profile_one(self, operation: str, kind: str = "beds") -> dict[str, Any]:
        """One profile; ``kind`` is ``beds`` (the machine's servers) or a spare-server kind."""
        tls = self.tls if kind in CONFIGS else None
        config = tls.configs[kind] if tls is not None else self.res.config
        label = operation + ("_" + kind.removeprefix("beds-") if tls is not None else "")
        argv = [PYTHON, "-m", "beds", "run", "--config", str(config)]
        server = self.res.start(f"profile-{label}", argv, env={"BEDS_EVENT_LOOP": "asyncio"})
        out: dict[str, Any] = {"concurrency": 16}
        load: subprocess.Popen[str] | None = None
        try:
            params: dict[str, Any] = {"url": self.res.amqp_url, "operation": operation}
            if tls is not None:
                params.update(tls.client_params(kind))
            if operation.endswith("_create"):
                params["idempotent_writes"] = False
            spec = {
                "target": "beds",
                "params": params,
                "points": [{"concurrency": 16, "count": 1_000_000, "seconds": 25}],
                "warmup": 300,
                "repeats": 1,
            }
            load = subprocess.Popen(
                [PYTHON, "-m", "benchmarks.load", json.dumps(spec)],
                cwd=ROOT,
                env=_env(),
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(6)
            # The node and the client (BedsClient in the load generator) at the same time.
            spies = {
                name: spy_on(pid, self.res.tmp / f"{label}-{name}profile.txt")
                for name, pid in (("", server.pid), ("client-", load.pid))
            }
            for name, (spy, raw) in spies.items():
                spy.wait(60)
                if spy.returncode != 0:
                    raise RuntimeError(f"py-spy failed: {spy.stderr.read() if spy.stderr else ''}")
                text = raw.read_text(encoding="utf-8")
                self.options.out.mkdir(parents=True, exist_ok=True)
                (self.options.out / raw.name).write_text(text, encoding="utf-8")
                if name:
                    out["client"] = summarize_profile(text)
                else:
                    out.update(summarize_profile(text))
            load.wait(60)
        except Exception as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            if load is not None and load.poll() is None:
                load.terminate()
                load.wait(10)
            self.res.stop(server)
            (tls or self.res).purge_logs_queue()
        return out

    # -- the whole run ----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        began = time.monotonic()
        layout = self.layout
        self.res.open(
            rel_pool=layout.rel_pool, instances=layout.instances, prefetch=layout.beds_prefetch
        )
        results: dict[str, Any] = {
            "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "quick": self.quick,
            "machine": machine.describe(self.res.mysql_url),
            "settings": {
                "repeats": self.repeats,
                "rounds": self.options.rounds,
                "count_by_concurrency": self.counts,
                "seconds": self.seconds,
                "warmup": self.warmup,
                "layout": asdict(layout),
                "payload": "about 200 bytes of JSON (echo body; REL/REC records of similar size)",
            },
            "scenarios": {},
        }
        built = build(self.res, layout, sweep=self.options.sweep)
        if not self.options.sweep:
            built += reads.build(self.res) + calgon.build(self.res, layout)
        scenarios = self.selected(built)
        reads.prepare(self.res, scenarios)
        calgon.prepare(self.res, scenarios)
        if any(scenario.server in CONFIGS for scenario in scenarios):
            print(
                f"[{time.monotonic() - began:6.0f} s] spare RabbitMQ node and mariadbd (TLS)",
                file=sys.stderr,
                flush=True,
            )
            self.tls = TlsSide(self.res)
            self.tls.open(
                rel_pool=layout.rel_pool, instances=layout.instances, prefetch=layout.beds_prefetch
            )
        rounds = max(1, self.options.rounds)
        for turn in range(rounds):
            for number, scenario in enumerate(scenarios, 1):
                print(
                    f"[{time.monotonic() - began:6.0f} s] "
                    + (f"round {turn + 1}/{rounds}, " if rounds > 1 else "")
                    + f"{number}/{len(scenarios)} {scenario.key}: {scenario.label}",
                    file=sys.stderr,
                    flush=True,
                )
                entry = self.run_scenario(scenario)
                earlier = results["scenarios"].get(scenario.key)
                results["scenarios"][scenario.key] = (
                    entry if earlier is None else pool(earlier, entry, self.repeats * turn)
                )
        for name, module in MODULES.items():
            if self.wants(name):
                print(f"[{time.monotonic() - began:6.0f} s] {name}", file=sys.stderr, flush=True)
                try:
                    results[name] = module.run(self.res, self.options)
                except Exception as exc:  # one group failing keeps the others' results
                    results[name] = {"error": f"{type(exc).__name__}: {exc}", "targets": []}
        if self.quick or self.options.no_memory or self.options.sweep:
            results["memory"] = {"skipped": "--quick, --no-memory or --sweep"}
        else:
            print(f"[{time.monotonic() - began:6.0f} s] memory check", file=sys.stderr, flush=True)
            results["memory"] = self.memory()
        if self.options.profile:
            print(
                f"[{time.monotonic() - began:6.0f} s] py-spy profile", file=sys.stderr, flush=True
            )
            results["profile"] = self.profile()
        results["ratios"] = report.ratios(results) + reads.ratios(results)
        results["targets"] = targets.evaluate(results)
        results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        results["elapsed_seconds"] = round(time.monotonic() - began, 1)
        return results


def pool(earlier: dict[str, Any], entry: dict[str, Any], offset: int) -> dict[str, Any]:
    """One scenario's entry over two rounds: the runs of both, summarized together (``--rounds``).

    ``offset`` numbers the new runs' repeats after the earlier ones; a failed round fails the
    scenario.
    """
    if "error" in earlier:
        return earlier
    if "error" in entry:
        return {**entry, "seconds": earlier["seconds"] + entry["seconds"]}
    runs = earlier["runs"] + [{**run, "repeat": run["repeat"] + offset} for run in entry["runs"]]
    pooled = {**entry, "runs": runs, "points": report.summarize(runs)}
    pooled["seconds"] = round(earlier["seconds"] + entry["seconds"], 1)
    if "mariadb_connections" in earlier:
        pooled["mariadb_connections"] = {
            key: earlier["mariadb_connections"][key] + entry["mariadb_connections"][key]
            for key in entry["mariadb_connections"]
        }
    return pooled


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 2)
    raise RuntimeError(f"no VmRSS for process {pid}")


def _frame_name(frame: str) -> str:
    """``function (path/to/module.py:12)`` → ``module.function``."""
    name, _, where = frame.partition(" (")
    module = where.split(":", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
    return f"{module}.{name}" if module else name


AREAS = (
    ("socket send (asyncio transport.write)", ("_SelectorSocketTransport.write",)),
    ("waiting for I/O (epoll)", ("EpollSelector.select",)),
    (
        "BEDS (and asyncmy's compiled code, charged to beds_rel)",
        ("(beds/", "(beds_rel/", "(beds_rec/"),
    ),
    ("aiormq and pamqp", ("(aiormq/", "(pamqp/")),
    ("asyncmy", ("(asyncmy/",)),
    ("pymongo", ("(pymongo/", "(bson/")),
    (
        "cattrs, attrs, orjson, loguru",
        ("(cattrs/", "<cattrs generated", "(attr/", "<attrs generated", "(loguru/"),
    ),
    ("TLS (ssl, asyncio's SSL transport)", ("(ssl.py", "(asyncio/sslproto.py")),
    ("asyncio (the rest)", ("(asyncio/", "(selectors.py", "(contextlib.py")),
)
"""Where a frame's self time goes, by a substring of py-spy's ``function (path:line)``."""


def _area(frame: str) -> str:
    """Which part of the stack a frame's self time belongs to (``AREAS``), else ``other``."""
    for area, needles in AREAS:
        if any(needle in frame for needle in needles):
            return area
    return "other"


def spy_on(pid: int, raw: Path) -> tuple[subprocess.Popen[str], Path]:
    """Start py-spy recording ``pid`` for 12 s into ``raw`` (collapsed stacks)."""
    spy = Path(PYTHON).with_name("py-spy")
    argv = [str(spy), "record", "--pid", str(pid), "--duration", "12", "--rate", "200"]
    argv += ["--nonblocking", "--format", "raw", "--output", str(raw)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return process, raw


def summarize_profile(raw: str) -> dict[str, Any]:
    """Self and inclusive shares per function, and self time per area, from collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        raw_frames = stack.split(";")[1:]  # the first is the thread
        if not raw_frames:
            continue
        frames = [_frame_name(f) for f in raw_frames]
        total += count
        own[frames[-1]] += count
        areas[_area(raw_frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count

    def top(counter: collections.Counter[str], n: int) -> list[dict[str, Any]]:
        return [
            {"frame": frame, "samples": count, "share": round(count / total, 4)}
            for frame, count in counter.most_common(n)
        ]

    # Frames under which nearly every sample sits (the command, the loop) say nothing.
    telling = collections.Counter(
        {frame: count for frame, count in inclusive.items() if count < 0.6 * total}
    )
    return {
        "samples": total,
        "by_area": top(areas, len(AREAS) + 1),
        "top_self": top(own, 25),
        "top_inclusive": top(telling, 40),
    }


def print_table(results: dict[str, Any]) -> None:
    width = max([28, *(len(key) + 2 for key in results["scenarios"])])
    print(
        f"\n{'scenario':<{width}}{'in flight':>10}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'errors':>8}"
    )
    for key, scenario in results["scenarios"].items():
        if "error" in scenario:
            print(f"{key:<{width}}  FAILED: {scenario['error'].splitlines()[0][:80]}")
            continue
        for concurrency, point in scenario["points"].items():
            print(
                f"{key:<{width}}{concurrency:>10}{point['rps']:>10,.0f}"
                f"{point['p50_ms'] or 0:>9.2f}{point['p99_ms'] or 0:>9.2f}{point['errors']:>8}"
            )
    print(f"\n{'target':<58}{'in flight':>10}{'value':>8}  verdict")
    for ratio in results["ratios"]:
        if ratio["target"] is None or ratio["value"] is None:
            continue  # no target, or a scenario that was not run
        name = f"{ratio['metric']} {ratio['numerator']}/{ratio['denominator']}"
        value = f"{ratio['value']:.2f}"
        verdict = {True: "met", False: "NOT MET", None: "-"}[ratio["met"]]
        print(
            f"{name:<58}{ratio['concurrency']:>10}{value:>8}  "
            f"{ratio['comparison']} {ratio['target']:g} {verdict}"
        )
    memory = results.get("memory", {})
    if memory.get("rss_mib_after_small"):
        print(
            f"\nnode RSS: {memory['rss_mib_after_small']} MiB after {memory['small']:,} pings, "
            f"{memory['rss_mib_after_large']} MiB after {memory['large']:,} "
            f"(within 5 %: {memory['within_5_percent']})"
        )
    reads.print_ratios(results)
    targets.print_targets(results.get("targets") or targets.evaluate(results))


def main(argv: list[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    if options.rerender:
        results = json.loads((options.out / "results.json").read_text(encoding="utf-8"))
        results["ratios"] = report.ratios(results) + reads.ratios(results)
        results["targets"] = targets.evaluate(results)
        report.write(results, options.out)
        print_table(results)
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    suite = Suite(options)
    try:
        results = suite.run()
    finally:
        suite.close()
    print_table(results)
    report.write(results, options.out)
    print(f"\nwrote {options.out}/results.json, results.md, throughput.png, targets.png")
    failed = [key for key, scenario in results["scenarios"].items() if "error" in scenario]
    if failed:
        print(f"scenarios that failed: {', '.join(failed)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
