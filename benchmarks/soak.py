"""Soak benchmark: steady mixed load on one ``beds run`` node; its memory must stay flat.

``nox -s soak`` (or ``python benchmarks/soak.py``) sets up its own RabbitMQ vhost, MariaDB
database and SecantusDB server (as the benchmark suite does), starts one node serving the example
domain in its own process, warms it up, then keeps ``--in-flight`` requests of a fixed mix in
flight for ``--minutes``. Every ``--window`` seconds it records requests/s per operation, errors
by code, p50/p99 latency and the node's resident memory, open file descriptors, threads and CPU
(from ``/proc``). It writes ``soak.json``, ``soak.md`` and ``soak.png`` into ``--out``, prints the
table, removes everything it created, and exits 1 when a request failed, the node died, or the
node's RSS at the end exceeds ``--max-growth`` times its RSS after the warm-up.

Options: ``--minutes`` (10), ``--in-flight`` (16), ``--window`` (30 s), ``--warmup`` (60 s),
``--max-growth`` (1.05), ``--out DIR`` (docs/benchmarks), ``--rerender`` (rewrite soak.md and
soak.png from soak.json), ``--trace-node FRAMES`` (a diagnostic: the node runs under tracemalloc,
see ``benchmarks/servers/traced_node.py``). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import math
import os
import random
import re
import signal
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import machine
from benchmarks.load import CALL_TIMEOUT, percentile
from benchmarks.resources import PYTHON, ROOT, Resources, Server
from benchmarks.scenarios import Layout
from benchmarks.work import BIO_TEXT, POST_TEXT, SEED_POSTS, SEED_PROFILES

if TYPE_CHECKING:
    from beds.client import BedsClient

MIX: tuple[tuple[str, int], ...] = (
    ("ping", 2),
    ("post_fetch", 3),
    ("post_create", 2),
    ("profile_fetch", 2),
    ("profile_create", 1),
)
"""Each operation and its share of the requests issued (out of the sum of the weights)."""
OPERATIONS = tuple(name for name, _ in MIX)
PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / 1024 / 1024
TICKS = os.sysconf("SC_CLK_TCK")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="steady load (10)")
    parser.add_argument("--in-flight", type=int, default=16, help="requests in flight (16)")
    parser.add_argument("--window", type=float, default=30.0, help="seconds per window (30)")
    parser.add_argument("--warmup", type=float, default=60.0, help="warm-up seconds (60)")
    parser.add_argument(
        "--max-growth", type=float, default=1.05, help="fail when RSS end/start is above (1.05)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    parser.add_argument(
        "--rerender", action="store_true", help="rewrite soak.md and soak.png from soak.json"
    )
    parser.add_argument(
        "--trace-node",
        type=int,
        default=0,
        metavar="FRAMES",
        help="diagnostic: run the node under tracemalloc (FRAMES frames per allocation) and "
        "record its gc-tracked objects and the allocations that grew most (slows the node)",
    )
    options = parser.parse_args(argv)
    if options.minutes <= 0 or options.window <= 0 or options.in_flight < 1:
        parser.error("--minutes, --window and --in-flight must be positive")
    return options


def schedule(mix: tuple[tuple[str, int], ...]) -> list[str]:
    """One cycle of the mix with each operation spread out (smooth weighted round robin)."""
    total = sum(weight for _, weight in mix)
    current = dict.fromkeys((name for name, _ in mix), 0)
    cycle: list[str] = []
    for _ in range(total):
        for name, weight in mix:
            current[name] += weight
        chosen = max(current, key=lambda name: current[name])
        current[chosen] -= total
        cycle.append(chosen)
    return cycle


# -- /proc --------------------------------------------------------------------------------------


def proc_sample(pid: int | None) -> dict[str, Any]:
    """RSS (MiB), open fds, threads and CPU seconds of a live process; empty when it is gone."""
    if pid is None:
        return {}
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
            resident = int(statm.read().split()[1])
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, IndexError, ValueError):
        return {}
    if fields[0] == "Z":  # exited, not yet reaped
        return {}
    sockets = peer_ports(pid)
    # After the ")" of the command name: state is field 3, utime 14, stime 15, threads 20.
    return {
        "rss_mib": round(resident * PAGE_MIB, 2),
        "fds": fds,
        "threads": int(fields[17]),
        "cpu_seconds": (int(fields[11]) + int(fields[12])) / TICKS,
        "sockets_by_peer_port": sockets,
    }


def peer_ports(pid: int) -> dict[str, int]:
    """The process's TCP sockets counted by remote port (listening sockets under ``listen``)."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    counts: collections.Counter[str] = collections.Counter()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}", encoding="ascii") as f:
            next(f, None)
            for line in f:
                parts = line.split()
                if len(parts) > 9 and parts[9] in inodes:
                    port = int(parts[2].rsplit(":", 1)[1], 16)
                    counts["listen" if port == 0 else str(port)] += 1
    return dict(sorted(counts.items()))


