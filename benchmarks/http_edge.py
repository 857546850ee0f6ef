"""The HTTP group (``--only http``): SPEW's home timeline and post create, three ways (issue 19).

How to plug in (benchmarks/run.py): after ``res.open(...)``, call ``http_edge.run(res, options)``
when ``http`` is selected (``--only http``) and store what it returns under
``results["http"]``; ``options`` is the suite's argparse namespace (``quick`` and ``repeats``
are read when present). Standalone:
``python -m benchmarks.http_edge [--quick] [--repeats N] [--seconds S] [--json FILE]``.

The same two calls on the same MariaDB, in a database of the group's own (``<run's>_http``:
the schema applied and 1,000 posts by ``seed_author``, dropped at the end), so that a home page
costs the same in every run, whatever the suite's scenarios wrote before: in the run's database
they leave hundreds of thousands of posts by one author, and ``spp_home_v``'s plan then scans
every post (hundreds of ms a page). Two members, signed up and logged in through the edge: the
reader follows ``seed_author`` and posts nothing, so that every home page reads the same 50 of
the same 1,000 posts; the writer is the author of every create (the home points also run
before the create points). Each column's calls:

- ``http``: ``beds http`` (packages/beds-http, uvicorn on loopback) in front of a ``beds run``
  node: ``GET /v1/spew_post/home?limit=50`` (the real ``home`` query, ``spp_home_v``, viewer
  bound to the caller) with the reader's Bearer token and ``POST /v1/spew_post`` (the edge's
  client gives it an idempotency key) with the writer's;
- ``amqp``: the same node called by :class:`beds.client.BedsClient` with the same tokens
  (``fetch("spew_post", "home", limit=50)``, ``create`` with the client's idempotency key);
- ``peer``: ``benchmarks.peers.http_mariadb``, Starlette + asyncmy straight to the same
  database (the same view and procedure, the reader as viewer, the writer as author; no auth,
  validation, AMQP, lineage or idempotency), what a user would build instead.

The client side is ``python -m benchmarks.http_load`` (a small keep-alive HTTP/1.1 client on
asyncio that never reuses a connection idle 2 s or more, below uvicorn's 5 s keep-alive
timeout, nor retries a request; or BedsClient), one process per column, at 16 and 64 in
flight, repeats interleaved.
Each point reports req/s, p50/p99 and CPU time per request of every process (edge, node, peer,
RabbitMQ, MariaDB, the load generator), read from ``/proc``: the edge's CPU per request is
what the HTTP hop costs. The ratios http/amqp and http/peer carry no target (the issue sets
none).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.http_load import HOME_LIMIT
from benchmarks.resources import PYTHON, SEED_AUTHOR, apply_schema, run_load, seed_posts, wait_line
from benchmarks.targets import target_row
from benchmarks.work import POST_TEXT
from benchmarks.workers import node_pids

if TYPE_CHECKING:
    from benchmarks.resources import Resources, Server

CONCURRENCIES: Final = (16, 64)
OPERATIONS: Final = ("home", "create")
KINDS: Final = ("http", "amqp", "peer")
FOLLOWED: Final = SEED_AUTHOR
"""The author of the group's seed posts, whom the reader follows."""
PASSWORD: Final = "bench-Passw0rd-http"
PEER_POOL: Final = 16
"""The peer's asyncmy pool: the suite's ``rel_pool``, as the node's ``pool_max``."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _http(
    method: str, url: str, body: Any = None, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    """One set-up request (stdlib: not measured); the status and the decoded JSON body."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text or b"{}")
        except ValueError:
            return exc.code, {"text": text[:300].decode("utf-8", "replace")}
    except (urllib.error.URLError, ConnectionError):
        return 0, {}


