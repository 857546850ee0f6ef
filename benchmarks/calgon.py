"""The CALGON scenarios: submitting a long operation, and tickets run from submit to the end.

- ``beds_calgon_submit``: the latency of ``submit`` until the ticket is returned (the node
  validated the params and recorded the ticket in MariaDB, ``calgon.store = "rel"``). Its node
  runs no ticket workers (``calgon.workers = 0``), so the figure is the submit path alone, not
  submits competing with the work they queue; the load generator deletes the queued tickets
  when its runs end, so no later scenario's workers find them.
- ``beds_calgon_tickets``: tickets per second from submit to ``succeeded``, each client task
  submitting one and reading it every ``POLL`` seconds until it finished (``TicketHandle.
  result``), then checking its result. The long operation is the example's ``spew_stats daily``
  for one author with ``AUTHOR_POSTS`` posts (4 steps, each a ``CALL sps_daily``), run by the
  node's ticket workers as configured by default (``calgon.workers = 2``).

Both nodes serve submits on ``mBroker`` with as many tasks and as much prefetch as the run's
``rBroker`` and ``wBroker`` (the seed has 2 tasks: submits are rare in production). On the
client side they run ``python -m benchmarks.calgon_load``. :func:`prepare` seeds the author's
posts when a CALGON scenario is selected (in the run's database, dropped with it).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Final

from benchmarks.scenarios import Scenario
from benchmarks.work import POST_TEXT, mysql_kwargs

if TYPE_CHECKING:
    from collections.abc import Iterable

    from benchmarks.resources import Resources
    from benchmarks.scenarios import Layout

AUTHOR: Final = "calgon_author"
"""The author whose posts ``spew_stats daily`` counts in the scenarios."""
AUTHOR_POSTS: Final = 5
"""Posts of ``AUTHOR``, seeded today (UTC): the result is one record, ``posts`` = this."""
DAYS: Final = 7
POLL: Final = 0.05
"""Seconds between two reads of a ticket while it runs (``TicketHandle.result(poll=…)``)."""
TEMPLATE: Final = "spew_stats"
OPERATION: Final = "daily"
LOAD_MODULE: Final = "benchmarks.calgon_load"


def build(res: Resources, layout: Layout) -> list[Scenario]:
    """The CALGON scenarios."""
    broker = "BEDS__ROLES__APPSERVER__BROKERS__MBROKER__"
    mbroker = {
        f"{broker}INSTANCES": str(layout.instances),
        f"{broker}PREFETCH": str(layout.beds_prefetch),
    }
    submit = f"`{TEMPLATE}` `{OPERATION}` {{days: {DAYS}, author: {AUTHOR!r}}}"

    def scenario(key: str, mode: str, label: str, note: str, env: dict[str, str]) -> Scenario:
        return Scenario(
            key=key,
            group="beds",
            label=f"BedsClient → beds run, {label}",
            operation=f"calgon_{mode}",
            server="beds",
            load={
                "module": LOAD_MODULE,
                "target": "beds_calgon",
                "params": {"url": res.amqp_url, "mode": mode, "mysql_url": res.mysql_url},
            },
            note=note,
            extra={"env": {**mbroker, **env}},
        )

    return [
        scenario(
            "beds_calgon_submit",
            "submit",
            "CALGON submit (ticket recorded, no workers)",
            f"{submit}: from the request to the ticket returned `queued` (recorded in "
            "`beds_tickets` through `beds_ticket_record`, with BedsClient's idempotency key). "
            "The node runs no ticket workers (`calgon.workers = 0`).",
            {"BEDS__CALGON__WORKERS": "0"},
        ),
        scenario(
            "beds_calgon_tickets",
            "tickets",
            f"CALGON ticket submit → succeeded (4 steps, poll {POLL:g} s)",
            f"{submit}: submit, then read the ticket every {POLL:g} s until it succeeded, and "
            f"check its result ({AUTHOR_POSTS} posts today). req/s is tickets finished per "
            "second; the latency includes up to one poll interval. Two ticket workers (the "
            "default `calgon.workers`).",
            {},
        ),
    ]


def selected(scenarios: Iterable[Scenario]) -> bool:
    """Whether a CALGON scenario is among ``scenarios``."""
    return any(scenario.load.get("module") == LOAD_MODULE for scenario in scenarios)


def prepare(res: Resources, scenarios: Iterable[Scenario]) -> None:
    """When a CALGON scenario is selected: seed ``AUTHOR``'s posts (after ``res.open()``)."""
    if not selected(scenarios):
        return
    import pymysql

    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    conn = pymysql.connect(**mysql_kwargs(res.mysql_url))
    try:
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO `spp_posts` (`author`, `body`, `created_at`) VALUES (%s, %s, %s)",
                [(AUTHOR, POST_TEXT, now) for _ in range(AUTHOR_POSTS)],
            )
    finally:
        conn.close()
