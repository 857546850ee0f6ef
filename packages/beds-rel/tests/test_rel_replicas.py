"""The replica set's state machine: round-robin, down and retried, fallback, one log per change.

No I/O: reads are plain coroutines that answer or raise, and the clock is the test's.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from loguru import logger

from beds.errors import ConfigError, DatabaseObjectMissing, StoreUnavailable
from beds.namaste import StoreSettings
from beds_rel.replicas import Replica, ReplicaSet
from beds_rel.settings import parse_settings

PRIMARY = "primary"
DOWN = StoreUnavailable("cannot connect to MariaDB", details=("MariaDB error 2003",))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def replica_set(count: int, clock: Clock, retry: float = 5) -> ReplicaSet:
    urls = [f"mysql://r:s3cret@replica-{n}:3306/spew" for n in range(count)]
    options = {"url": "mysql://app:s3cret@primary/spew", "secondaries": urls}
    settings = parse_settings(StoreSettings(store="rel", options=options, file="beds.toml"))
    return ReplicaSet(settings.secondaries, retry_seconds=retry, clock=clock)


def names(replicas: list[Replica]) -> list[str]:
    return [replica.settings.host for replica in replicas]


class Reads:
    """Reads that answer with where they ran, or raise what ``failing`` says for that place."""

    def __init__(self, failing: dict[str, Exception] | None = None) -> None:
        self.failing = failing or {}
        self.tried: list[str] = []

    async def __call__(self, replica: Replica | None) -> str:
        where = PRIMARY if replica is None else replica.settings.host
        self.tried.append(where)
        if where in self.failing:
            raise self.failing[where]
        return where


@pytest.fixture
def logged() -> Iterator[list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []
    sink = logger.add(
        lambda message: seen.append((message.record["level"].name, message.record["message"])),
        level="INFO",
        filter="beds_rel.replicas",
    )
    yield seen
    logger.remove(sink)


def test_up_replicas_take_turns() -> None:
    replicas = replica_set(3, Clock())
    firsts = [names(replicas.candidates())[0] for _ in range(4)]
    assert firsts == ["replica-0", "replica-1", "replica-2", "replica-0"]
    # Every read may go on to the others, in turn.
    assert names(replicas.candidates()) == ["replica-1", "replica-2", "replica-0"]


def test_a_down_replica_is_skipped_until_its_retry_then_tried_first_by_one_read() -> None:
    clock = Clock()
    replicas = replica_set(2, clock, retry=5)
    zero, one = replicas.replicas
    replicas.failed(zero, DOWN)
    assert zero.retry_at == clock.now + 5  # down
    assert names(replicas.candidates()) == ["replica-1"]
    clock.now += 4.9
    assert names(replicas.candidates()) == ["replica-1"]
    clock.now += 0.1
    # Due: this read tries it first; the next one (before it answers) does not.
    assert names(replicas.candidates()) == ["replica-0", "replica-1"]
    assert names(replicas.candidates()) == ["replica-1"]
    assert zero.retry_at == clock.now + 5
    replicas.answered(zero)
    assert zero.up
    assert sorted(names(replicas.candidates())) == ["replica-0", "replica-1"]
    assert one.up


async def test_reads_go_to_a_replica_and_never_to_the_primary_while_one_answers() -> None:
    replicas = replica_set(2, Clock())
    reads = Reads()
    assert [await replicas.read(reads) for _ in range(4)] == [
        "replica-0",
        "replica-1",
        "replica-0",
        "replica-1",
    ]
    assert replicas.fallbacks == 0


async def test_a_replica_that_fails_sends_the_read_on_and_is_not_tried_again_at_once(
    logged: list[tuple[str, str]],
) -> None:
    clock = Clock()
    replicas = replica_set(2, clock)
    reads = Reads({"replica-0": DOWN})
    assert await replicas.read(reads) == "replica-1"
    assert [await replicas.read(reads) for _ in range(3)] == ["replica-1"] * 3
    assert reads.tried == ["replica-0", "replica-1", "replica-1", "replica-1", "replica-1"]
    assert replicas.fallbacks == 0
    assert logged == [
        (
            "WARNING",
            "REL replica replica-0:3306 (stores.rel.secondaries[0]) is down: cannot connect to "
            "MariaDB; MariaDB error 2003; secondary reads go to the other replicas and try it "
            "again every 5 s",
        )
    ]


async def test_no_replica_answering_falls_back_to_the_primary_quickly_and_logs_once(
    logged: list[tuple[str, str]],
) -> None:
    clock = Clock()
    replicas = replica_set(1, clock, retry=2)
    reads = Reads({"replica-0": DOWN})
    assert [await replicas.read(reads) for _ in range(5)] == [PRIMARY] * 5
    # One attempt on the replica; then the primary directly, not one timeout per read.
    assert reads.tried == ["replica-0", *[PRIMARY] * 5]
    assert replicas.fallbacks == 5
    clock.now += 2
    assert await replicas.read(reads) == PRIMARY  # tried again: still down, no second warning
    assert reads.tried[-2:] == ["replica-0", PRIMARY]
    assert [level for level, _ in logged] == ["WARNING"]
    assert "secondary reads go to the primary" in logged[0][1]
    assert "s3cret" not in logged[0][1]
    # It answers again: back to the replica, said once.
    del reads.failing["replica-0"]
    clock.now += 2
    assert [await replicas.read(reads) for _ in range(2)] == ["replica-0"] * 2
    assert logged[1:] == [
        (
            "INFO",
            "REL replica replica-0:3306 (stores.rel.secondaries[0]) answers again: "
            "secondary reads go to it",
        )
    ]


async def test_an_error_the_replica_answers_is_raised_and_keeps_it_up() -> None:
    replicas = replica_set(1, Clock())
    missing = DatabaseObjectMissing("a database object the call uses does not exist")
    reads = Reads({"replica-0": missing})
    with pytest.raises(DatabaseObjectMissing):
        await replicas.read(reads)
    assert reads.tried == ["replica-0"]
    assert replicas.replicas[0].up


async def test_the_primary_error_is_raised_when_every_place_fails() -> None:
    replicas = replica_set(2, Clock())
    reads = Reads({"replica-0": DOWN, "replica-1": DOWN, PRIMARY: DOWN})
    with pytest.raises(StoreUnavailable):
        await replicas.read(reads)
    assert reads.tried == ["replica-0", "replica-1", PRIMARY]
    assert replicas.fallbacks == 1


async def test_without_replicas_reads_go_to_the_primary_and_count_no_fallback() -> None:
    replicas = replica_set(0, Clock())
    reads = Reads()
    assert await replicas.read(reads) == PRIMARY
    assert replicas.fallbacks == 0


def test_replicas_take_the_primary_s_pool_and_timeout_and_name_their_key() -> None:
    options = {
        "url": "mysql://app:s3cret@primary/spew",
        "secondaries": ["mysql://r@replica-0/spew", "mysql://r@replica-1:3307/spew"],
        "pool_min": 2,
        "pool_max": 4,
        "connect_timeout": 1.5,
        "replica_retry_seconds": 0.5,
    }
    settings = parse_settings(StoreSettings(store="rel", options=options))
    assert settings.url_key == "stores.rel.url"
    assert settings.replica_retry_seconds == 0.5
    assert [(r.pool_min, r.pool_max, r.connect_timeout) for r in settings.secondaries] == [
        (2, 4, 1.5)
    ] * 2
    assert [r.url_key for r in settings.secondaries] == [
        "stores.rel.secondaries[0]",
        "stores.rel.secondaries[1]",
    ]
    assert [Replica(r).name for r in settings.secondaries] == ["replica-0:3306", "replica-1:3307"]
    assert parse_settings(StoreSettings(store="rel", options={"url": options["url"]})) == (
        parse_settings(
            StoreSettings(store="rel", options={"url": options["url"], "replica_retry_seconds": 5})
        )
    )


@pytest.mark.parametrize("value", [0, -1, 3601, "soon"])
def test_a_bad_replica_retry_names_its_key_and_file(value: object) -> None:
    options = {"url": "mysql://app:s3cret@primary/spew", "replica_retry_seconds": value}
    with pytest.raises(ConfigError) as refused:
        parse_settings(StoreSettings(store="rel", options=options, file="beds.toml"))
    assert refused.value.key == "stores.rel.replica_retry_seconds"
    assert refused.value.file == "beds.toml"
    assert "s3cret" not in str(refused.value)