def wait_http(url: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _http("GET", url)[0] == 200:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {seconds:g} s")


def own_database(res: Resources, name: str) -> str:
    """Create the group's database ``name`` next to the run's: the schema, ``SEED_POSTS`` by
    ``FOLLOWED``; its URL. The caller drops it (``DROP DATABASE IF EXISTS``), also on failure."""
    url = res.mysql_url.rsplit("/", 1)[0] + "/" + name
    res.sql(f"CREATE DATABASE `{name}`", database=False)
    config = res.tmp / "beds-http-schema.toml"
    config.write_text(with_database(res, url), encoding="utf-8")
    apply_schema(config, "HTTP group")
    seed_posts(url)
    return url


def with_database(res: Resources, url: str) -> str:
    """The run's node config with its REL store on ``url``."""
    text = res.config.read_text(encoding="utf-8")
    old = f'url = "{res.mysql_url}"'
    if text.count(old) != 1:
        raise RuntimeError("the REL URL is not in the run's config: Resources.config_text changed?")
    return text.replace(old, f'url = "{url}"')


def member(edge: str, token_file: Path, *, follow: bool) -> str:
    """Sign up and log in a member through the edge; the member's handle. With ``follow``,
    the member follows ``FOLLOWED`` and its home timeline is checked to hold a full page.

    The token goes to ``token_file`` (mode 0600), which the load generators read: not on a
    command line.
    """
    handle = "bench_" + uuid.uuid4().hex[:10]
    credentials = {"handle": handle, "password": PASSWORD}
    deadline = time.monotonic() + 90
    while True:  # until the node has bound its queues the edge answers 503
        status, answer = _http("POST", f"{edge}/v1/auth/signup", credentials)
        if status == 201:
            break
        if status not in (0, 503) or time.monotonic() > deadline:
            raise RuntimeError(f"sign-up through the edge failed: {status} {answer}")
        time.sleep(0.5)
    status, answer = _http("POST", f"{edge}/v1/auth/login", credentials)
    if status != 200:
        raise RuntimeError(f"log-in through the edge failed: {status} {answer}")
    token: str = answer["data"]["token"]
    token_file.touch(mode=0o600)
    token_file.write_text(token, encoding="utf-8")
    if not follow:
        return handle
    status, answer = _http("POST", f"{edge}/v1/spew_follow", {"followee": FOLLOWED}, token)
    if status not in (200, 201):
        raise RuntimeError(f"follow through the edge failed: {status} {answer}")
    status, answer = _http("GET", f"{edge}/v1/spew_post/home?limit={HOME_LIMIT}", token=token)
    if status != 200 or len(answer.get("data", [])) != HOME_LIMIT:
        raise RuntimeError(f"the home timeline is not {HOME_LIMIT} posts: {status} {answer}"[:500])
    return handle


def params_of(
    kind: str,
    operation: str,
    res: Resources,
    ports: dict[str, int],
    handles: dict[str, str],
    tokens: dict[str, Path],
) -> tuple[str, dict[str, Any]]:
    """The load generator's target and params for one column and operation: ``home`` as the
    reader, ``create`` as the writer (``handles`` and ``tokens`` by those two roles)."""
    role = "reader" if operation == "home" else "writer"
    handle, token = handles[role], tokens[role]
    if kind == "amqp":
        params: dict[str, Any] = {
            "url": res.amqp_url,
            "token_file": str(token),
            "operation": operation,
        }
        if operation == "home":
            params["records"] = HOME_LIMIT
        return "spew", params
    if kind == "http":
        params = {"port": ports["edge"], "token_file": str(token)}
        if operation == "home":
            params.update(method="GET", path=f"/v1/spew_post/home?limit={HOME_LIMIT}", status=200)
        else:
            params.update(method="POST", path="/v1/spew_post", body={"body": POST_TEXT}, status=201)
    else:
        params = {"port": ports["peer"]}
        if operation == "home":
            params.update(method="GET", path=f"/home?viewer={handle}", status=200)
        else:
            body = {"author": handle, "body": POST_TEXT}
            params.update(method="POST", path="/posts", body=body, status=201)
    if operation == "home":
        params["records"] = HOME_LIMIT
    return "http", params


def _settings(args: Any) -> tuple[int, float, int]:
    """Repeats, seconds a point, warm-up requests (``--quick``: a smoke run)."""
    quick = bool(getattr(args, "quick", False))
    repeats = getattr(args, "repeats", None) or (1 if quick else 3)
    seconds = getattr(args, "seconds", None) or (3.0 if quick else 8.0)
    return repeats, float(seconds), 100 if quick else 300


def measure(res: Resources, args: Any) -> dict[str, Any]:
    """Start the node, the edge and the peer; run every column; the runs by operation, kind."""
    from benchmarks.report import summarize

    repeats, seconds, warmup = _settings(args)
    ports = {"edge": free_port(), "peer": free_port()}
    servers: list[Server] = []
    out: dict[str, Any] = {}
    database = f"{res.database}_http"
    try:
        mysql_url = own_database(res, database)
        config = res.tmp / "beds-http.toml"
        config.write_text(
            with_database(res, mysql_url) + "\n[http]\nrequest_timeout = 30\n", encoding="utf-8"
        )
        node = res.start("http-node", [PYTHON, "-m", "beds", "run", "--config", str(config)])
        servers.append(node)
        edge_argv = [PYTHON, "-m", "beds", "http", "--config", str(config)]
        edge = res.start("http-edge", [*edge_argv, "--port", str(ports["edge"])])
        servers.append(edge)
        peer_argv = [PYTHON, "-m", "benchmarks.peers.http_mariadb", mysql_url]
        peer = res.start("http-peer", [*peer_argv, str(ports["peer"]), str(PEER_POOL)])
        servers.append(peer)
        wait_line(peer, "ready")
        edge_url, peer_url = (f"http://127.0.0.1:{ports[k]}" for k in ("edge", "peer"))
        wait_http(f"{edge_url}/healthz")
        tokens = {role: res.tmp / f"http-{role}.token" for role in ("reader", "writer")}
        handles = {
            "reader": member(edge_url, tokens["reader"], follow=True),
            "writer": member(edge_url, tokens["writer"], follow=False),
        }
        wait_http(f"{peer_url}/home?viewer={handles['reader']}")
        watch = {
            **res.watched(None),
            **{f"edge_{i}" if i else "edge": pid for i, pid in enumerate(node_pids(edge.pid))},
            "node": node.pid,
            "peer": peer.pid,
        }
        for operation in OPERATIONS:
            for kind in KINDS:
                target, params = params_of(kind, operation, res, ports, handles, tokens)
                spec = {
                    "target": target,
                    "params": params,
                    "points": [
                        {"concurrency": c, "count": 1_000_000, "seconds": seconds}
                        for c in CONCURRENCIES
                    ],
                    "repeats": repeats,
                    "warmup": warmup,
                    "watch": watch,
                }
                print(f"  http group: {operation} via {kind}", file=sys.stderr, flush=True)
                timeout = seconds * len(CONCURRENCIES) * repeats + 150
                runs = run_load({**spec, "module": "benchmarks.http_load"}, timeout)["runs"]
                out[f"{operation}.{kind}"] = summarize(runs)
                res.purge_logs_queue()
        for server in servers:
            server.check_alive()
    except Exception as exc:
        tails = "\n".join(f"--- {s.name} ---\n{s.tail()}" for s in servers)
        out["error"] = f"{type(exc).__name__}: {exc}\n{tails}"
    finally:
        for server in reversed(servers):
            res.stop(server)
        try:
            res.sql(f"DROP DATABASE IF EXISTS `{database}`", database=False)
        except Exception as exc:  # the run's own clean-up still follows
            print(f"  http group: {database} not dropped: {exc}", file=sys.stderr, flush=True)
    return out


def _edge_cpu(cpu: dict[str, float]) -> float | None:
    shares = [v for k, v in cpu.items() if k.startswith("edge")]
    return round(sum(shares), 1) if shares else None


def run(res: Resources, args: Any = None) -> dict[str, Any]:
    """The HTTP group's rows and ratios (``results.json`` key ``http``). ``res`` must be open."""
    measured = measure(res, args)
    if "error" in measured:
        print(f"  http group FAILED: {measured['error']}", file=sys.stderr, flush=True)
    rows: list[dict[str, Any]] = []
    for operation in OPERATIONS:
        for kind in KINDS:
            points = measured.get(f"{operation}.{kind}", {})
            for concurrency, point in points.items():
                cpu = point["cpu_us"]
                rows.append(
                    {
                        "operation": operation,
                        "kind": kind,
                        "concurrency": int(concurrency),
                        "rps": point["rps"],
                        "p50_ms": point["p50_ms"],
                        "p99_ms": point["p99_ms"],
                        "errors": point["errors"],
                        "requests": point["requests"],
                        "rps_runs": point["rps_runs"],
                        "error_sample": point["error_sample"],
                        "cpu_us_edge": _edge_cpu(cpu) if kind == "http" else None,
                        "cpu_us": cpu,
                    }
                )
    by_key = {(r["operation"], r["kind"], r["concurrency"]): r for r in rows}
    targets = []
    for operation in OPERATIONS:
        for concurrency in CONCURRENCIES:
            http = by_key.get((operation, "http", concurrency))
            for other in ("amqp", "peer"):
                below = by_key.get((operation, other, concurrency))
                value = (
                    round(http["rps"] / below["rps"], 3)
                    if http and below and below["rps"]
                    else None
                )
                note = (
                    f"edge CPU {http['cpu_us_edge']} µs/request"
                    if http and http["cpu_us_edge"] is not None
                    else "not measured"
                )
                targets.append(
                    target_row(
                        f"{operation} c={concurrency}: http / {other} req/s",
                        value,
                        None,
                        where=note,
                    )
                )
    out: dict[str, Any] = {"rows": rows, "targets": targets}
    if "error" in measured:
        out["error"] = measured["error"]
    return out


def print_rows(result: dict[str, Any]) -> None:
    roles = ("edge", "node", "peer", "rabbitmq", "mariadb", "client")
    print(
        f"\n{'operation':<10}{'via':<6}{'c':>4}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'err':>5}"
        "  CPU µs/req: " + "".join(f"{r[:6]:>7}" for r in roles)
    )
    for r in result["rows"]:
        cpu = {**r["cpu_us"], "edge": r["cpu_us_edge"] or r["cpu_us"].get("edge")}
        cells = "".join(f"{cpu.get(role) or 0:>7.0f}" for role in roles)
        print(
            f"{r['operation']:<10}{r['kind']:<6}{r['concurrency']:>4}{r['rps']:>9,.0f}"
            f"{r['p50_ms'] or 0:>8.2f}{r['p99_ms'] or 0:>8.2f}{r['errors']:>5}             {cells}"
        )
    for t in result["targets"]:
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        print(f"{t['name']:<34} {value:>6}  ({t['note']})")
    if "error" in result:
        print(f"FAILED: {result['error']}")


def main(argv: list[str] | None = None) -> int:
    from benchmarks.resources import run_alone

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s a point, 1 repeat")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per point (3)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per point (8)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    result = run_alone(run, parser.parse_args(argv), print_rows)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
