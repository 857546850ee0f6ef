"""OUT/INOUT parameters, result sets by name, and DECIMAL/JSON/BOOLEAN typing on the real MariaDB.

The test template ``result`` (TLA ``trs``) and its procedures live in a database of this module,
created by ``beds schema apply`` and dropped afterwards. Its writes answer through OUT
parameters (create: the new id, delete: the rows removed), its ``stats`` query through two
result sets, an INOUT and two OUT parameters. The example's ``spew_post.author_stats`` and
``spew_boost`` run in the same database with their shipped schema. Each test writes with
authors of its own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest

from beds.codec import encode_response
from beds.envelopes import Operation, Request
from beds.errors import DatabaseObjectMissing, NotFound, StoreError
from beds.idempotency import fingerprint
from beds.namaste import CallContext, SchemaFile, StoreSettings
from beds.registry import TemplateRegistry
from beds.templates import Template, parse_template, validate_fetch, validate_write
from beds.testing import unique_name
from beds.testing.local import LocalNode
from beds_rel import RelAdapter

pytestmark = pytest.mark.mariadb

RESULT = """
name = "result"
store = "rel"
tla = "trs"
key = ["id"]

[capabilities]
journal = true

[fields.id]
type = "int"
generated = true
[fields.author]
type = "str"
max_length = 40
[fields.amount]
type = "decimal"
[fields.meta]
type = "json"
required = false
nullable = true
[fields.active]
type = "bool"
[fields.created_at]
type = "datetime"
generated = true

[operations.create]
params = ["author", "amount", "meta", "active"]
returns = ["id", "created_at"]
procedure = "trs_create"
out = ["id"]

[operations.update]
params = ["id", "amount", "meta", "active"]
returns = ["id", "amount", "meta", "active"]
procedure = "trs_update"

[operations.delete]
params = ["id"]
procedure = "trs_delete"
out = ["deleted"]

[queries.by_id]
params = ["id"]
max_limit = 1
view = "trs_items_v"

[queries.stats]
params = ["author", "amount"]
max_limit = 10
procedure = "trs_stats"
inout = ["amount"]
out = ["total", "sum"]
result_sets = ["items", "by_active"]

[queries.count]
params = ["author"]
procedure = "trs_count"
out = ["total"]

[queries.miscounted]
params = ["author"]
procedure = "trs_count"
out = ["total"]
result_sets = ["items"]
"""

# The same calls bound to procedures a DBA got wrong: one lacks its OUT parameter, one declares
# it IN. verify names both.
BROKEN = """
name = "broken"
store = "rel"
tla = "trs"
key = ["id"]
[fields.id]
type = "int"
[fields.author]
type = "str"
[queries.short]
params = ["author"]
procedure = "trs_count_short"
out = ["total"]
[queries.in_mode]
params = ["author"]
procedure = "trs_count_in"
out = ["total"]
"""

SCHEMA = SchemaFile(
    name="tests/integration/rel/trs.sql",
    text="""
CREATE TABLE IF NOT EXISTS trs_items (
    id BIGINT NOT NULL AUTO_INCREMENT,
    author VARCHAR(40) NOT NULL,
    amount DECIMAL(16, 2) NOT NULL,
    meta JSON NULL,
    active BOOLEAN NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT UTC_TIMESTAMP(6),
    PRIMARY KEY (id),
    KEY trs_items_author (author, id)
) ENGINE = InnoDB DEFAULT CHARACTER SET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE OR REPLACE VIEW trs_items_v AS
    SELECT id, author, amount, meta, active, created_at FROM trs_items;

DELIMITER $$
-- The new id comes back through p_id; the result set holds the other returns field. An author
-- named 'fail' is refused after the insert and the OUT value (inside the transaction).
CREATE OR REPLACE PROCEDURE trs_create(IN p_author VARCHAR(40), IN p_amount DECIMAL(16, 2),
                                       IN p_meta JSON, IN p_active BOOLEAN, OUT p_id BIGINT)
MODIFIES SQL DATA
BEGIN
    INSERT INTO trs_items (author, amount, meta, active)
         VALUES (p_author, p_amount, p_meta, p_active);
    SET p_id = LAST_INSERT_ID();
    IF p_author = 'fail' THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused after the insert';
    END IF;
    SELECT created_at FROM trs_items WHERE id = p_id;