# -- load ---------------------------------------------------------------------------------------


class BadReply(Exception):
    """The reply arrived and is ok, but it is not the expected answer."""


@dataclass
class Tally:
    """What completed since the tally started: latencies per operation, errors per code."""

    started: float = field(default_factory=time.monotonic)
    latencies: dict[str, list[float]] = field(
        default_factory=lambda: {name: [] for name in OPERATIONS}
    )
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    samples: dict[str, str] = field(default_factory=dict)

    def summary(self, seconds: float) -> dict[str, Any]:
        every = sorted(x for values in self.latencies.values() for x in values)
        operations = {}
        for name, values in self.latencies.items():
            values.sort()
            operations[name] = {
                "requests": len(values),
                "rps": round(len(values) / seconds, 1),
                "p50_ms": _ms(percentile(values, 0.50)),
                "p99_ms": _ms(percentile(values, 0.99)),
            }
        return {
            "seconds": round(seconds, 2),
            "requests": len(every),
            "rps": round(len(every) / seconds, 1),
            "p50_ms": _ms(percentile(every, 0.50)),
            "p99_ms": _ms(percentile(every, 0.99)),
            "errors": sum(self.errors.values()),
            "errors_by_code": dict(sorted(self.errors.items())),
            "error_samples": self.samples,
            "operations": operations,
        }


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 2)


def error_code(exc: BaseException) -> str:
    """The catalogue code of a replied error, else a short name for what went wrong."""
    from beds.errors import BrokerUnavailable, PublishError, ReplyTimeout

    if isinstance(exc, ReplyError):
        return exc.code
    if isinstance(exc, ReplyTimeout):
        return "timeout"
    if isinstance(exc, PublishError):
        return "unroutable"
    if isinstance(exc, BrokerUnavailable):
        return "amqp-down"
    if isinstance(exc, BadReply):
        return "wrong-reply"
    return type(exc).__name__


class ReplyError(Exception):
    """The node answered with an error envelope."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class Mix:
    """The soak's requests through one ``BedsClient``; fetches pick among existing records."""

    def __init__(self, client: BedsClient) -> None:
        self.client = client
        self.rng = random.Random(6)
        self.cycle = schedule(MIX)
        self.position = 0
        self.max_post_id = SEED_POSTS
        self.handles = [f"seed_{i}" for i in range(SEED_PROFILES)]
        self.created = {"posts": 0, "profiles": 0}

    def next_operation(self) -> str:
        name = self.cycle[self.position % len(self.cycle)]
        self.position += 1
        return name

    async def _data(self, template: str, operation: str, payload: dict[str, Any]) -> Any:
        response = await self.client.call(template, operation, payload)
        if not response.ok:
            error = response.error
            raise ReplyError(error.code if error else "?", error.message if error else "")
        return response.data

    async def __call__(self, name: str) -> None:
        if name == "ping":
            response = await self.client.ping()
            if not response.ok:
                error = response.error
                raise ReplyError(error.code if error else "?", error.message if error else "")
        elif name == "post_fetch":
            wanted = self.rng.randint(1, self.max_post_id)
            payload = {"query": "by_id", "params": {"id": wanted}}
            rows = await self._data("spew_post", "fetch", payload)
            if len(rows) != 1 or rows[0]["id"] != wanted:
                raise BadReply(f"spew_post by_id {wanted} returned {len(rows)} records")
        elif name == "post_create":
            created = await self._data(
                "spew_post", "create", {"author": "soak_author", "body": POST_TEXT}
            )
            self.max_post_id = max(self.max_post_id, int(created["id"]))
            self.created["posts"] += 1
        elif name == "profile_fetch":
            handle = self.rng.choice(self.handles)
            payload = {"query": "by_handle", "params": {"handle": handle}}
            rows = await self._data("spew_profile", "fetch", payload)
            if len(rows) != 1 or rows[0]["handle"] != handle:
                raise BadReply(f"spew_profile by_handle {handle} returned {len(rows)} records")
        elif name == "profile_create":
            handle = "s" + uuid.uuid4().hex[:24]
            record = {"handle": handle, "display_name": "Soak User", "bio": BIO_TEXT}
            created = await self._data("spew_profile", "create", record)
            if created.get("handle") != handle:
                raise BadReply(f"spew_profile create returned {created!r}")
            self.handles.append(handle)
            self.created["profiles"] += 1
        else:
            raise ValueError(f"no soak operation {name!r}")


