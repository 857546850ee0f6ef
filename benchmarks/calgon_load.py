"""The load generator's CALGON target: submits, and tickets from submit to succeeded.

``python -m benchmarks.calgon_load SPEC_JSON`` is ``python -m benchmarks.load`` (same spec,
same runs, same output) with one more target, ``beds_calgon``, whose ``params`` are ``url`` (the
run's AMQP URL), ``mysql_url`` (the run's database) and ``mode``:

- ``submit``: each call submits ``spew_stats daily`` and checks the ticket returned (``queued``,
  its params with the defaults applied). The node runs no workers, so the tickets stay queued;
  when the runs end the target deletes them, as the DBA, so no later scenario's workers find
  them.
- ``tickets``: each call submits the same, reads the ticket every ``POLL`` seconds until it
  finished, and checks it succeeded with the author's posts counted (one record). When the
  runs end it prints how long the workers took per ticket (``started_at`` → ``finished_at``).

See :mod:`benchmarks.calgon`.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import TYPE_CHECKING, Any, Final

from benchmarks import load
from benchmarks.calgon import AUTHOR, AUTHOR_POSTS, DAYS, OPERATION, POLL, TEMPLATE
from benchmarks.load import CALL_TIMEOUT, BadReply, Call
from benchmarks.work import mysql_kwargs

if TYPE_CHECKING:
    from contextlib import AsyncExitStack

MODES: Final = ("submit", "tickets")
PARAMS: Final = {"days": DAYS, "author": AUTHOR}


def _delete_queued(mysql_url: str) -> None:
    """Delete the tickets the submit runs left queued (they never ran: no results to delete)."""
    import pymysql

    conn = pymysql.connect(**mysql_kwargs(mysql_url))
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "DELETE FROM `beds_tickets` WHERE `state` = 'queued' AND `template` = %s",
                (TEMPLATE,),
            )
    finally:
        conn.close()


async def beds_calgon_target(stack: AsyncExitStack, params: dict[str, Any]) -> Call:
    """The ``beds_calgon`` target: a logged-in ``BedsClient`` and the call of ``params["mode"]``."""
    from beds.client import BedsClient
    from beds.testing import TestIdentity

    mode = params["mode"]
    if mode not in MODES:
        raise ValueError(f"no mode {mode!r}: one of {', '.join(MODES)}")
    token = TestIdentity.development("bench").token("bench", ("member",))
    client = BedsClient(
        params["url"], origin="bench", env="bench", timeout=CALL_TIMEOUT, token=token
    )
    await client.connect()
    stack.push_async_callback(client.close)

    async def submit() -> None:
        handle = await client.submit(TEMPLATE, OPERATION, PARAMS)
        if handle.state != "queued" or handle.ticket["params"] != PARAMS:
            raise BadReply(f"a submit answered {handle.ticket}")

    ran: list[float] = []

    async def ticket() -> None:
        handle = await client.submit(TEMPLATE, OPERATION, PARAMS)
        records = await handle.result(poll=POLL, timeout=CALL_TIMEOUT)
        if [record["posts"] for record in records] != [AUTHOR_POSTS]:
            raise BadReply(f"ticket {handle.id} counted {records}")
        ran.append(_seconds(handle.ticket["finished_at"]) - _seconds(handle.ticket["started_at"]))

    if mode == "submit":
        stack.callback(_delete_queued, params["mysql_url"])
        return submit
    stack.callback(_report_runs, ran)
    return ticket


def _seconds(moment: str) -> float:
    """A ticket's ISO 8601 time as Unix seconds."""
    return dt.datetime.fromisoformat(moment).timestamp()


def _report_runs(ran: list[float]) -> None:
    """How long the workers took per ticket (started → finished, the steps alone), over every
    ticket of the scenario: what the client's latency holds besides waiting and polling."""
    if not ran:
        return
    ran.sort()
    median, p99 = (load.percentile(ran, q) * 1000 for q in (0.5, 0.99))
    print(
        f"    {len(ran):,} tickets ran (started → finished) in {median:.1f} ms (median), "
        f"{p99:.1f} ms (p99)",
        file=sys.stderr,
    )


def main() -> None:
    load.TARGETS["beds_calgon"] = beds_calgon_target
    load.main()


if __name__ == "__main__":
    main()