END$$

CREATE OR REPLACE PROCEDURE trs_update(IN p_id BIGINT, IN p_amount DECIMAL(16, 2),
                                       IN p_meta JSON, IN p_active BOOLEAN)
MODIFIES SQL DATA
BEGIN
    UPDATE trs_items
       SET amount = COALESCE(p_amount, amount), meta = COALESCE(p_meta, meta),
           active = COALESCE(p_active, active)
     WHERE id = p_id;
    SELECT id, amount, meta, active FROM trs_items WHERE id = p_id;
END$$

-- No result set: the rows removed come back through p_deleted only.
CREATE OR REPLACE PROCEDURE trs_delete(IN p_id BIGINT, OUT p_deleted INT)
MODIFIES SQL DATA
BEGIN
    DELETE FROM trs_items WHERE id = p_id;
    SET p_deleted = ROW_COUNT();
END$$

-- Two result sets; p_amount comes in as a floor and goes out as the largest amount at or
-- above it; p_total and p_sum count and add up the author's items.
CREATE OR REPLACE PROCEDURE trs_stats(IN p_author VARCHAR(40), INOUT p_amount DECIMAL(16, 2),
                                      IN p_limit INT, OUT p_total BIGINT,
                                      OUT p_sum DECIMAL(18, 2))
READS SQL DATA
BEGIN
    SELECT id, amount, meta, active FROM trs_items WHERE author = p_author
     ORDER BY id LIMIT p_limit;
    SELECT active, COUNT(*) AS n FROM trs_items WHERE author = p_author
     GROUP BY active ORDER BY active;
    SELECT COUNT(*), SUM(amount) INTO p_total, p_sum FROM trs_items WHERE author = p_author;
    SELECT MAX(amount) INTO p_amount FROM trs_items
     WHERE author = p_author AND amount >= p_amount;
END$$

CREATE OR REPLACE PROCEDURE trs_count(IN p_author VARCHAR(40), IN p_limit INT,
                                      OUT p_total BIGINT)
READS SQL DATA
BEGIN
    SELECT COUNT(*) INTO p_total FROM trs_items WHERE author = p_author;
END$$

CREATE OR REPLACE PROCEDURE trs_count_short(IN p_author VARCHAR(40), IN p_limit INT)
READS SQL DATA
BEGIN
    SELECT COUNT(*) AS total FROM trs_items WHERE author = p_author;
END$$

CREATE OR REPLACE PROCEDURE trs_count_in(IN p_author VARCHAR(40), IN p_limit INT,
                                         IN p_total BIGINT)
READS SQL DATA
BEGIN
    SELECT COUNT(*) AS total FROM trs_items WHERE author = p_author;
