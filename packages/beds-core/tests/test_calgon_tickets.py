"""The in-memory ticket store passes the ticket store contract (beds.testing.ticket_contract)."""

from __future__ import annotations

import pytest

from beds.testing.ticket_contract import TicketStoreContract
from beds.testing.tickets import MemoryTickets


class TestMemoryTickets(TicketStoreContract):
    @pytest.fixture
    def ticket_store(self) -> MemoryTickets:
        return MemoryTickets()
