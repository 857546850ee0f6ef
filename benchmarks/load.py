"""The load generator: a client process that keeps N requests in flight and times each one.

``python -m benchmarks.load SPEC_JSON`` runs one scenario's points and prints one JSON line with
every run. SPEC keys: ``target`` (``amqp``, ``beds``, ``store``, ``faststream``), ``params``
(the target's), ``points`` (``[{"concurrency": 16, "count": 4000, "seconds": 10}]``),
``repeats``, ``warmup`` (requests before the first measured run), ``uvloop``, ``watch``
(``{"server": pid, "rabbitmq": pid}``: processes whose CPU time each run also accounts for),
``per_call`` (``{"unit": "records", "n": 500}``: what one call carries, so that each run also
reports ``records_per_s``, the calls per second times ``n``), ``ready_call_seconds`` (how long
one call may take while waiting for the server side, 2 s).

Each run starts ``concurrency`` tasks that loop until ``count`` requests were issued or
``seconds`` passed; a request's latency runs from just before it is sent to its checked reply.
A request that fails, times out or gets a wrong reply counts as an error and its latency is not
recorded. Throughput is completed requests over the run's wall time. Repeats are interleaved
(every concurrency once, then again) so slow drift does not favour one point.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import orjson

from benchmarks.batching import TurnWriter
from benchmarks.work import ECHO_BODY, Store, make_args, run

Call = Callable[[], Awaitable[None]]
CALL_TIMEOUT = 10.0


class BadReply(Exception):
    """The reply arrived but is not the right answer."""


class AmqpRpc:
    """A minimal aiormq RPC client: one connection, one channel, direct reply-to (or a queue).

    By default it uses aiormq as it comes: the channel has publisher confirms (aiormq's
    default), so every call waits for RabbitMQ's confirm of its request as well as for the
    reply, and every publish is its own socket write. ``batched=True`` opens the channel without
    publisher confirms and writes the requests of one loop turn as one chunk
    (:mod:`benchmarks.batching`), so that the client is not what limits a batched ceiling.

    ``confirmed=True`` publishes as ``BedsClient`` does: with publisher confirms (also when
    batched: the requests of a turn are written as one chunk and each call waits for its
    confirm) and ``mandatory`` (a request no queue takes fails its call, found by its
    ``message_id``); each call waits for both the confirm and the reply. ``persistent=True``
    also marks each request persistent (``delivery_mode`` 2), which ``BedsClient`` does not.
    """

    def __init__(
        self,
        url: str,
        *,
        reply_exchange: str = "",
        batched: bool = False,
        confirmed: bool = False,
        persistent: bool = False,
    ) -> None:
        self.url = url
        self.reply_exchange = reply_exchange
        self.batched = batched
        self.confirmed = confirmed
        self.persistent = persistent
        self.reply_to = "amq.rabbitmq.reply-to"
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        self._ids = itertools.count()
        self._connection: Any = None
        self._channel: Any = None
        self._writer: TurnWriter | None = None

    async def open(self) -> None:
        import aiormq

        self._connection = await aiormq.connect(self.url)
        self._channel = channel = await self._connection.channel(
            publisher_confirms=self.confirmed or not self.batched
        )
        if self.reply_exchange:
            # Nameko replies through its own exchange, keyed by the reply_to it was given.
            await channel.exchange_declare(self.reply_exchange, exchange_type="topic", durable=True)
            declared = await channel.queue_declare("", exclusive=True, auto_delete=True)
            self.reply_to = declared.queue
            await channel.queue_bind(self.reply_to, self.reply_exchange, routing_key=self.reply_to)
        await channel.basic_consume(self.reply_to, self._on_reply, no_ack=True)
        if self.batched:
            self._writer = TurnWriter(channel)

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()
        if self._connection is not None:
            await self._connection.close()

    async def _on_reply(self, message: Any) -> None:
        future = self._waiting.pop(message.header.properties.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message.body)

    async def call(self, body: bytes, exchange: str, routing_key: str) -> bytes:
        from pamqp.commands import Basic

        correlation_id = str(next(self._ids))
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = future
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                if self._writer is not None and self.confirmed:
                    confirmation = self._writer.publish_confirmed(
                        body,
                        exchange=exchange,
                        routing_key=routing_key,
                        correlation_id=correlation_id,
                        reply_to=self.reply_to,
                        persistent=self.persistent,
                    )
                    await confirmation
                    return await future
                if self._writer is not None:
                    self._writer.publish(
                        body,
                        exchange=exchange,
                        routing_key=routing_key,
                        correlation_id=correlation_id,
                        reply_to=self.reply_to,
                    )
                    return await future
                confirmed = self.confirmed
                await self._channel.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    mandatory=confirmed,
                    properties=Basic.Properties(
                        correlation_id=correlation_id,
                        reply_to=self.reply_to,
                        content_type="application/json",
                        delivery_mode=2 if self.persistent else None,
                        message_id=correlation_id if confirmed else None,
                    ),
                )
                return await future
        finally:
            self._waiting.pop(correlation_id, None)


def _check(kind: str, sent: bytes, reply: bytes) -> None:
    if kind == "bytes":
        if reply != sent:
            raise BadReply("the echo differs from the request")
        return
    value = orjson.loads(reply)
    if kind == "json":
        if value != orjson.loads(sent):
            raise BadReply("the echo differs from the request")
    elif kind == "ok":
        if not value.get("ok"):
            raise BadReply(str(value.get("error"))[:300])
    elif kind == "nameko":
        if value.get("error") is not None:
            raise BadReply(str(value["error"])[:300])
    else:
        raise ValueError(f"unknown check {kind!r}")


def _body(encoding: str, operation: str, rng: random.Random) -> bytes:
    if encoding == "raw":
        return ECHO_BODY if operation == "echo" else orjson.dumps(make_args(operation, rng))
    if encoding == "nameko":
        return orjson.dumps({"args": [make_args(operation, rng)], "kwargs": {}})
    if encoding == "beds_ping":
        from beds.codec import encode_request
        from beds.envelopes import Operation, Request, RequestMeta
        from beds.lineage import new_event_id

        return encode_request(
            Request(
                operation=Operation.PING,
                template="beds",
                payload={},
                meta=RequestMeta(event_id=new_event_id("bench", "bench"), origin="bench"),
            )
        )
    raise ValueError(f"unknown encoding {encoding!r}")


async def amqp_target(stack: AsyncExitStack, params: dict[str, Any]) -> Call:
    client = AmqpRpc(
        params["url"],
        reply_exchange=params.get("reply_exchange", ""),
        batched=params.get("batched", False),
        confirmed=params.get("confirmed", False),
        persistent=params.get("persistent", False),
    )
    await client.open()
    stack.push_async_callback(client.close)
    rng = random.Random(1)
    operation = params["operation"]
    encoding = params.get("encoding", "raw")
    check = params.get("check", "bytes")
    exchange, routing_key = params.get("exchange", ""), params["routing_key"]
    fixed = _body(encoding, operation, rng) if operation in ("echo", "ping") else None

    async def call() -> None:
        body = fixed if fixed is not None else _body(encoding, operation, rng)
        _check(check, body, await client.call(body, exchange, routing_key))

    return call


async def beds_target(stack: AsyncExitStack, params: dict[str, Any]) -> Call:
    from beds.client import BedsClient
    from beds.testing import TestIdentity

    # Logged in, as an application's users are (the example's writes are for members): an
    # admin member, so generated posts may name any author. ``anonymous`` measures the cost.
    token = (
        None
        if params.get("anonymous")
        else TestIdentity.development("bench").token("bench", ("member", "admin"))
    )
    ssl_context = None
    if params.get("ca_file"):  # an amqps:// URL (the TLS scenarios)
        from beds.config.model import AmqpTlsSettings
        from beds.transport.tls import client_context

        ssl_context = client_context(AmqpTlsSettings(ca_file=params["ca_file"]), key="amqp.tls")
    client = BedsClient(
        params["url"],
        origin="bench",
        env="bench",
        timeout=CALL_TIMEOUT,
        idempotent_writes=params.get("idempotent_writes", True),
        token=token,
        ssl_context=ssl_context,
    )
    await client.connect()
    stack.push_async_callback(client.close)
    rng = random.Random(1)
    operation = params["operation"]

    async def call() -> None:
        args = make_args(operation, rng)
        if operation == "ping":
            response = await client.ping()
            if not response.ok:
                raise BadReply(str(response.error))
        elif operation == "rel_fetch":
            if len(await client.fetch("spew_post", "by_id", args)) != 1:
                raise BadReply("spew_post by_id did not return one record")
        elif operation == "rel_create":
            await client.create("spew_post", args)
        elif operation == "rec_fetch":
            # From the database, like the pipeline it is compared with: spew_profile caches
            # fetches since 2026-12-04 (the cache has its own scenarios, benchmarks/reads.py).
            payload = {"query": "by_handle", "params": args, "consistency": "primary"}
            reply = await client.call("spew_profile", "fetch", payload)
            if not reply.ok or len(reply.data or []) != 1:
                raise BadReply("spew_profile by_handle did not return one record")
        elif operation == "rec_create":
            await client.create("spew_profile", args)
        else:
            raise ValueError(f"BEDS has no benchmark operation {operation!r}")

    return call


async def store_target(stack: AsyncExitStack, params: dict[str, Any]) -> Call:
    store = Store(
        params["operation"],
        mysql_url=params.get("mysql_url", ""),
        mongo_uri=params.get("mongo_uri", ""),
        mongo_db=params.get("mongo_db", ""),
        pool=params.get("pool", 16),
    )
    await store.open()
    stack.push_async_callback(store.close)
    rng = random.Random(1)

    async def call() -> None:
        async with asyncio.timeout(CALL_TIMEOUT):
            await store(make_args(store.operation, rng))

    return call


async def faststream_target(stack: AsyncExitStack, params: dict[str, Any]) -> Call:
    """FastStream's own RPC client (``RabbitBroker.request``)."""
    from faststream.rabbit import RabbitBroker

    broker = RabbitBroker(params["url"], logger=None)
    await broker.connect()
    stack.push_async_callback(broker.stop)
    rng = random.Random(1)
    operation, queue = params["operation"], params["routing_key"]

    async def call() -> None:
        body = _body("raw", operation, rng)
        reply = await broker.request(body, queue, timeout=CALL_TIMEOUT)
        _check("json" if operation == "echo" else "ok", body, reply.body)

    return call