END$$
DELIMITER ;
""",
)

TEMPLATE = parse_template(RESULT, source="result.toml")
CTX = CallContext(event_id="test.rel.results")


def _example() -> tuple[Template, Template, list[SchemaFile]]:
    registry = TemplateRegistry()
    registry.add_package("beds_templates_example")
    files = (
        "001_spew_post.sql",
        "003_spew_post_stats.sql",
        "004_spew_boost.sql",
        # spew_post's replies, hashtags and timelines read the follows and likes
        "007_spew_follow.sql",
        "008_spew_like.sql",
        "009_spew_post_threads.sql",
        "010_spew_post_batch.sql",  # spew_post's create_many
    )
    schema = [file for file in registry.schema["rel"] if file.name.endswith(files)]
    return registry.templates["spew_post"], registry.templates["spew_boost"], schema


SPEW_POST, SPEW_BOOST, EXAMPLE_SCHEMA = _example()


def author() -> str:
    return f"r_{uuid.uuid4().hex[:12]}"


def make_adapter(url: str) -> RelAdapter:
    adapter = RelAdapter.from_settings(
        StoreSettings(store="rel", options={"url": url, "connect_timeout": 2, "pool_max": 4})
    )
    for template in (TEMPLATE, SPEW_POST, SPEW_BOOST):
        adapter.prepare(template)
    return adapter


@pytest.fixture(scope="module")
def database(mariadb_url: str, mariadb_sql: Callable[[str], None]) -> Iterator[str]:
    """A database of this module with beds-rel's objects, the test schema and the example's."""
    name = unique_name("beds_results")
    parts = urlsplit(mariadb_url)
    url = urlunsplit((parts.scheme, parts.netloc, "/" + name, "", ""))

    async def apply() -> None:
        adapter = make_adapter(url)
        await adapter.apply_schema([SCHEMA, *EXAMPLE_SCHEMA])  # creates the database
        await adapter.start()
        try:
            for template in (TEMPLATE, SPEW_POST, SPEW_BOOST):
                await adapter.verify(template)
        finally:
            await adapter.aclose()

    try:
        asyncio.run(apply())
        yield url
    finally:
        mariadb_sql(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
async def rel(database: str) -> AsyncIterator[RelAdapter]:
    adapter = make_adapter(database)
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.aclose()


async def create(rel: RelAdapter, ctx: CallContext = CTX, **payload: Any) -> dict[str, Any]:
    record = validate_write(TEMPLATE, Operation.CREATE, {"active": True, **payload})
    return await rel.create(TEMPLATE, record, ctx)


async def fetch(rel: RelAdapter, query: str, **params: Any) -> list[dict[str, Any]]:
    return await rel.fetch(
        TEMPLATE, validate_fetch(TEMPLATE, {"query": query, "params": params}), CTX
    )


async def by_id(rel: RelAdapter, ident: int) -> dict[str, Any]:
    [row] = await fetch(rel, "by_id", id=ident)
    return row


async def total(rel: RelAdapter, who: str) -> int:
    [row] = await fetch(rel, "count", author=who)
    return int(row["total"])


def keyed(payload: dict[str, Any], key: str) -> CallContext:
    request = Request(operation=Operation.CREATE, template=TEMPLATE.name, payload=payload)
    return CallContext(
        event_id=f"test.rel.{key}", idempotency_key=key, fingerprint=fingerprint(request)
    )


# -- writes answer through OUT parameters --------------------------------------------------------


async def test_create_returns_its_out_id_with_the_rows_other_fields(rel: RelAdapter) -> None:
    who = author()
    created = await create(rel, author=who, amount="12.50")
    assert set(created) == {"id", "created_at"}
    assert isinstance(created["id"], int)
    assert created["created_at"].endswith("Z")
    row = await by_id(rel, created["id"])
    assert (row["author"], row["created_at"]) == (who, created["created_at"])


async def test_a_keyed_create_with_an_out_id_runs_once(rel: RelAdapter) -> None:
    who = author()
    payload = {"author": who, "amount": "3.00", "active": False}
    ctx = keyed(payload, f"k-{uuid.uuid4().hex}")
    first = await create(rel, ctx, **payload)
    again = await create(rel, ctx, **payload)
    assert again == first
    assert await total(rel, who) == 1


async def test_a_write_refused_after_its_out_value_leaves_nothing(rel: RelAdapter) -> None:
    payload = {"author": "fail", "amount": "1.00"}
    for ctx in (keyed(payload, f"k-{uuid.uuid4().hex}"), CallContext(event_id="e", journal=True)):
        with pytest.raises(StoreError) as info:
            await create(rel, ctx, **payload)
        assert any("refused after the insert" in detail for detail in info.value.details)
    assert await total(rel, "fail") == 0  # the insert rolled back with the transaction


async def test_a_journaled_create_keys_its_entry_by_the_out_id(rel: RelAdapter) -> None:
    who = author()
    meta = {"tags": ["a", "é"], "n": 1.5}
    ctx = CallContext(event_id=f"test.rel.{uuid.uuid4().hex}", journal=True)
    created = await create(rel, ctx, author=who, amount="7.25", meta=meta)
    [entry] = await rel.read_journal(TEMPLATE, {"id": created["id"]}, limit=10, after=None)
    assert entry["key"] == {"id": created["id"]}
    after = entry["after"]
    assert (after["amount"], after["meta"], after["active"]) == ("7.25", meta, True)


async def test_delete_reads_its_count_from_an_out_parameter(rel: RelAdapter) -> None:
    created = await create(rel, author=author(), amount="1.00")
    key = validate_write(TEMPLATE, Operation.DELETE, {"id": created["id"]})
    assert await rel.delete(TEMPLATE, key, CTX) == {"deleted": 1}
    with pytest.raises(NotFound):
        await rel.delete(TEMPLATE, key, CTX)


# -- a query answers its result sets and OUT/INOUT values by name --------------------------------


async def test_two_result_sets_an_inout_and_out_values_by_name(rel: RelAdapter) -> None:
    who = author()
    for amount, active in (("0.10", True), ("0.20", False), ("12.50", True)):
        await create(rel, author=who, amount=amount, active=active, meta={"amount": amount})
    [record] = await fetch(rel, "stats", author=who, amount="5")
    assert list(record) == ["items", "by_active", "amount", "total", "sum"]
    assert [(i["amount"], i["meta"], i["active"]) for i in record["items"]] == [
        ("0.10", {"amount": "0.10"}, True),
        ("0.20", {"amount": "0.20"}, False),
        ("12.50", {"amount": "12.50"}, True),
    ]
    assert record["by_active"] == [{"active": False, "n": 1}, {"active": True, "n": 2}]
    # INOUT: in as a floor, out as the largest amount at or above it; OUT: count and sum,
    # exact (0.10 + 0.20 + 12.50, with no float on the way).
    assert (record["amount"], record["total"], record["sum"]) == ("12.50", 3, "12.80")


async def test_each_result_set_keeps_at_most_the_limit(rel: RelAdapter) -> None:
    who = author()
    for _ in range(3):
        await create(rel, author=who, amount="1.00")
    query = validate_fetch(
        TEMPLATE, {"query": "stats", "params": {"author": who, "amount": "0"}, "limit": 2}
    )
    [record] = await rel.fetch(TEMPLATE, query, CTX)
    assert len(record["items"]) == 2
    assert record["total"] == 3


async def test_a_query_of_out_values_only(rel: RelAdapter) -> None:
    assert await fetch(rel, "count", author=author()) == [{"total": 0}]


async def test_a_procedure_answering_other_result_sets_than_declared_is_a_store_error(
    rel: RelAdapter,
) -> None:
    with pytest.raises(StoreError) as info:
        await fetch(rel, "miscounted", author=author())
    assert info.value.details == (
        "procedure trs_count: returned 0 result sets, the template declares 1 (items)",
    )
    assert await fetch(rel, "count", author=author()) == [{"total": 0}]  # the pool goes on


# -- values typed by the template's fields -------------------------------------------------------


@pytest.mark.parametrize("amount", ["12.50", "0.10", "99999999999999.99", "-0.01", "7"])
async def test_a_decimal_round_trips_exactly(rel: RelAdapter, amount: str) -> None:
    created = await create(rel, author=author(), amount=amount)
    expected = str(Decimal(amount).quantize(Decimal("0.01")))  # the column's scale
    assert (await by_id(rel, created["id"]))["amount"] == expected


@pytest.mark.parametrize(
    "meta",
    [
        {"tags": ["a", "é", "💡"], "geo": {"lat": 1.5, "lng": -2}, "none": None, "ok": True},
        ["x", 1, [2, [3]]],
        "just text",
        42,
        None,
    ],
)
async def test_a_json_value_round_trips(rel: RelAdapter, meta: Any) -> None:
    created = await create(rel, author=author(), amount="1.00", meta=meta)
    assert (await by_id(rel, created["id"]))["meta"] == meta


async def test_an_update_returns_typed_values(rel: RelAdapter) -> None:
    created = await create(rel, author=author(), amount="1.00", active=True)
    record = validate_write(
        TEMPLATE,
        Operation.UPDATE,
        {"id": created["id"], "amount": "2.50", "meta": {"v": 2}, "active": False},
    )
    assert await rel.update(TEMPLATE, record, CTX) == {
        "id": created["id"],
        "amount": "2.50",
        "meta": {"v": 2},
        "active": False,
    }


# -- through the node: the wire, and what a one-record query refuses -----------------------------


async def test_the_node_answers_decimals_as_text_and_json_as_json(rel: RelAdapter) -> None:
    node = LocalNode((TEMPLATE,), {"rel": rel})
    who = author()
    created = await node.call(
        "result", "create", {"author": who, "amount": "0.10", "meta": {"k": [1]}, "active": True}
    )
    assert created.ok, created.error
    answer = await node.call(
        "result", "fetch", {"query": "stats", "params": {"author": who, "amount": "0.10"}}
    )
    assert answer.ok, answer.error
    wire = orjson.loads(encode_response(answer))
    [record] = wire["data"]
    assert record["items"][0]["amount"] == "0.10"
    assert record["items"][0]["meta"] == {"k": [1]}
    assert record["items"][0]["active"] is True
    assert (record["amount"], record["total"], record["sum"]) == ("0.10", 1, "0.10")
    assert "next" not in wire["meta"] or wire["meta"]["next"] is None
    paged = await node.call(
        "result",
        "fetch",
        {"query": "stats", "params": {"author": who, "amount": "0"}, "cursor": "x"},
    )
    assert paged.error is not None
    assert paged.error.code == "BEDS-422"


# -- verify counts OUT parameters and checks their modes -----------------------------------------


async def test_verify_names_a_procedure_without_its_out_parameter(rel: RelAdapter) -> None:
    broken = parse_template(BROKEN, source="broken.toml")
    rel.prepare(broken)
    with pytest.raises(DatabaseObjectMissing) as info:
        await rel.verify(broken)
    assert info.value.details == (
        "trs_count_in (parameter 3 is IN; the template passes it as OUT)",
        "trs_count_short (takes 2 parameters; the template passes 3)",
    )


# -- the example domain: spew_post's author_stats and spew_boost ---------------------------------


async def test_spew_post_author_stats_answers_posts_days_and_total(rel: RelAdapter) -> None:
    node, who = LocalNode((SPEW_POST,), {"rel": rel}), author()
    for body in ("one", "two", "three"):
        created = await node.call("spew_post", "create", {"body": body}, who=who)
        assert created.ok, created.error
    answer = await node.call(
        "spew_post", "fetch", {"query": "author_stats", "params": {"author": who}, "limit": 2}
    )
    assert answer.ok, answer.error
    assert isinstance(answer.data, list)
    [record] = answer.data
    assert list(record) == ["posts", "per_day", "total"]
    assert [post["body"] for post in record["posts"]] == ["three", "two"]  # the limit: 2
    [day] = record["per_day"]
    assert day["post_count"] == 3
    assert day["day"] == record["posts"][0]["created_at"][:10]  # a DATE as ISO text
    assert record["total"] == 3


async def test_spew_boost_keeps_money_targeting_and_switch_and_quotes(rel: RelAdapter) -> None:
    node, who = LocalNode((SPEW_POST, SPEW_BOOST), {"rel": rel}), author()
    post = await node.call("spew_post", "create", {"body": "boost me"}, who=who)
    assert isinstance(post.data, dict)
    post_id = post.data["id"]
    targeting = {"languages": ["en", "fr"], "topics": ["cats"], "max_per_day": 3}
    boost = {"post_id": post_id, "budget": "12.50", "targeting": targeting, "active": True}
    created = await node.call("spew_boost", "create", boost, who=who)
    assert created.ok, created.error
    assert isinstance(created.data, dict)
    assert list(created.data) == ["id"]  # read from spb_create's OUT parameter
    mine = await node.call("spew_boost", "fetch", {"query": "mine", "params": {}}, who=who)
    assert isinstance(mine.data, list)
    [row] = mine.data
    assert row.pop("created_at").endswith("Z")
    assert row == {
        "id": created.data["id"],
        "owner": who,
        "post_id": post_id,
        "budget": "12.50",
        "targeting": targeting,
        "active": True,
    }
    changed = await node.call(
        "spew_boost", "update", {"id": created.data["id"], "active": False}, who=who
    )
    assert changed.data == {"id": created.data["id"], "budget": "12.50", "active": False}
    quote = await node.call(
        "spew_boost",
        "fetch",
        {"query": "quote", "params": {"post_id": post_id, "budget": "800"}},
        who=who,
    )
    assert quote.data == [{"budget": "500.00", "reach": 50000}]  # INOUT capped, OUT reach
    nothing = await node.call(
        "spew_boost",
        "fetch",
        {"query": "quote", "params": {"post_id": 2**62, "budget": "10"}},
        who=who,
    )
    assert nothing.data == [{"budget": "0.00", "reach": 0}]
    theirs = await node.call("spew_boost", "create", boost, who=author())
    assert theirs.error is not None
    assert theirs.error.code == "BEDS-409"  # not a post of theirs: SQLSTATE class 23
