"""Template capabilities on the real MariaDB: the contracts of beds-core's test_capabilities.py.

Locking (through the DBA's procedures and SQLSTATE 45409), the journal (written in the write's
transaction, read back with ``history``), keyset pagination and declared conditions on view
queries, through a dispatcher over a real :class:`RelAdapter`, as one node serves them. The
test template ``note`` (TLA ``tno``) has its own schema below; the example's ``spew_note`` is
run with its shipped schema. Each test writes with authors of its own on the session database
(dropped after the session), so tests neither clean up after each other nor depend on order.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncmy
import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beds.envelopes import Response
from beds.errors import TemplateError
from beds.namaste import CallContext, JournalStore, SchemaFile, StoreSettings
from beds.registry import TemplateRegistry
from beds.templates import Template, parse_template
from beds.testing import TestIdentity
from beds.testing.local import LocalNode
from beds_rel import RelAdapter
from beds_rel.bindings import plan_template

pytestmark = pytest.mark.mariadb

IDENTITY = TestIdentity(env="test")

NOTE = """
name = "note"
store = "rel"
tla = "tno"
key = ["id"]

[capabilities]
locking = true
journal = true

[fields.id]
type = "int"
generated = true
[fields.author]
type = "str"
max_length = 40
[fields.text]
type = "str"
max_length = 50
[fields.rank]
type = "int"
[fields.version]
type = "int"
generated = true
[fields.created_at]
type = "datetime"
generated = true

[operations.create]
params = ["author", "text", "rank"]
returns = ["id", "version"]
procedure = "tno_create"
[operations.update]
params = ["id", "version", "text", "rank"]
returns = ["id", "version"]
procedure = "tno_update"
[operations.delete]
params = ["id", "version"]
procedure = "tno_delete"

[queries.by_id]
params = ["id"]
max_limit = 1
view = "tno_notes_v"

[queries.by_author]
params = ["author"]
order_by = ["-rank", "id"]
max_limit = 50
view = "tno_notes_v"

[queries.by_author_desc]
params = ["author"]
order_by = ["-rank", "-id"]
max_limit = 50
view = "tno_notes_v"

[queries.ranked]
params = ["least", "most", "authors"]
order_by = ["rank", "id"]
view = "tno_notes_v"
[queries.ranked.where]
least = { field = "rank", op = "gte" }
most = { field = "rank", op = "lt" }
authors = { field = "author", op = "in" }
"""

# The DBA's side of the test template, following the locking convention (docs/rel.md). A text
# of "fail" makes create and update fail after their statement changed the row, inside the
# transaction: the atomicity tests use it.
SCHEMA = SchemaFile(
    name="tests/integration/rel/tno.sql",
    text="""
CREATE TABLE IF NOT EXISTS tno_notes (
    id BIGINT NOT NULL AUTO_INCREMENT,
    author VARCHAR(40) NOT NULL,
    text VARCHAR(50) NOT NULL,
    `rank` INT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1,
    created_at DATETIME(6) NOT NULL DEFAULT UTC_TIMESTAMP(6),
    PRIMARY KEY (id),
    KEY tno_notes_author_rank (author, `rank`, id)
) ENGINE = InnoDB DEFAULT CHARACTER SET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE OR REPLACE VIEW tno_notes_v AS
    SELECT id, author, text, `rank`, version, created_at FROM tno_notes;

DELIMITER $$
CREATE OR REPLACE PROCEDURE tno_create(IN p_author VARCHAR(40), IN p_text VARCHAR(50),
                                       IN p_rank INT)
MODIFIES SQL DATA
BEGIN
    INSERT INTO tno_notes (author, text, `rank`) VALUES (p_author, p_text, p_rank);
    IF p_text = 'fail' THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused after the insert';
    END IF;
    SELECT id, version FROM tno_notes WHERE id = LAST_INSERT_ID();
END$$

CREATE OR REPLACE PROCEDURE tno_update(IN p_id BIGINT, IN p_version BIGINT,
                                       IN p_text VARCHAR(50), IN p_rank INT)
