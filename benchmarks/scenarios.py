"""Every scenario of the suite: its server side (a command) and its client side (a load spec)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from benchmarks.resources import PYTHON, ROOT

if TYPE_CHECKING:
    from benchmarks.resources import Resources

GROUPS = {
    "amqp": "1. AMQP ceiling",
    "db": "2. Database ceiling",
    "pipeline": "3. Ideal pipeline",
    "beds": "4. BEDS",
    "peer": "5. Peers",
    "tls": "6. BEDS over TLS",
    "diagnostic": "Diagnostics",
}

STORE_OPERATIONS = ("rel_fetch", "rel_create", "rec_fetch", "rec_create")
BATCHED_NOTE = (
    "The best hand-written aiormq (`benchmarks/batching.py`), the ceiling the targets use: "
    "server and client channels without publisher confirms, every reply and ack (or request) "
    "of one loop turn written in one chunk, acks coalesced with `multiple`, frames packed by "
    "hand. The unbatched scenario uses aiormq as it comes (confirms, one write per frame)."
)

CONFIRMED_QUEUE = "bench.echo.confirmed"
TOPIC_EXCHANGE = "bench.echo.topic"
"""The topic exchange of ``amqp_echo_confirmed_topic_batched`` (routed as BEDS routes)."""
CONFIRMED_NOTE = (
    "The echo's client publishes as `BedsClient` does: on a channel in confirm mode, each "
    "request `mandatory` (with a `message_id`), each call waiting for RabbitMQ's confirm and the "
    "reply; the queue is durable, as BEDS's broker queues, and the server acks each request "
    "after its reply. The AMQP ceiling with the guarantees BEDS' client keeps."
)
PERSISTENT_NOTE = (
    " Requests also persistent (`delivery_mode` 2), which `BedsClient` does not ask for: what "
    "persisting every request would cost the ceiling."
)

TOPIC_NOTE = (
    " The requests go through a durable topic exchange bound with a wildcard pattern, as BEDS "
    "routes them (its events exchange): against `amqp_echo_confirmed_batched` it prices "
    "RabbitMQ's topic routing."
)

BATCH_RECORDS = 500
"""Records (or keys) a batch message carries (the issue's at most 500)."""
BATCH_CONCURRENCIES = (1, 4, 16)
"""Batch messages in flight at each point."""
BATCH_DB_CONNECTIONS = 2
"""Connections of the MariaDB-only batch ceilings (``db_rel_*_many``)."""
FANOUT_CALLS = 24
"""BEDS calls one fan-out transaction makes (``benchmarks.fanout_load``)."""


@dataclass(frozen=True)
class Layout:
    """How the server sides are sized (the same for the ceilings, the pipeline and BEDS)."""

    consumers: int = 1
    """AMQP ceiling and pipeline: channels with one consumer each."""
    prefetch: int = 256
    """AMQP ceiling and pipeline: prefetch per channel (``run.py --sweep`` compares layouts)."""
    instances: int = 32
    """BEDS: broker tasks per broker type (rBroker, wBroker)."""
    beds_prefetch: int = 128
    """BEDS: prefetch of each broker's channel."""
    rel_pool: int = 16
    """asyncmy pool size (pipeline, database ceiling, BEDS ``pool_max``, peers)."""
    peer_prefetch: int = 128
    """FastStream prefetch per subscriber; Nameko ``max_workers``."""


@dataclass(frozen=True)
class Scenario:
    key: str
    group: str
    label: str
    operation: str
    server: str
    """``none``, ``amqp``, ``beds``, ``beds-uvloop``, ``beds-no-lineage``, ``beds-no-audit``,
    ``beds-tls``, ``beds-spare``, ``faststream`` or ``nameko``. Every ``beds`` kind but
    ``beds-uvloop`` serves on asyncio's loop, like the ceilings (``beds run`` takes uvloop when
    it is installed, as it is here), unless ``uvloop`` is set. ``beds-tls`` and ``beds-spare``
    run on the spare servers (:mod:`benchmarks.tls`), over TLS and in plaintext; the suite starts
    them when such a scenario is selected and adds their URL (and CA) to the load params."""
    load: dict[str, Any]
    server_args: tuple[str, ...] = ()
    uvloop: bool = False
    """The load generator on uvloop, and a ``beds run`` node too."""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def build(res: Resources, layout: Layout, *, sweep: bool = False) -> list[Scenario]:
    url = res.amqp_url
    stores = {
        "mysql_url": res.mysql_url,
        "mongo_uri": res.mongo_uri,
        "mongo_db": res.mongo_db,
        "pool": layout.rel_pool,
    }
    store_args = (
        "--mysql-url",
        res.mysql_url,
        "--mongo-uri",
        res.mongo_uri,
        "--mongo-db",
        res.mongo_db,
        "--pool",
        str(layout.rel_pool),
    )
    echo_params = {"url": url, "routing_key": "bench.echo", "operation": "echo", "check": "bytes"}
    echo_load: dict[str, Any] = {"target": "amqp", "params": echo_params}

    def amqp_layout(consumers: int, prefetch: int) -> tuple[str, ...]:
        return ("--consumers", str(consumers), "--prefetch", str(prefetch))

    out: list[Scenario] = []
    if sweep:
        for consumers, prefetch in ((1, 16), (1, 64), (1, 256), (2, 32), (2, 64), (4, 32), (8, 16)):
            out.append(
                Scenario(
                    key=f"amqp_echo_{consumers}x{prefetch}",
                    group="amqp",
                    label=f"aiormq echo, {consumers} consumers x prefetch {prefetch}",
                    operation="echo",
                    server="amqp",
                    server_args=amqp_layout(consumers, prefetch),
                    load=echo_load,
                )
            )
        return out
    best = amqp_layout(layout.consumers, layout.prefetch)
    out.append(
        Scenario(
            key="amqp_echo",
            group="amqp",
            label=f"aiormq echo ({layout.consumers}x{layout.prefetch})",
            operation="echo",
            server="amqp",
            server_args=best,
            load=echo_load,
        )
    )
    out.append(
        Scenario(
            key="amqp_echo_uvloop",
            group="amqp",
            label="aiormq echo, uvloop",
            operation="echo",
            server="amqp",
            server_args=(*best, "--uvloop"),
            load=echo_load,
            uvloop=True,
        )
    )
    out.append(
        Scenario(
            key="amqp_echo_batched",
            group="amqp",
            label=f"aiormq echo, batched ({layout.consumers}x{layout.prefetch}): no confirms, "
            "one write per loop turn",
            operation="echo",
            server="amqp",
            server_args=(*best, "--batched"),
            load={"target": "amqp", "params": {**echo_params, "batched": True}},
            note=BATCHED_NOTE,
        )
    )
    confirmed_params = {
        **echo_params,
        "routing_key": CONFIRMED_QUEUE,
        "confirmed": True,
    }
    # (batched, persistent, topic): topic routes the requests through a topic exchange.
    variants = (
        (False, False, False),
        (True, False, False),
        (True, True, False),
        (True, False, True),
    )
    for batched, persistent, topic in variants:
        suffix = (
            ("_persistent" if persistent else "")
            + ("_topic" if topic else "")
            + ("_batched" if batched else "")
        )
        out.append(
            Scenario(
                key="amqp_echo_confirmed" + suffix,
                group="amqp" if not persistent else "diagnostic",
                label=f"aiormq echo{', batched' if batched else ''}, client with publisher "
                f"confirms and mandatory{', persistent' if persistent else ''}"
                f"{', through a topic exchange' if topic else ''} "
                f"({layout.consumers}x{layout.prefetch})",
                operation="echo",
                server="amqp",
                server_args=(
                    *best,
                    "--queue",
                    CONFIRMED_QUEUE,
                    "--durable",
                    *(("--batched",) if batched else ()),
                    *(("--topic", TOPIC_EXCHANGE) if topic else ()),
                ),
                load={
                    "target": "amqp",
                    "params": {
                        **confirmed_params,
                        **({"batched": True} if batched else {}),
                        **({"persistent": True} if persistent else {}),
                        **(
                            {"exchange": TOPIC_EXCHANGE, "routing_key": "bench.echo.read"}
                            if topic
                            else {}
                        ),
                    },
                },
                note=(CONFIRMED_NOTE + (" " + BATCHED_NOTE if batched else ""))
                + (PERSISTENT_NOTE if persistent else "")
                + (TOPIC_NOTE if topic else ""),
            )
        )
    for operation in STORE_OPERATIONS:
        out.append(
            Scenario(
                key=f"db_{operation}",
                group="db",
                label=f"{'asyncmy' if operation.startswith('rel') else 'AsyncMongoClient'} "
                f"{operation.replace('_', ' ')}",
                operation=operation,
                server="none",
                load={"target": "store", "params": {"operation": operation, **stores}},
            )
        )
    for batched in (False, True):
        for operation in STORE_OPERATIONS:
            queue = f"bench.pipe.{operation}"
            out.append(
                Scenario(
                    key=f"pipe_{operation}" + ("_batched" if batched else ""),
                    group="pipeline",
                    label=f"aiormq + store, {operation.replace('_', ' ')}"
                    + (", batched (no confirms, one write per loop turn)" if batched else ""),
                    operation=operation,
                    server="amqp",
                    server_args=(
                        *best,
                        "--queue",
                        queue,
                        "--work",
                        operation,
                        *store_args,
                        *(("--batched",) if batched else ()),
                    ),
                    load={
                        "target": "amqp",
                        "params": {
                            "url": url,
                            "routing_key": queue,
                            "operation": operation,
                            "check": "ok",
                            **({"batched": True} if batched else {}),
                        },
                    },
                    note=BATCHED_NOTE if batched else "",
                )
            )
    for operation in ("ping", *STORE_OPERATIONS):
        keyed = operation.endswith("_create")
        out.append(
            Scenario(
                key=f"beds_{operation}",
                group="beds",
                label=f"BedsClient → beds run, {operation.replace('_', ' ')}"
                + (", idempotency key (client default)" if keyed else ""),
                operation=operation,
                server="beds",
                load={"target": "beds", "params": {"url": url, "operation": operation}},
                note="Every write carries an idempotency key (BedsClient's default), so the "
                "store runs three calls in one transaction (REL: claim, create, complete) or "
                "three operations (REC), where the pipeline runs one."
                if keyed
                else "",
            )
        )
        if keyed:
            out.append(
                Scenario(
                    key=f"beds_{operation}_unkeyed",
                    group="beds",
                    label=f"BedsClient → beds run, {operation.replace('_', ' ')}, "
                    "no idempotency key (like the pipeline)",
                    operation=operation,
                    server="beds",
                    load={
                        "target": "beds",
                        "params": {"url": url, "operation": operation, "idempotent_writes": False},
                    },
                    note="`BedsClient(idempotent_writes=False)`: the same single store call as "
                    "the pipeline, so this is the like-for-like comparison."
                    if operation.startswith("rel")
                    else "`BedsClient(idempotent_writes=False)`. `spew_profile` is audited: each "
                    "create also reads the record back and publishes a confirmed audit record.",
                )
            )
    out.append(
        Scenario(
            key="beds_rel_fetch_anonymous",
            group="beds",
            label="BedsClient → beds run, rel fetch, anonymous (no token)",
            operation="rel_fetch",
            server="beds",
            load={
                "target": "beds",
                "params": {"url": url, "operation": "rel_fetch", "anonymous": True},
            },
            note="Every other BEDS scenario sends a session token, verified on each request "
            "(EdDSA signature, cached per token, and the revocation check): the ratio of "
            "`beds_rel_fetch` to this one is the cost of authentication (goal >= 0.9).",
        )
    )
    out.append(
        Scenario(
            key="beds_rec_create_unaudited",
            group="beds",
            label="BedsClient → beds run, rec create, no idempotency key, audit off "
            "(like the pipeline)",
            operation="rec_create",
            server="beds-no-audit",
            load={
                "target": "beds",
                "params": {"url": url, "operation": "rec_create", "idempotent_writes": False},
            },
            note="The example domain with `spew_profile`'s `audit = false` (a copy on the node's "
            "PYTHONPATH): one insert per create, as in the pipeline.",
        )
    )
    for operation in ("ping", "rel_fetch"):
        out.append(
            Scenario(
                key=f"beds_{operation}_uvloop",
                group="diagnostic",
                label=f"BEDS {operation.replace('_', ' ')}, node and client on uvloop",
                operation=operation,
                server="beds-uvloop",
                load={"target": "beds", "params": {"url": url, "operation": operation}},
                uvloop=True,
                note="`beds run` as it starts by default when uvloop is installed "
                "(`pip install 'beds-core[uvloop]'`).",
            )
        )
    for operation in ("ping", "rel_fetch"):
        out.append(
            Scenario(
                key=f"beds_{operation}_nolineage",
                group="diagnostic",
                label=f"BEDS {operation.replace('_', ' ')}, lineage off",
                operation=operation,
                server="beds-no-lineage",
                load={"target": "beds", "params": {"url": url, "operation": operation}},
                note="`[lineage] enabled = false`: no request or database events; against the "
                "same scenario with lineage on (the default), it prices event lineage.",
            )
        )
    for operation in ("ping", "rel_fetch"):
        what = operation.replace("_", " ")
        for uvloop in (False, True):
            loop = "_uvloop" if uvloop else ""
            on_uvloop = ", node and client on uvloop" if uvloop else ""
            # The URL (and CA) of the spare RabbitMQ node are added when it has started.
            load = {"target": "beds", "params": {"operation": operation}}
            out.append(
                Scenario(
                    key=f"beds_{operation}_tls{loop}",
                    group="tls",
                    label=f"BedsClient → beds run, {what}, over TLS (amqps; MariaDB over TLS)"
                    + on_uvloop,
                    operation=operation,
                    server="beds-tls",
                    load=load,
                    uvloop=uvloop,
                    note=f"`beds_{operation}_spare{loop}` with TLS on the client's and the "
                    "node's RabbitMQ connections and on the node's MariaDB connections, to the "
                    "same spare servers (a RabbitMQ node and a mariadbd started for the run, "
                    "certificates made per run). The ratio to it is the cost of TLS alone "
                    "(goal >= 0.85)."
                    + (
                        " On uvloop, both hops' TLS runs in uvloop's SSL transport."
                        if uvloop
                        else ""
                    ),
                )
            )
            out.append(
                Scenario(
                    key=f"beds_{operation}_spare{loop}",
                    group="tls",
                    label=f"BedsClient → beds run, {what}, plaintext to the TLS scenario's servers"
                    + on_uvloop,
                    operation=operation,
                    server="beds-spare",
                    load=load,
                    uvloop=uvloop,
                    note="The node config of `beds_*_tls` without TLS (`amqp://` to the spare "
                    "RabbitMQ node's plaintext listener, no `[stores.rel.tls]`): the TLS "
                    "scenario's denominator. Against `beds_"
                    + operation
                    + "` it shows what the spare servers (a fresh node with no plugins, a fresh "
                    "datadir with default settings) differ in from the machine's.",
                )
            )
    raw_ping = {
        "url": url,
        "exchange": "beds.events",
        "routing_key": "beds.read",
        "operation": "ping",
        "encoding": "beds_ping",
        "check": "ok",
    }
    out.append(
        Scenario(
            key="beds_ping_raw",
            group="diagnostic",
            label="BEDS ping, minimal aiormq client",
            operation="ping",
            server="beds",
            load={"target": "amqp", "params": raw_ping},
            note="The node alone: the same client as the unbatched AMQP ceiling (aiormq's "
            "default publisher confirms on requests, no mandatory flag, envelope encoded once).",
        )
    )
    out.append(
        Scenario(
            key="beds_ping_raw_batched",
            group="diagnostic",
            label="BEDS ping, minimal aiormq client, batched",
            operation="ping",
            server="beds",
            load={"target": "amqp", "params": {**raw_ping, "batched": True}},
            note="The node alone, driven by the batched AMQP ceiling's client (no confirms, one "
            "write per loop turn): against `amqp_echo_batched` it tells the node's share from "
            "the client's.",
        )
    )
    # Many records a message (issue 19): records_per_s at 1, 4 and 16 messages in flight.
    for operation, what in (
        ("rel_create_many", "rel create_many (spew_post)"),
        ("rel_fetch_many", "rel fetch_many (spew_post)"),
        ("rec_create_many", "rec create_many (spew_profile, audited)"),
    ):
        out.append(
            Scenario(
                key=f"beds_{operation}",
                group="beds",
                label=f"BedsClient → beds run, {what}, {BATCH_RECORDS} a message, keyed",
                operation=operation,
                server="beds",
                load={
                    "module": "benchmarks.batch_load",
                    "target": "beds_batch",
                    "params": {"url": url, "operation": operation, "records": BATCH_RECORDS},
                    "per_call": {"unit": "records", "n": BATCH_RECORDS},
                    "ready_call_seconds": 30.0,
                },
                note="One message carries the records (keys); req/s is messages/s. Publisher "
                "confirms, an idempotency key a message, per-item results checked.",
                extra={"concurrencies": BATCH_CONCURRENCIES, "per_message": BATCH_RECORDS},
            )
        )
    for operation, what in (
        ("rel_create_many", f"CALL spp_create_many with {BATCH_RECORDS} posts"),
        ("rel_fetch_many", f"one SELECT ... IN of {BATCH_RECORDS} post ids"),
    ):
        out.append(
            Scenario(
                key=f"db_{operation}",
                group="db",
                label=f"asyncmy {operation.replace('_', ' ')}: {what}, "
                f"{BATCH_DB_CONNECTIONS} connections",
                operation=operation,
                server="none",
                load={
                    "module": "benchmarks.batch_load",
                    "target": "store_batch",
                    "params": {
                        "operation": operation,
                        "mysql_url": res.mysql_url,
                        "records": BATCH_RECORDS,
                        "pool": BATCH_DB_CONNECTIONS,
                    },
                    "per_call": {"unit": "records", "n": BATCH_RECORDS},
                },
                note=f"The MariaDB-only ceiling of `beds_{operation}`: the same records a call, "
                "no BEDS and no broker (`benchmarks/batch_load.py`, `store_batch`).",
                extra={"concurrencies": BATCH_CONCURRENCIES, "per_message": BATCH_RECORDS},
            )
        )
    out.append(
        Scenario(
            key="beds_fanout",
            group="beds",
            label=f"BedsClient → beds run, fan-out: one page = {FANOUT_CALLS} concurrent calls",
            operation="fanout",
            server="beds",
            load={
                "module": "benchmarks.fanout_load",
                "target": "beds_fanout",
                "params": {"url": url},
                "per_call": {"unit": "calls", "n": FANOUT_CALLS},
            },
            note="One transaction: a SPEW home page's fetches sent at once under one lineage "
            "parent; its latency (p50/p99) is the page's.",
            extra={"concurrencies": (1, 16), "per_message": FANOUT_CALLS},
        )
    )
    peer_args = ("--prefetch", str(layout.peer_prefetch), "--pool", str(layout.rel_pool))
    for operation, queue in (("echo", "bench.fs.echo"), ("rel_fetch", "bench.fs.rel_fetch")):
        out.append(
            Scenario(
                key=f"faststream_{operation}",
                group="peer",
                label=f"FastStream, {operation.replace('_', ' ')}",
                operation=operation,
                server="faststream",
                server_args=("--mysql-url", res.mysql_url, *peer_args),
                load={
                    "target": "amqp",
                    "params": {
                        "url": url,
                        "routing_key": queue,
                        "operation": operation,
                        "check": "json" if operation == "echo" else "ok",
                    },
                },
                note="Driven by the minimal aiormq client (FastStream's own client is below).",
            )
        )
    out.append(
        Scenario(
            key="faststream_echo_native",
            group="diagnostic",
            label="FastStream echo, its own client (broker.request)",
            operation="echo",
            server="faststream",
            server_args=("--mysql-url", res.mysql_url, *peer_args),
            load={
                "target": "faststream",
                "params": {"url": url, "routing_key": "bench.fs.echo", "operation": "echo"},
            },
            note="FastStream's RabbitBroker.request holds a lock around each call: one request "
            "in flight per client, whatever the caller's concurrency.",
        )
    )
    for operation in ("echo", "rel_fetch"):
        out.append(
            Scenario(
                key=f"nameko_{operation}",
                group="peer",
                label=f"Nameko RPC, {operation.replace('_', ' ')}",
                operation=operation,
                server="nameko",
                load={
                    "target": "amqp",
                    "params": {
                        "url": url,
                        "exchange": "nameko-rpc",
                        "reply_exchange": "nameko-rpc",
                        "routing_key": f"bench.{operation}",
                        "operation": operation,
                        "encoding": "nameko",
                        "check": "nameko",
                    },
                },
                note="Driven by the minimal aiormq client speaking Nameko's RPC protocol.",
            )
        )
    return out


def server_env(scenario: Scenario, res: Resources) -> dict[str, str]:
    """What a server side's environment adds: the event loop of a ``beds run`` node, and the
    unaudited copy of the example domain for ``beds-no-audit``."""
    if not scenario.server.startswith("beds"):
        return {}
    uvloop = scenario.server == "beds-uvloop" or scenario.uvloop
    env = {"BEDS_EVENT_LOOP": "uvloop" if uvloop else "asyncio"}
    if scenario.server == "beds-no-audit":
        env["PYTHONPATH"] = os.pathsep.join((str(res.without_audit), str(ROOT)))
    return env


def server_argv(scenario: Scenario, res: Resources, layout: Layout) -> list[str] | None:
    """The server side's command, or None when the scenario has none (database ceiling)."""
    if scenario.server == "none":
        return None
    if scenario.server == "amqp":
        return [
            PYTHON,
            "-m",
            "benchmarks.servers.amqp_echo",
            "--url",
            res.amqp_url,
            *scenario.server_args,
        ]
    if scenario.server in ("beds", "beds-uvloop", "beds-no-audit"):
        return [PYTHON, "-m", "beds", "run", "--config", str(res.config)]
    if scenario.server == "beds-no-lineage":
        return [PYTHON, "-m", "beds", "run", "--config", str(res.config_without_lineage)]
    from benchmarks.tls import CONFIGS

    if scenario.server in CONFIGS:
        return [PYTHON, "-m", "beds", "run", "--config", str(res.tmp / CONFIGS[scenario.server])]
    if scenario.server == "faststream":
        return [
            PYTHON,
            "-m",
            "benchmarks.servers.faststream_app",
            "--url",
            res.amqp_url,
            *scenario.server_args,
        ]
    if scenario.server == "nameko":
        config = res.tmp / "nameko.yaml"
        # JSON is YAML: no YAML writer needed.
        import json

        config.write_text(
            json.dumps(
                {
                    "AMQP_URI": res.amqp_url,
                    "max_workers": layout.peer_prefetch,
                    "BENCH_MYSQL_URL": res.mysql_url,
                    "BENCH_POOL": layout.rel_pool,
                }
            ),
            encoding="utf-8",
        )
        return [
            PYTHON,
            "-m",
            "nameko",
            "run",
            "--config",
            str(config),
            "benchmarks.servers.nameko_service",
        ]
    raise ValueError(f"unknown server kind {scenario.server!r}")
