"""The journal's arguments and entries (no database): canonical keys, cursors, JSON-safe rows."""

from __future__ import annotations

import datetime as dt
import hashlib

from beds.auth.principal import Principal
from beds.envelopes import Operation
from beds.namaste import CallContext
from beds_rel import journal


def test_an_entry_is_appended_with_a_canonical_key_and_who_wrote() -> None:
    ctx = CallContext(
        event_id="n1.dev.e1",
        identity=Principal(id="u1", handle="ann", roles=frozenset({"member"})),
        origin="beds-http",
    )
    args = journal.append_args(
        "spew_note", Operation.UPDATE, {"b": 2, "a": "x"}, {"id": 1}, {"id": 1, "v": 2}, ctx
    )
    canonical = '{"a":"x","b":2}'
    assert args == (
        "spew_note",
        "n1.dev.e1",
        hashlib.sha256(canonical.encode()).hexdigest(),
        canonical,
        "update",
        '{"id":1}',
        '{"id":1,"v":2}',
        "ann",
        "beds-http",
    )
    anonymous = journal.append_args("t", Operation.CREATE, {"a": 1}, None, {"a": 1}, ctx)
    assert anonymous[5] is None


def test_a_history_cursor_reads_after_its_instant_as_naive_utc() -> None:
    first, args = journal.read_args("t", {"id": 7}, 11, None)
    assert first == journal.READ.sql
    assert args[2:] == (11,)
    sql, args = journal.read_args("t", {"id": 7}, 11, ("2026-12-04T08:41:02.118734Z", "e9"))
    assert "(`at` > %s OR (`at` = %s AND `event_id` > %s))" in sql
    at = dt.datetime(2026, 12, 4, 8, 41, 2, 118734)  # naive: bound as UTC
    assert args == ("t", args[1], at, at, "e9", 11)
    assert args[1] == journal.read_args("t", {"id": 7}, 1, None)[1][1]  # same key, same hash


def test_an_entry_is_answered_json_safe() -> None:
    row = {
        "event_id": "e1",
        "operation": "create",
        "record_key": '{"id":1}',
        "before_json": None,
        "after_json": '{"id":1,"body":"hi"}',
        "principal": "ann",
        "origin": "",
        "at": dt.datetime(2026, 1, 2, 3, 4, 5, 6),  # DATETIME(6), UTC
    }
    assert journal.entry_of(row) == {
        "event_id": "e1",
        "operation": "create",
        "key": {"id": 1},
        "before": None,
        "after": {"id": 1, "body": "hi"},
        "principal": "ann",
        "origin": "",
        "at": "2026-01-02T03:04:05.000006Z",
    }