# -- the run ------------------------------------------------------------------------------------


class Soak:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.layout = Layout()
        self.res = Resources()
        self.node: Server | None = None
        self.tally = Tally()
        self.stopping = asyncio.Event()
        self.trace_path: Path | None = None

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    def sample(self) -> dict[str, Any]:
        secantus = self.res._secantus
        return {
            "node": proc_sample(self.node.pid if self.node else None),
            "rec_server": proc_sample(secantus.pid if secantus else None),
            "load_average": round(os.getloadavg()[0], 2),
        }

    def swap(self) -> Tally:
        old, self.tally = self.tally, Tally()
        return old

    async def worker(self, mix: Mix) -> None:
        while not self.stopping.is_set():
            name = mix.next_operation()
            started = time.perf_counter()
            try:
                await mix(name)
            except Exception as exc:
                code = error_code(exc)
                self.tally.errors[f"{name} {code}"] += 1
                self.tally.samples.setdefault(code, f"{type(exc).__name__}: {exc}"[:300])
                continue
            self.tally.latencies[name].append(time.perf_counter() - started)

    async def watchdog(self) -> None:
        """Stop the load as soon as the node exits."""
        assert self.node is not None
        while True:
            try:
                await asyncio.wait_for(self.stopping.wait(), 0.5)
            except TimeoutError:
                if self.node.process.poll() is not None:
                    self.log(f"the node exited with {self.node.process.returncode}")
                    self.stopping.set()
            else:
                return

    async def pause(self, until: float) -> None:
        """Sleep until ``until`` (monotonic) or until the load is stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), max(0.0, until - time.monotonic()))

    async def wait_ready(self, seconds: float = 60) -> None:
        """Ping until the node answers, with a fresh client per try.

        Before the node has declared its exchange, a publish closes the client's channel, and
        ``BedsClient`` then reconnects without closing the old connection; a throw-away client
        per try keeps those connections from piling up in the measuring client.
        """
        from beds.client import BedsClient

        deadline = time.monotonic() + seconds
        last = ""
        while time.monotonic() < deadline:
            assert self.node is not None
            self.node.check_alive()
            try:
                async with BedsClient(self.res.amqp_url, origin="soak", env="bench") as probe:
                    if (await probe.ping(timeout=2)).ok:
                        return
            except Exception as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the node did not answer within {seconds:g} s ({last})")

    async def probe(self, entry: dict[str, Any], out: dict[str, Any], *, snapshot: bool) -> None:
        """With ``--trace-node``: the node's gc-tracked objects (and a tracemalloc snapshot)."""
        if self.trace_path is None or self.node is None or self.node.process.poll() is not None:
            return
        seen = len(self.trace_lines())
        self.node.process.send_signal(signal.SIGUSR2 if snapshot else signal.SIGUSR1)
        for _ in range(600):  # a snapshot of a large heap takes a while
            lines = self.trace_lines()
            if len(lines) > seen:
                break
            await asyncio.sleep(0.1)
        else:
            self.log("the traced node did not answer the probe within 60 s")
            return
        probe = json.loads(lines[-1])
        entry["node"]["gc_objects"] = probe["gc_objects"]
        entry["node"]["traced_mib"] = probe["traced_mib"]
        entry["node"]["probe_ms"] = probe["probe_ms"]
        if "top_growth" in probe:
            out["trace_top_growth"] = probe["top_growth"]

    def trace_lines(self) -> list[str]:
        assert self.trace_path is not None
        if not self.trace_path.exists():
            return []
        text = self.trace_path.read_text(encoding="utf-8")
        return [line for line in text.splitlines() if line.endswith("}")]

    def window(self, number: int, tally: Tally, ended: float, begun: float) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "window": number,
            "end_s": round(ended - begun, 1),
            **tally.summary(ended - tally.started),
            **self.sample(),
        }
        return entry

    async def load(self, out: dict[str, Any]) -> None:
        """Warm up, then run the windows; fills ``out`` as it goes (kept if the run fails)."""
        from beds.client import BedsClient

        options = self.options
        windows: list[dict[str, Any]] = []
        out["windows"] = windows
        await self.wait_ready()
        from beds.testing import TestIdentity

        # An admin member: the example's writes are for members, and the mix names authors.
        token = TestIdentity.development("bench").token("soak", ("member", "admin"))
        async with BedsClient(
            self.res.amqp_url, origin="soak", env="bench", timeout=CALL_TIMEOUT, token=token
        ) as client:
            out["idle"] = self.sample()
            self.log(f"node answers; RSS {out['idle']['node'].get('rss_mib')} MiB idle")
            mix = Mix(client)
            out["created"] = mix.created
            self.tally = Tally()
            workers = [asyncio.create_task(self.worker(mix)) for _ in range(options.in_flight)]
            workers.append(asyncio.create_task(self.watchdog()))
            try:
                await self.pause(time.monotonic() + options.warmup)
                if self.stopping.is_set():
                    raise RuntimeError("the node exited during the warm-up")
                begun = time.monotonic()
                out["warmup"] = warm = self.window(0, self.swap(), begun, begun)
                await self.probe(warm, out, snapshot=True)  # the baseline
                self.log(
                    f"warm-up done: {warm['requests']:,} requests, {warm['errors']} errors, "
                    f"RSS {warm['node'].get('rss_mib')} MiB (the start)"
                )
                duration = options.minutes * 60
                count = max(1, math.ceil(duration / options.window - 1e-9))
                for number in range(1, count + 1):
                    boundary = begun + min(number * options.window, duration)
                    await self.pause(boundary)
                    entry = self.window(number, self.swap(), time.monotonic(), begun)
                    await asyncio.to_thread(self.res.purge_logs_queue)
                    await self.probe(entry, out, snapshot=False)
                    windows.append(entry)
                    self.log(window_line(entry))
                    if self.stopping.is_set():
                        break
            finally:
                self.stopping.set()
                late = self.tally
                await asyncio.gather(*workers, return_exceptions=True)
                # The requests in flight when the last window closed: their errors count too.
                out["after_last_window"] = late.summary(max(1e-3, time.monotonic() - late.started))
            if self.trace_path is not None and windows:
                # Compared with the baseline once the load has stopped: nothing is in flight.
                await self.probe({"node": {}}, out, snapshot=True)

    def run(self) -> dict[str, Any]:
        options = self.options
        began = time.monotonic()
        layout = self.layout
        self.log("setting up: vhost, database, schema, seed records, SecantusDB")
        self.res.open(
            rel_pool=layout.rel_pool, instances=layout.instances, prefetch=layout.beds_prefetch
        )
        results: dict[str, Any] = {
            "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine.describe(self.res.mysql_url),
            "settings": {
                "minutes": options.minutes,
                "in_flight": options.in_flight,
                "window_seconds": options.window,
                "warmup_seconds": options.warmup,
                "max_growth": options.max_growth,
                "mix": dict(MIX),
                "call_timeout_seconds": CALL_TIMEOUT,
                "layout": asdict(layout),
            },
        }
        command = ["run", "--config", str(self.res.config)]
        if options.trace_node:
            results["settings"]["trace_node_frames"] = options.trace_node
            self.trace_path = self.res.tmp / "node-trace.jsonl"
            tracer = "benchmarks.servers.traced_node"
            prefix = [PYTHON, "-m", tracer, str(self.trace_path), str(options.trace_node)]
        else:
            prefix = [PYTHON, "-m", "beds"]
        self.node = self.res.start("soak-node", [*prefix, *command])
        self.log(f"node started (pid {self.node.pid}); load for {options.minutes:g} min")
        try:
            asyncio.run(self.load(results))
        except Exception as exc:
            results["error"] = f"{type(exc).__name__}: {exc}"
        results["node_alive_at_end"] = self.node.process.poll() is None
        if not results["node_alive_at_end"] or "error" in results:
            results["node_log_tail"] = self.node.tail(30)
        results["summary"] = summarize(results)
        results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        results["elapsed_seconds"] = round(time.monotonic() - began, 1)
        return results