MODIFIES SQL DATA
BEGIN
    UPDATE tno_notes
       SET text = COALESCE(p_text, text), `rank` = COALESCE(p_rank, `rank`),
           version = version + 1
     WHERE id = p_id AND version = p_version;
    IF ROW_COUNT() = 0 AND EXISTS (SELECT 1 FROM tno_notes WHERE id = p_id) THEN
        SIGNAL SQLSTATE '45409' SET MESSAGE_TEXT = 'stale version';
    END IF;
    IF p_text = 'fail' THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused after the update';
    END IF;
    SELECT id, version FROM tno_notes WHERE id = p_id;
END$$

CREATE OR REPLACE PROCEDURE tno_delete(IN p_id BIGINT, IN p_version BIGINT)
MODIFIES SQL DATA
BEGIN
    DECLARE v_deleted INT DEFAULT 0;
    DELETE FROM tno_notes WHERE id = p_id AND version = p_version;
    SET v_deleted = ROW_COUNT();
    IF v_deleted = 0 AND EXISTS (SELECT 1 FROM tno_notes WHERE id = p_id) THEN
        SIGNAL SQLSTATE '45409' SET MESSAGE_TEXT = 'stale version';
    END IF;
    SELECT v_deleted AS deleted;
END$$
DELIMITER ;
""",
)


def _example() -> tuple[Template, list[SchemaFile]]:
    registry = TemplateRegistry()
    registry.add_package("beds_templates_example")
    return registry.templates["spew_note"], registry.schema["rel"]


NOTE_TEMPLATE = parse_template(NOTE, source="note.toml")
SPEW_NOTE, EXAMPLE_SCHEMA = _example()


def author() -> str:
    return f"c_{uuid.uuid4().hex[:12]}"


def make_adapter(url: str) -> RelAdapter:
    adapter = RelAdapter.from_settings(
        StoreSettings(store="rel", options={"url": url, "connect_timeout": 2, "pool_max": 4})
    )
    adapter.prepare(NOTE_TEMPLATE)
    adapter.prepare(SPEW_NOTE)
    return adapter


@pytest.fixture(scope="module")
def database(mariadb_url: str) -> str:
    """The session database with beds-rel's objects, the test schema and the example's."""

    async def apply() -> None:
        adapter = make_adapter(mariadb_url)
        await adapter.apply_schema([SCHEMA, *EXAMPLE_SCHEMA])
        await adapter.start()
        try:
            await adapter.verify(NOTE_TEMPLATE)
            await adapter.verify(SPEW_NOTE)
        finally:
            await adapter.aclose()

    asyncio.run(apply())
    return mariadb_url


class Node(LocalNode):
    """A node serving ``note`` and ``spew_note`` from the REL store."""

    def __init__(self, adapter: RelAdapter, url: str) -> None:
        super().__init__((NOTE_TEMPLATE, SPEW_NOTE), {"rel": adapter}, identity=IDENTITY)
        self.adapter = adapter
        self.url = url

    async def call(  # type: ignore[override]
        self,
        operation: str,
        payload: dict[str, Any],
        who: str = "ann",
        template: str = "note",
        key: str | None = None,
    ) -> Response:
        return await super().call(template, operation, payload, who=who, idempotency_key=key)

    async def create(self, owner: str, text: str = "t", rank: int = 1) -> dict[str, Any]:
        created = await self.call("create", {"author": owner, "text": text, "rank": rank})
        assert created.ok, created.error
        assert isinstance(created.data, dict)
        return created.data


@pytest.fixture
async def node(database: str) -> AsyncIterator[Node]:
    adapter = make_adapter(database)
    await adapter.start()
    try:
        yield Node(adapter, database)
    finally:
        await adapter.aclose()


def code(response: Response) -> str | None:
    return response.error.code if response.error is not None else None


async def sql(url: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    parts = urlsplit(url)
    conn = await asyncmy.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        database=parts.path.lstrip("/"),
        autocommit=True,
    )
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(statement, args)
            return list(await cursor.fetchall()) if cursor.description else []
    finally:
        conn.close()


def test_the_rel_store_offers_every_feature() -> None:
    assert RelAdapter.features == {
        "locking",
        "journal",
        "pagination",
        "filters",
        "long_operations",
        "batch",
    }
    assert NOTE_TEMPLATE.needs() <= RelAdapter.features
    assert SPEW_NOTE.needs() == {
        "locking",
        "journal",
        "pagination",
        "filters",
        "long_operations",
    }


# -- optimistic locking ---------------------------------------------------------------------------


async def test_a_stale_version_is_refused_with_the_current_one_and_nothing_is_written(
    node: Node,
) -> None:
    created = await node.create(author(), "one")
    ident = created["id"]
    assert created["version"] == 1
    first = await node.call("update", {"id": ident, "version": 1, "text": "two"})
    assert first.data == {"id": ident, "version": 2}
    stale = await node.call("update", {"id": ident, "version": 1, "text": "lost update"})
    assert (stale.status, code(stale)) == (409, "BEDS-409V")
    assert stale.error is not None
    assert stale.error.details == ("current_version: 2",)
    missing = await node.call("update", {"id": ident, "text": "no version"})
    assert code(missing) == "BEDS-422"
    assert missing.error is not None
    assert "$.payload.version: is required" in missing.error.details
    gone = await node.call("delete", {"id": ident, "version": 1})
    assert code(gone) == "BEDS-409V"
    assert gone.error is not None
    assert gone.error.details == ("current_version: 2",)
    read = await node.call("fetch", {"query": "by_id", "params": {"id": ident}})
    assert read.data is not None
    assert [(row["text"], row["version"]) for row in read.data] == [("two", 2)]
    deleted = await node.call("delete", {"id": ident, "version": 2})
    assert deleted.ok, deleted.error
    nothing = await node.call("update", {"id": ident, "version": 2, "text": "x"})
    assert code(nothing) == "BEDS-404"
    assert code(await node.call("delete", {"id": ident, "version": 2})) == "BEDS-404"


async def test_a_stale_keyed_write_keeps_no_key_so_a_fresh_read_can_retry(node: Node) -> None:
    ident = (await node.create(author()))["id"]
    await node.call("update", {"id": ident, "version": 1, "text": "moved on"})
    key = f"k-{uuid.uuid4().hex}"
    stale = await node.call("update", {"id": ident, "version": 1, "text": "x"}, key=key)
    assert code(stale) == "BEDS-409V"
    assert stale.error is not None
    assert stale.error.details == ("current_version: 2",)
    rows = await sql(node.url, "SELECT 1 FROM beds_idempotency WHERE idem_key = %s", key)
    assert rows == []


async def test_concurrent_updates_at_one_version_let_exactly_one_through(node: Node) -> None:
    ident = (await node.create(author()))["id"]
    answers = await asyncio.gather(
        *(node.call("update", {"id": ident, "version": 1, "text": f"writer {n}"}) for n in range(8))
    )
    assert sorted(code(answer) or "ok" for answer in answers) == ["BEDS-409V"] * 7 + ["ok"]
    for answer in answers:
        if answer.error is not None:
            assert answer.error.details == ("current_version: 2",)
    history = await node.call("fetch", {"query": "history", "params": {"id": ident}})
    assert history.data is not None
    assert [e["operation"] for e in history.data] == ["create", "update"]
    winner = next(answer for answer in answers if answer.ok)
    assert winner.data == {"id": ident, "version": 2}
    assert history.data[1]["before"]["version"] == 1


# -- journal ---------------------------------------------------------------------------------------


async def test_every_write_leaves_a_journal_entry_read_back_with_history(node: Node) -> None:
    ident = (await node.create(author(), "one"))["id"]
    await node.call("update", {"id": ident, "version": 1, "text": "two"}, who="bob")
    await node.call("delete", {"id": ident, "version": 2})
    history = await node.call("fetch", {"query": "history", "params": {"id": ident}})
    assert history.ok, history.error
    assert history.data is not None
    entries = history.data
    assert [e["operation"] for e in entries] == ["create", "update", "delete"]
    assert [e["principal"] for e in entries] == ["ann", "bob", "ann"]
    assert [e["key"] for e in entries] == [{"id": ident}] * 3
    assert entries[0]["before"] is None
    assert entries[0]["after"]["text"] == "one"
    assert entries[0]["after"]["version"] == 1
    assert entries[1]["before"]["text"] == "one"
    assert entries[1]["after"]["text"] == "two"
    assert entries[1]["after"]["version"] == 2
    assert entries[2]["before"]["version"] == 2
    assert entries[2]["after"] is None
    assert len({e["event_id"] for e in entries}) == 3
    for entry in entries:  # ISO 8601 UTC, microseconds kept: (at, event_id) orders entries
        assert entry["at"].endswith("Z")
        assert dt.datetime.fromisoformat(entry["at"]).tzinfo == dt.UTC
    page = await node.call("fetch", {"query": "history", "params": {"id": ident}, "limit": 2})
    assert page.data is not None
    assert len(page.data) == 2
    rest = await node.call(
        "fetch", {"query": "history", "params": {"id": ident}, "cursor": page.meta.next}
    )
    assert rest.data is not None
    assert [e["operation"] for e in page.data + rest.data] == ["create", "update", "delete"]
    assert rest.meta.next is None
    assert isinstance(node.adapter, JournalStore)


async def test_a_write_whose_procedure_fails_leaves_no_entry_and_no_change(node: Node) -> None:
    owner = author()
    failed = await node.call("create", {"author": owner, "text": "fail", "rank": 1})
    assert code(failed) == "BEDS-502"  # StoreError: MariaDB rejected the call
    url = node.url
    assert await sql(url, "SELECT id FROM tno_notes WHERE author = %s", owner) == []
    ident = (await node.create(owner, "kept"))["id"]
    refused = await node.call("update", {"id": ident, "version": 1, "text": "fail"})
    assert code(refused) == "BEDS-502"
    stale = await node.call("update", {"id": ident, "version": 7, "text": "stale"})
    assert code(stale) == "BEDS-409V"
    missing = await node.call("update", {"id": ident + 10**9, "version": 1, "text": "none"})
    assert code(missing) == "BEDS-404"
    rows = await sql(url, "SELECT text, version FROM tno_notes WHERE id = %s", ident)
    assert rows == [("kept", 1)]
    history = await node.call("fetch", {"query": "history", "params": {"id": ident}})
    assert history.data is not None
    assert [e["operation"] for e in history.data] == ["create"]
    none = await node.call("fetch", {"query": "history", "params": {"id": ident + 10**9}})
    assert none.data == []


async def test_a_keyed_write_repeated_adds_no_second_entry(node: Node) -> None:
    ident = (await node.create(author()))["id"]
    key = f"k-{uuid.uuid4().hex}"
    payload = {"id": ident, "version": 1, "text": "once"}
    first = await node.call("update", payload, key=key)
    again = await node.call("update", payload, key=key)
    assert first.ok, first.error
    assert (again.ok, again.data) == (True, first.data)
    history = await node.call("fetch", {"query": "history", "params": {"id": ident}})
    assert history.data is not None
    assert [e["operation"] for e in history.data] == ["create", "update"]


async def test_a_write_run_again_for_the_same_event_journals_once(node: Node) -> None:
    """A redelivered request keeps its event id: its entry is written once."""
    adapter = node.adapter
    ctx = CallContext(event_id=f"test.rel.{uuid.uuid4().hex}", journal=True, origin="svc")
    owner = author()
    first = await adapter.create(NOTE_TEMPLATE, {"author": owner, "text": "a", "rank": 1}, ctx)
    update = {"id": first["id"], "version": 1, "text": "b", "rank": None}
    await adapter.update(NOTE_TEMPLATE, update, ctx)
    entries = await adapter.read_journal(NOTE_TEMPLATE, {"id": first["id"]}, limit=10, after=None)
    assert [(e["operation"], e["origin"], e["principal"]) for e in entries] == [
        ("create", "svc", None)
    ]


async def test_an_all_or_nothing_journaled_batch_commits_its_entries_with_all_or_none(
    node: Node,
) -> None:
    adapter, owner = node.adapter, author()
    atomic = attrs.evolve(NOTE_TEMPLATE, batch=attrs.evolve(NOTE_TEMPLATE.batch, atomic=True))

    def ctx() -> CallContext:
        return CallContext(event_id=f"test.rel.{uuid.uuid4().hex}", journal=True, origin="svc")

    notes = [{"author": owner, "text": text, "rank": 1} for text in ("a", "fail", "c")]
    refused = await adapter.create_many(atomic, notes, ctx())
    assert [type(outcome).__name__ for outcome in refused] == ["dict", "StoreError", "dict"]
    assert await sql(node.url, "SELECT id FROM tno_notes WHERE author = %s", owner) == []
    first = ctx()
    created = await adapter.create_many(atomic, [notes[0], notes[2]], first)
    assert all(isinstance(outcome, dict) for outcome in created)
    for index, outcome in enumerate(created):
        assert isinstance(outcome, dict)
        entries = await adapter.read_journal(atomic, {"id": outcome["id"]}, limit=5, after=None)
        assert [(e["operation"], e["event_id"]) for e in entries] == [
            ("create", f"{first.event_id}/{index}")
        ]
    ids = [outcome["id"] for outcome in created if isinstance(outcome, dict)]
    changes = [
        {"id": ids[0], "version": 1, "text": "x", "rank": None},
        {"id": ids[1], "version": 7, "text": "y", "rank": None},  # stale
    ]
    updated = await adapter.update_many(atomic, changes, ctx())
    assert [type(outcome).__name__ for outcome in updated] == ["dict", "StaleVersion"]
    rows = await sql(node.url, "SELECT text, version FROM tno_notes WHERE author = %s", owner)
    assert sorted(rows) == [("a", 1), ("c", 1)]
    entries = await adapter.read_journal(atomic, {"id": ids[0]}, limit=5, after=None)
    assert [e["operation"] for e in entries] == ["create"]


# -- pagination -----------------------------------------------------------------------------------


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    ranks=st.lists(st.integers(0, 5), min_size=0, max_size=25),
    limit=st.integers(1, 7),
    inserted=st.lists(st.integers(0, 5), max_size=10),
    query=st.sampled_from(["by_author", "by_author_desc"]),
)
def test_paging_under_concurrent_inserts_shows_every_earlier_record_exactly_once(
    database: str, ranks: list[int], limit: int, inserted: list[int], query: str
) -> None:
    async def scenario() -> None:
        adapter = make_adapter(database)
        await adapter.start()
        try:
            n, owner = Node(adapter, database), author()
            before = {(await n.create(owner, rank=rank))["id"] for rank in ranks}
            seen: list[int] = []
            payload: dict[str, Any] = {"query": query, "params": {"author": owner}}
            late = list(inserted)
            previous: tuple[int, int] | None = None
            while True:
                page = await n.call("fetch", {**payload, "limit": limit})
                assert page.ok, page.error
                assert page.data is not None
                for row in page.data:
                    seen.append(row["id"])
                    position = (-row["rank"], row["id"] if query == "by_author" else -row["id"])
                    assert previous is None or position > previous  # in the declared order
                    previous = position
                if late:  # another writer inserts between two pages
                    await n.create(owner, rank=late.pop())
                if page.meta.next is None:
                    break
                payload["cursor"] = page.meta.next
            assert len(seen) == len(set(seen))
            assert before <= set(seen)
        finally:
            await adapter.aclose()

    asyncio.run(scenario())


async def test_conditions_and_order_of_a_declared_query(node: Node) -> None:
    ann, bob, cy = author(), author(), author()
    for owner, rank in [(ann, 3), (bob, 1), (cy, 2), (ann, 2), (bob, 5), (ann, 9)]:
        await node.create(owner, rank=rank)
    params = {"least": 2, "most": 9, "authors": [ann, bob]}
    ranked = await node.call("fetch", {"query": "ranked", "params": params})
    assert ranked.data is not None
    assert [(row["author"], row["rank"]) for row in ranked.data] == [
        (ann, 2),
        (ann, 3),
        (bob, 5),
    ]
    one = await node.call("fetch", {"query": "ranked", "params": {**params, "authors": [cy]}})
    assert one.data is not None
    assert [(row["author"], row["rank"]) for row in one.data] == [(cy, 2)]
    paged = await node.call("fetch", {"query": "ranked", "params": params, "limit": 2})
    assert paged.data is not None
    assert len(paged.data) == 2
    rest = await node.call(
        "fetch", {"query": "ranked", "params": params, "cursor": paged.meta.next}
    )
    assert rest.data is not None
    assert [row["rank"] for row in paged.data + rest.data] == [2, 3, 5]
    bad = await node.call("fetch", {"query": "ranked", "params": {**params, "authors": ann}})
    assert bad.error is not None
    assert bad.error.details == ("$.payload.params.authors: must be a list of 1 to 100 values",)


def test_a_procedure_or_function_query_that_filters_or_orders_is_refused() -> None:
    procedure = NOTE.replace(
        'view = "tno_notes_v"\n\n[queries.by_author_desc]',
        ('procedure = "tno_by_author"\n\n[queries.by_author_desc]'),
    )
    with pytest.raises(TemplateError) as refused:
        plan_template(parse_template(procedure, source="note.toml"))
    assert "queries.by_author.order_by needs a view: declare a view to page/filter; a " in str(
        refused.value
    )
    assert "procedure pages itself" in str(refused.value)


# -- the example's spew_note -----------------------------------------------------------------------


async def test_spew_note_locks_journals_and_pages_the_callers_notes(node: Node) -> None:
    me, other = author(), author()
    ids = []
    for text in ["first", "second", "third"]:
        created = await node.call("create", {"body": text}, who=me, template="spew_note")
        assert created.ok, created.error
        assert isinstance(created.data, dict)
        assert created.data["version"] == 1
        ids.append(created.data["id"])
    await node.call("create", {"body": "not mine"}, who=other, template="spew_note")
    mine = await node.call(
        "fetch", {"query": "mine", "params": {}, "limit": 2}, who=me, template="spew_note"
    )
    assert mine.data is not None
    rest = await node.call(
        "fetch",
        {"query": "mine", "params": {}, "cursor": mine.meta.next},
        who=me,
        template="spew_note",
    )
    assert rest.data is not None
    assert [row["body"] for row in mine.data + rest.data] == ["third", "second", "first"]
    hidden = await node.call(
        "fetch", {"query": "by_id", "params": {"id": ids[0]}}, who=me, template="spew_note"
    )
    assert code(hidden) == "BEDS-422"  # internal: the key query is BEDS's, not the caller's
    changed = await node.call(
        "update",
        {"id": ids[0], "version": 1, "body": "first, edited"},
        who=me,
        template="spew_note",
    )
    assert changed.ok, changed.error
    assert isinstance(changed.data, dict)
    assert changed.data["version"] == 2
    stale = await node.call(
        "update", {"id": ids[0], "version": 1, "body": "lost"}, who=me, template="spew_note"
    )
    assert (code(stale), stale.error and stale.error.details) == (
        "BEDS-409V",
        ("current_version: 2",),
    )
    theirs = await node.call(
        "update", {"id": ids[0], "version": 2, "body": "mine now"}, who=other, template="spew_note"
    )
    assert code(theirs) == "BEDS-403"
    history = await node.call(
        "fetch", {"query": "history", "params": {"id": ids[0]}}, who=me, template="spew_note"
    )
    assert history.data is not None
    assert [(e["operation"], e["after"]["body"]) for e in history.data] == [
        ("create", "first"),
        ("update", "first, edited"),
    ]
    created_at = dt.datetime.fromisoformat(history.data[0]["after"]["created_at"])
    window = {
        "since": created_at.isoformat(),
        "until": (created_at + dt.timedelta(microseconds=1)).isoformat(),
    }
    between = await node.call(
        "fetch", {"query": "mine_between", "params": window}, who=me, template="spew_note"
    )
    assert between.data is not None
    assert [row["id"] for row in between.data] == [ids[0]]
