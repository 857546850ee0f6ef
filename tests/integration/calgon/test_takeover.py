"""A node running a ticket dies or stops: another node finishes the ticket, never twice a step.

The tests' ``slow_count`` template (served through a plugin on the nodes' ``PYTHONPATH``) runs
six steps of a second each (``DO SLEEP`` in the DBA's procedure ``slw_count``), each answering
three records that name their step. With ``calgon.lease_seconds = 2``:

- SIGKILL of the node running it once two steps are done: the next node claims it when the
  lease lapsed and resumes it; it succeeds on its second attempt with every step's records
  exactly once;
- every node that claims it is SIGKILLed, up to ``calgon.max_attempts = 2``: the next claim
  fails it with ``BEDS-500A`` (never stuck ``running``);
- SIGTERM of the node running it (of two nodes, with a 30 s lease): it gives the ticket back as
  it stops, and the other node resumes it at once, long before the lease would have lapsed.

Each runs with the tickets in MariaDB (``calgon.store = "rel"``) and in MongoDB (``"rec"``).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from beds.errors import TicketAbandoned
from beds.testing import unique_name
from tests.integration.calgon.helpers import (
    SLOW_OPERATION,
    SLOW_PROCEDURE,
    SLOW_STEPS,
    SLOW_TEMPLATE,
    calgon_settings,
    dba_rows,
    lease_owner,
    wait_logged,
    wait_ticket,
)
from tests.integration.nodes import (
    Served,
    StartServed,
    Stores,
    client_of,
    wait_exit,
    wait_ready,
)

if TYPE_CHECKING:
    from tests.helpers import Figures

pytestmark = [pytest.mark.mariadb, pytest.mark.mongodb]

EVERY_ROW = Counter({(step, n): 1 for step in range(SLOW_STEPS) for n in (1, 2, 3)})
READY = "IPL brokers: ok"
"""Logged by a node once its brokers consume; its ticket workers start right after."""


def rows_of(records: list[dict[str, Any]]) -> Counter[tuple[int, int]]:
    return Counter((record["step"], record["n"]) for record in records)


def running(attempt: int) -> Callable[[dict[str, Any]], bool]:
    """Whether a ticket runs as its ``attempt``-th claim."""
    return lambda ticket: ticket["state"] == "running" and ticket["attempts"] == attempt


def kill(served: Served) -> None:
    served.process.send_signal(signal.SIGKILL)
    assert served.process.wait(timeout=10) == -signal.SIGKILL


@pytest.fixture
async def slow_stores(stores: Stores) -> Stores:
    """The test's databases with the DBA's ``slw_count`` procedure."""
    await dba_rows(stores, SLOW_PROCEDURE)
    return stores


@pytest.mark.parametrize("store", ["rel", "rec"])
async def test_a_ticket_whose_node_is_killed_is_resumed_by_the_next_node(
    store: str,
    amqp_url: str,
    slow_stores: Stores,
    start_served: StartServed,
    slow_plugin: dict[str, str],
    figures: Figures,
) -> None:
    env, settings = unique_name("calgon"), calgon_settings(store)
    first = start_served(env=env, name="n1", extra=settings, environ=slow_plugin)
    async with client_of(first, amqp_url, timeout=10) as client:
        await wait_ready(first, client)
        handle = await client.submit(SLOW_TEMPLATE, SLOW_OPERATION, {})
        before = await wait_ticket(handle, lambda t: t["steps_done"] >= 2, "two steps done")
        assert (before["state"], before["attempts"]) == ("running", 1)
        kill(first)
        killed_at = time.monotonic()

        second = start_served(env=env, name="n2", extra=settings, environ=slow_plugin)
        await wait_ready(second, client)
        resumed = await wait_ticket(handle, lambda t: t["attempts"] == 2, "the takeover")
        resumed_after = time.monotonic() - killed_at
        assert resumed["steps_done"] >= before["steps_done"], "a saved step is never lost"
        progress: list[float] = []
        records = await handle.result(
            poll=0.1, timeout=60, on_progress=lambda share, _: progress.append(share)
        )

    done = handle.ticket
    figures(
        {
            "store": store,
            "steps_done_at_kill": before["steps_done"],
            "steps_done_at_takeover": resumed["steps_done"],
            "resumed_after_s": round(resumed_after, 2),
        }
    )
    assert (done["state"], done["attempts"], done["steps_done"], done["progress"]) == (
        "succeeded",
        2,
        SLOW_STEPS,
        1.0,
    )
    assert rows_of(records) == EVERY_ROW, "each step's records exactly once"
    assert [r["step"] for r in records] == sorted(r["step"] for r in records), "in step order"
    assert progress == sorted(set(progress)), f"progress must strictly increase: {progress}"
    assert await lease_owner(slow_stores, store, handle.id) in ("", "n2")


@pytest.mark.parametrize("store", ["rel", "rec"])
async def test_a_ticket_whose_nodes_keep_dying_fails_after_max_attempts(
    store: str,
    amqp_url: str,
    slow_stores: Stores,
    start_served: StartServed,
    slow_plugin: dict[str, str],
) -> None:
    env, settings = unique_name("calgon"), calgon_settings(store, max_attempts=2)
    node = start_served(env=env, name="n1", extra=settings, environ=slow_plugin)
    async with client_of(node, amqp_url, timeout=10) as client:
        await wait_ready(node, client)
        handle = await client.submit(SLOW_TEMPLATE, SLOW_OPERATION, {})
        for attempt in (1, 2):
            held = await wait_ticket(handle, running(attempt), f"claim {attempt}")
            assert held["steps_done"] < SLOW_STEPS
            assert await lease_owner(slow_stores, store, handle.id) == f"n{attempt}"
            kill(node)
            node = start_served(
                env=env, name=f"n{attempt + 1}", extra=settings, environ=slow_plugin
            )
            await wait_ready(node, client)
        with pytest.raises(TicketAbandoned) as abandoned:
            await handle.result(poll=0.1, timeout=30)

    failed = handle.ticket
    assert (failed["state"], failed["attempts"]) == ("failed", 3)
    assert failed["steps_done"] < SLOW_STEPS
    assert failed["error"]["code"] == "BEDS-500A"
    assert failed["error"]["details"] == ["calgon.max_attempts: 2"]
    assert abandoned.value.details == ("calgon.max_attempts: 2",)


@pytest.mark.parametrize("store", ["rel", "rec"])
async def test_a_node_stopped_with_sigterm_gives_its_ticket_back_at_once(
    store: str,
    amqp_url: str,
    slow_stores: Stores,
    start_served: StartServed,
    slow_plugin: dict[str, str],
    figures: Figures,
) -> None:
    lease = 30.0
    env, settings = unique_name("calgon"), calgon_settings(store, lease_seconds=lease)
    nodes = {
        name: start_served(env=env, name=name, extra=settings, environ=slow_plugin)
        for name in ("n1", "n2")
    }
    for served in nodes.values():
        await wait_logged(served, READY)
    async with client_of(nodes["n1"], amqp_url, timeout=10) as client:
        await wait_ready(nodes["n1"], client)
        handle = await client.submit(SLOW_TEMPLATE, SLOW_OPERATION, {})
        before = await wait_ticket(handle, lambda t: t["steps_done"] >= 1, "a step done")
        holder = await lease_owner(slow_stores, store, handle.id)
        (survivor,) = set(nodes) - {holder}
        nodes[holder].process.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        exiting = asyncio.create_task(wait_exit(nodes[holder].process, 30))
        resumed = await wait_ticket(
            handle, lambda t: t["attempts"] == 2, "the takeover", seconds=lease / 2
        )
        resumed_after = time.monotonic() - stopped_at
        assert await lease_owner(slow_stores, store, handle.id) == survivor
        records = await handle.result(poll=0.1, timeout=60)
        exited_after = await exiting

    figures(
        {
            "store": store,
            "steps_done_at_sigterm": before["steps_done"],
            "resumed_after_s": round(resumed_after, 2),
            "stopped_node_exited_after_s": round(exited_after, 2),
        }
    )
    assert exited_after < 30, "the stopped node must exit"
    assert nodes[holder].process.returncode == 0, nodes[holder].output()
    assert resumed_after < lease / 3, "resumed at once, not when the lease lapsed"
    assert resumed["steps_done"] >= before["steps_done"]
    done = handle.ticket
    assert (done["state"], done["attempts"], done["steps_done"]) == ("succeeded", 2, SLOW_STEPS)
    assert rows_of(records) == EVERY_ROW, "each step's records exactly once"
