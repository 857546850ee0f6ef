"""Who reads a ticket, and the errors of submit and ticket, through a ``beds run`` node.

A ticket is its submitter's: another principal (not an admin) gets ``BEDS-404`` for it, through
``beds_ticket`` and through the ticket's template, the same reply as for an id no ticket has. A
template without long operations answers submit with ``BEDS-405``; a malformed ticket id, an
undeclared operation or a bad param is ``BEDS-422``, naming the problem.
"""

from __future__ import annotations

import uuid

import pytest

from beds.envelopes import Operation, Response
from beds.testing import TestIdentity, unique_name
from tests.integration.calgon.helpers import calgon_settings
from tests.integration.nodes import StartServed, client_of, wait_ready

pytestmark = [pytest.mark.mariadb, pytest.mark.mongodb]


def code_of(response: Response) -> str:
    assert response.error is not None, f"an error was expected: {response.data}"
    return response.error.code


async def test_tickets_are_their_submitters_and_bad_requests_are_refused(
    amqp_url: str, start_served: StartServed
) -> None:
    served = start_served(env=unique_name("calgon"), extra=calgon_settings())
    stranger = TestIdentity.development(served.env).token("mallory", ("member",))
    async with (
        client_of(served, amqp_url, timeout=10) as owner,
        client_of(served, amqp_url, timeout=10) as other,
    ):
        other.token = stranger
        await wait_ready(served, owner)
        handle = await owner.submit("spew_stats", "daily", {"days": 7})
        assert handle.ticket["params"] == {"days": 7, "author": None}  # defaults applied
        ticket = {"ticket": handle.id}

        mine = await owner.ticket(handle.id)
        assert mine.ok, mine.error
        theirs = await other.ticket(handle.id)
        through_template = await other.call("spew_stats", Operation.TICKET, ticket)
        unknown = await other.ticket(str(uuid.uuid4()))
        assert [code_of(r) for r in (theirs, through_template, unknown)] == ["BEDS-404"] * 3
        assert theirs.error is not None
        assert unknown.error is not None
        assert theirs.error.message == unknown.error.message, "nothing tells them apart"
        cancel = await other.ticket(handle.id, cancel=True)
        assert code_of(cancel) == "BEDS-404"

        for malformed in ("not-a-ticket", handle.id.upper(), handle.id[:-1]):
            refused = await owner.ticket(malformed)
            assert code_of(refused) == "BEDS-422"
            assert refused.error is not None
            assert refused.error.details == (
                "$.payload.ticket: must be a ticket id (a UUID from submit)",
            )

        no_long_operations = await owner.call(
            "spew_post", Operation.SUBMIT, {"operation": "daily", "params": {}}
        )
        assert code_of(no_long_operations) == "BEDS-405"
        undeclared = await owner.call(
            "spew_stats", Operation.SUBMIT, {"operation": "weekly", "params": {}}
        )
        assert code_of(undeclared) == "BEDS-422"
        assert undeclared.error is not None
        assert undeclared.error.details == ("$.payload.operation: must be one of daily",)
        bad = await owner.call(
            "spew_stats", Operation.SUBMIT, {"operation": "daily", "params": {"days": 0, "x": 1}}
        )
        assert code_of(bad) == "BEDS-422"
        assert bad.error is not None
        assert set(bad.error.details) == {
            "$.payload.params.days: must be at least 1",
            "$.payload.params.x: is not a param of daily",
        }