# -- summary and outputs ------------------------------------------------------------------------


def slope_per_hour(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs (seconds), per hour."""
    if len(xs) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    if den == 0:
        return None
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den * 3600, 2)


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    windows: list[dict[str, Any]] = results.get("windows", [])
    warm = results.get("warmup", {})
    limit = results["settings"]["max_growth"]
    out: dict[str, Any] = {"failures": []}
    errors: collections.Counter[str] = collections.Counter()
    for entry in [warm, *windows, results.get("after_last_window", {})]:
        errors.update(entry.get("errors_by_code", {}))
    out["requests"] = sum(w["requests"] for w in windows)
    out["warmup_requests"] = warm.get("requests", 0)
    out["errors"] = sum(errors.values())
    out["errors_by_code"] = dict(sorted(errors.items()))
    out["seconds"] = round(sum(w["seconds"] for w in windows), 1)
    rates = [w["rps"] for w in windows]
    if rates:
        out["rps_mean"] = round(out["requests"] / out["seconds"], 1)
        out["rps_min"], out["rps_max"] = min(rates), max(rates)
        out["rps_last_over_first"] = round(rates[-1] / rates[0], 3) if rates[0] else None
        p99 = [w["p99_ms"] for w in windows if w["p99_ms"] is not None]
        out["p99_ms_max"] = max(p99) if p99 else None
    rss = [w["node"]["rss_mib"] for w in windows if w["node"].get("rss_mib")]
    start = warm.get("node", {}).get("rss_mib")
    out["rss_mib_idle"] = results.get("idle", {}).get("node", {}).get("rss_mib")
    out["rss_mib_start"] = start
    if start and rss:
        out["rss_mib_end"] = rss[-1]
        out["rss_mib_max"] = max([start, *rss])
        out["rss_ratio"] = round(rss[-1] / start, 4)
        xs = [0.0] + [w["end_s"] for w in windows if w["node"].get("rss_mib")]
        out["rss_slope_mib_per_hour"] = slope_per_hour(xs, [start, *rss])
        out["memory_flat"] = out["rss_ratio"] <= limit
    for key in ("fds", "threads"):
        values = [w["node"].get(key) for w in windows]
        out[f"{key}_start"] = warm.get("node", {}).get(key)
        out[f"{key}_end"] = values[-1] if values else None
        out[f"{key}_max"] = max((v for v in values if v is not None), default=None)
    for key in ("gc_objects", "traced_mib"):  # with --trace-node only
        values = [w["node"][key] for w in windows if key in w["node"]]
        if values and key in warm.get("node", {}):
            out[f"{key}_start"], out[f"{key}_end"] = warm["node"][key], values[-1]
    rec = [w["rec_server"].get("rss_mib") for w in windows]
    out["rec_server_rss_mib_start"] = warm.get("rec_server", {}).get("rss_mib")
    out["rec_server_rss_mib_end"] = rec[-1] if rec else None
    cpu = [w.get("node", {}).get("cpu_seconds") for w in [warm, *windows]]
    if len(cpu) > 1 and cpu[0] is not None and cpu[-1] is not None and out["seconds"]:
        out["node_cpu_percent"] = round((cpu[-1] - cpu[0]) / out["seconds"] * 100, 1)
    out["created"] = results.get("created", {})
    if "error" in results:
        out["failures"].append(f"the run failed: {results['error']}")
    if not results.get("node_alive_at_end", True):
        out["failures"].append("the node died")
    if out["errors"]:
        out["failures"].append(f"{out['errors']} requests failed")
    if out.get("memory_flat") is False:
        out["failures"].append(f"RSS grew {out['rss_ratio']:.3f}x (limit {limit:g}x)")
    if "rss_ratio" not in out and "error" not in results:
        out["failures"].append("no RSS measured")
    planned = results["settings"]["minutes"] * 60
    if "error" not in results and out["seconds"] < planned * 0.95:
        out["failures"].append(f"the load ran {out['seconds']:g} s of {planned:g} s")
    out["passed"] = not out["failures"]
    return out


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


def window_line(w: dict[str, Any]) -> str:
    node = w["node"]
    return (
        f"{w['end_s']:>7.0f} s  {w['rps']:>7.1f} req/s  p50 {_f(w['p50_ms'], 2):>6} ms  "
        f"p99 {_f(w['p99_ms'], 2):>7} ms  errors {w['errors']:<3} RSS "
        f"{_f(node.get('rss_mib'), 1)} MiB  fds {_f(node.get('fds'), 0)}  "
        f"threads {_f(node.get('threads'), 0)}"
        + (f"  gc objects {node['gc_objects']:,}" if "gc_objects" in node else "")
    )


def cpu_percent(previous: dict[str, Any], current: dict[str, Any]) -> float | None:
    before = previous.get("node", {}).get("cpu_seconds")
    after = current["node"].get("cpu_seconds")
    if before is None or after is None or not current["seconds"]:
        return None
    return round(float(after - before) / float(current["seconds"]) * 100, 0)


def short_frame(frame: str) -> str:
    """``/…/site-packages/aiormq/base.py:62`` → ``aiormq/base.py:62``."""
    frame = re.sub(r"^.*/site-packages/|^.*/lib/python3\.\d+/", "", frame)
    return frame.removeprefix(str(ROOT) + "/")


def markdown(results: dict[str, Any]) -> str:
    s, settings, m = results["summary"], results["settings"], results["machine"]
    mix = ", ".join(
        f"{name.replace('_', ' ')} {weight}" for name, weight in settings["mix"].items()
    )
    verdict = "**passed**" if s["passed"] else "**failed**: " + "; ".join(s["failures"])
    lines = [
        f"Measured {results['generated']} on {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gib']} GiB; {m['python']}, RabbitMQ {m['rabbitmq']}, MariaDB {m['mariadb']}, "
        f"SecantusDB {m['packages'].get('secantusdb')}. Load average at start "
        f"{m['load_average_at_start']}, at end {m.get('load_average_at_end', '-')}.",
        "",
        f"One `beds run` node, {settings['minutes']:g} min of steady load after "
        f"{settings['warmup_seconds']:g} s of warm-up, {settings['in_flight']} requests in flight "
        f"through one `BedsClient`, windows of {settings['window_seconds']:g} s. Mix (requests "
        f"issued, by weight): {mix}. Verdict: {verdict}.",
        "",
        "### Soak summary",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| requests (after warm-up) | {s['requests']:,} |",
        f"| errors (warm-up and the last requests in flight included) | {s['errors']} |",
        f"| requests/s: mean, min, max over windows | {_f(s.get('rps_mean'), 0)}, "
        f"{_f(s.get('rps_min'), 0)}, {_f(s.get('rps_max'), 0)} |",
        f"| requests/s: last window / first window | {_f(s.get('rps_last_over_first'), 3)} |",
        f"| highest p99 of a window, ms | {_f(s.get('p99_ms_max'), 2)} |",
        f"| node RSS idle (before load), MiB | {_f(s.get('rss_mib_idle'), 1)} |",
        f"| node RSS at start (after warm-up), MiB | {_f(s.get('rss_mib_start'), 1)} |",
        f"| node RSS at end, MiB | {_f(s.get('rss_mib_end'), 1)} |",
        f"| node RSS max, MiB | {_f(s.get('rss_mib_max'), 1)} |",
        f"| node RSS end / start (limit {settings['max_growth']:g}) | "
        f"{_f(s.get('rss_ratio'), 3)} |",
        f"| node RSS trend (least squares), MiB/hour | {_f(s.get('rss_slope_mib_per_hour'), 2)} |",
        f"| node open fds: start, end, max | {_f(s.get('fds_start'), 0)}, "
        f"{_f(s.get('fds_end'), 0)}, {_f(s.get('fds_max'), 0)} |",
        f"| node threads: start, end | {_f(s.get('threads_start'), 0)}, "
        f"{_f(s.get('threads_end'), 0)} |",
        f"| node CPU (share of one core) | {_f(s.get('node_cpu_percent'), 0)} % |",
        f"| SecantusDB server RSS: start, end, MiB | {_f(s.get('rec_server_rss_mib_start'), 1)}, "
        f"{_f(s.get('rec_server_rss_mib_end'), 1)} |",
        f"| records created: posts, profiles | {s['created'].get('posts', 0):,}, "
        f"{s['created'].get('profiles', 0):,} |",
    ]
    if "gc_objects_start" in s:
        lines += [
            f"| node gc-tracked objects: start, end (traced) | {s['gc_objects_start']:,}, "
            f"{s['gc_objects_end']:,} |",
            f"| node memory traced by tracemalloc: start, end, MiB | "
            f"{_f(s.get('traced_mib_start'), 2)}, {_f(s.get('traced_mib_end'), 2)} |",
        ]
    if s["errors_by_code"]:
        codes = ", ".join(f"`{code}` {n}" for code, n in s["errors_by_code"].items())
        lines.append(f"| errors by operation and code | {codes} |")
    names = list(settings["mix"])
    traced = any("gc_objects" in w["node"] for w in results.get("windows", []))
    lines += [
        "",
        "### Soak windows",
        "",
        "| end s | req/s | "
        + " | ".join(name.replace("_", " ") for name in names)
        + " | p50 ms | p99 ms | errors | RSS MiB | fds | node CPU |"
        + (" gc objects | traced MiB |" if traced else ""),
        "|" + "---:|" * (len(names) + 8 + 2 * traced),
    ]
    previous = results.get("warmup", {})
    for w in results.get("windows", []):
        per = " | ".join(_f(w["operations"][name]["rps"], 0) for name in names)
        errors = w["errors"] if not w["errors"] else f"**{w['errors']}**"
        lines.append(
            f"| {w['end_s']:,.0f} | {_f(w['rps'], 0)} | {per} | {_f(w['p50_ms'], 2)} | "
            f"{_f(w['p99_ms'], 2)} | {errors} | {_f(w['node'].get('rss_mib'), 1)} | "
            f"{_f(w['node'].get('fds'), 0)} | {_f(cpu_percent(previous, w), 0)} % |"
            + (
                f" {_f(w['node'].get('gc_objects'), 0)} | {_f(w['node'].get('traced_mib'), 2)} |"
                if traced
                else ""
            )
        )
        previous = w
    lines += [
        "",
        "Per-operation columns are requests/s. The RSS column is the node's `VmRSS` at the end of "
        "the window; the start value is read when the warm-up ends.",
        "",
        "![throughput, latency and node RSS over the soak](soak.png)",
        "",
    ]
    growth = results.get("trace_top_growth") or []
    if growth:
        frames = settings.get("trace_node_frames")
        lines += [
            f"### Allocations that grew most (tracemalloc, {frames} frames)",
            "",
            "**The node ran under tracemalloc: a diagnostic run; its speed and RSS are not "
            "representative.** Traced memory after the load stopped, compared with the end of "
            "the warm-up.",
            "",
            "| KiB now | KiB growth | blocks growth | where (innermost frame first) |",
            "|---:|---:|---:|---|",
        ]
        for stat in growth[:15]:
            where = "<br>".join(f"`{short_frame(frame)}`" for frame in stat["stack"])
            lines.append(
                f"| {_f(stat['kib'], 1)} | {_f(stat['kib_growth'], 1)} | "
                f"{stat['blocks_growth']:,} | {where} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = results.get("windows", [])
    s, settings = results["summary"], results["settings"]
    # Rates and latencies belong to a whole window (drawn at its middle); /proc samples to its end.
    middles = [(w["end_s"] - w["seconds"] / 2) / 60 for w in windows]
    ends = [0.0, *(w["end_s"] / 60 for w in windows)]
    figure, (rates, latency, memory, handles) = plt.subplots(
        4, 1, figsize=(11, 12), sharex=True, gridspec_kw={"height_ratios": [3, 2, 3, 1.5]}
    )
    rates.plot(middles, [w["rps"] for w in windows], "o-", linewidth=2.4, label="total")
    for name in settings["mix"]:
        rates.plot(
            middles,
            [w["operations"][name]["rps"] for w in windows],
            ".-",
            linewidth=1.2,
            label=name,
        )
    rates.set_ylabel("requests/s")
    rates.set_ylim(0, max([w["rps"] for w in windows], default=1) * 1.3)
    rates.set_title("Throughput per window")
    rates.legend(loc="upper center", fontsize=8, ncol=6)
    latency.plot(middles, [w["p50_ms"] for w in windows], "o-", label="p50")
    latency.plot(middles, [w["p99_ms"] for w in windows], "s-", label="p99")
    latency.set_ylabel("ms")
    latency.set_ylim(bottom=0)
    latency.set_title("Latency per window (all operations)")
    latency.legend(loc="upper left", fontsize=8)
    start = s.get("rss_mib_start")
    rss = [start, *(w["node"].get("rss_mib") for w in windows)]
    memory.plot(ends, rss, "o-", color="tab:red", label="node RSS")
    if start:
        limit = start * settings["max_growth"]
        memory.axhline(start, color="grey", linestyle=":", label="start (after warm-up)")
        memory.axhline(
            limit, color="tab:red", linestyle="--", label=f"limit x{settings['max_growth']:g}"
        )
        values = [v for v in rss if v]
        memory.set_ylim(min(values) * 0.9, max([*values, limit]) * 1.05)
    memory.set_ylabel("MiB")
    memory.set_title("Resident memory of the beds run node")
    memory.legend(loc="lower left", fontsize=8, ncol=3)
    start_node = results.get("warmup", {}).get("node", {})
    for key, style in (("fds", "o-"), ("threads", "s-")):
        series = [start_node.get(key), *(w["node"].get(key) for w in windows)]
        handles.plot(ends, series, style, label=f"open {key}" if key == "fds" else key)
    handles.set_ylim(bottom=0)
    handles.set_title("The node's open file descriptors and threads")
    handles.set_xlabel("minutes after warm-up")
    handles.legend(loc="lower left", fontsize=8, ncol=2)
    for axis in (rates, latency, memory, handles):
        axis.grid(True, alpha=0.3)
    m = results["machine"]
    figure.suptitle(
        f"BEDS soak: {settings['minutes']:g} min, {settings['in_flight']} in flight "
        f"({m['cpu']}, {m['cores']} cores, {results['generated']})"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "soak.md").write_text(markdown(results), encoding="utf-8")
    plot(results, out / "soak.png")


def print_table(results: dict[str, Any]) -> None:
    print(f"\n{'end s':>7}  {'req/s':>13}  p50, p99, errors, node RSS, fds, threads")
    for w in results.get("windows", []):
        print(window_line(w))
    s = results["summary"]
    print(
        f"\n{s['requests']:,} requests after warm-up ({s['warmup_requests']:,} during it), "
        f"{s['errors']} errors {s['errors_by_code'] or ''}"
    )
    print(
        f"requests/s: mean {_f(s.get('rps_mean'), 0)}, min {_f(s.get('rps_min'), 0)}, "
        f"max {_f(s.get('rps_max'), 0)}; highest window p99 {_f(s.get('p99_ms_max'), 2)} ms"
    )
    print(
        f"node RSS: idle {_f(s.get('rss_mib_idle'))} MiB, start {_f(s.get('rss_mib_start'))}, "
        f"end {_f(s.get('rss_mib_end'))}, max {_f(s.get('rss_mib_max'))}, end/start "
        f"{_f(s.get('rss_ratio'), 3)} (limit {results['settings']['max_growth']:g}), trend "
        f"{_f(s.get('rss_slope_mib_per_hour'), 2)} MiB/hour"
    )
    if results.get("error"):
        print(f"\nthe run failed: {results['error']}", file=sys.stderr)
        print(results.get("node_log_tail", ""), file=sys.stderr)
    print("PASSED" if s["passed"] else "FAILED: " + "; ".join(s["failures"]))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    if options.rerender:
        results = json.loads((options.out / "soak.json").read_text(encoding="utf-8"))
        results["summary"] = summarize(results)
    else:
        signal.signal(signal.SIGTERM, _interrupt)
        soak = Soak(options)
        try:
            results = soak.run()
        finally:
            with contextlib.suppress(Exception):
                soak.res.close()
    print_table(results)
    write(results, options.out)
    print(f"wrote {options.out}/soak.json, soak.md, soak.png")
    return 0 if results["summary"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