TARGETS = {
    "amqp": amqp_target,
    "beds": beds_target,
    "store": store_target,
    "faststream": faststream_target,
}


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) used so far by this process and each watched one."""
    used = {"client": time.process_time()}
    for role, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone, or not on Linux: left out rather than guessed
        used[role] = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
    return used


async def drive(
    call: Call,
    concurrency: int,
    count: int,
    seconds: float,
    watch: dict[str, int] | None = None,
    per_call: dict[str, Any] | None = None,
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    issued = 0
    sample = ""
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal issued, errors, sample
        while issued < count and time.perf_counter() < deadline:
            issued += 1
            started = time.perf_counter()
            try:
                await call()
            except Exception as exc:
                errors += 1
                sample = sample or f"{type(exc).__name__}: {exc}"[:300]
                continue
            latencies.append(time.perf_counter() - started)

    cpu_before = cpu_seconds(watch or {})
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu_after = cpu_seconds(watch or {})
    latencies.sort()
    done = max(1, len(latencies))
    rps = round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0
    carried: dict[str, Any] = {}
    if per_call:
        # A call that carries many items (a batch of records, a fan-out of BEDS calls).
        carried = {
            "per_call": int(per_call["n"]),
            f"{per_call['unit']}_per_s": round(rps * int(per_call["n"]), 1),
        }
    return {
        # CPU microseconds per completed request, by process (client, server, rabbitmq, ...).
        "cpu_us": {
            role: round((cpu_after[role] - cpu_before[role]) * 1e6 / done, 1)
            for role in cpu_after
            if role in cpu_before
        },
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 4),
        "rps": rps,
        **carried,
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
        "error_sample": sample,
    }


async def wait_ready(call: Call, seconds: float, call_seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    last = ""
    while time.monotonic() < deadline:
        try:
            async with asyncio.timeout(call_seconds):
                await call()
            return
        except Exception as exc:
            last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.2)
    raise SystemExit(f"the server side did not answer within {seconds:g} s ({last})")


async def main_async(spec: dict[str, Any]) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        call = await TARGETS[spec["target"]](stack, spec["params"])
        await wait_ready(call, spec.get("ready_seconds", 60), spec.get("ready_call_seconds", 2.0))
        if spec.get("warmup", 0):
            await drive(call, 16, spec["warmup"], 30)
        runs = []
        for repeat in range(spec.get("repeats", 1)):
            for point in spec["points"]:
                result = await drive(
                    call,
                    point["concurrency"],
                    point["count"],
                    point["seconds"],
                    spec.get("watch"),
                    spec.get("per_call"),
                )
                result["repeat"] = repeat
                unit = spec.get("per_call", {}).get("unit")
                print(
                    f"    c={result['concurrency']:<4} rep {repeat}: {result['rps']:>8.1f} req/s"
                    + (f" ({result[unit + '_per_s']:,.0f} {unit}/s)" if unit else "")
                    + f"  p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms"
                    f"  errors {result['errors']}",
                    file=sys.stderr,
                    flush=True,
                )
                runs.append(result)
        return {"runs": runs}


def main() -> None:
    spec = orjson.loads(sys.argv[1])
    result = run(main_async(spec), use_uvloop=bool(spec.get("uvloop")))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
