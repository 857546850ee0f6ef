"""beds.migrations: versions, registration checks, the plan of pending files, checksums."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beds.errors import Conflict, TemplateError
from beds.migrations import (
    AppliedMigration,
    check_versions,
    migration_version,
    plan_migrations,
    run_migrations,
    sha256_of,
)
from beds.namaste import SchemaFile


def _file(name: str, text: str = "SELECT 1", package: str = "pkg") -> SchemaFile:
    return SchemaFile(name=f"{package}/schema/rel/{name}", text=text, distribution=package)


def _applied(version: int, text: str = "SELECT 1", package: str = "pkg") -> AppliedMigration:
    return AppliedMigration(
        package=package,
        version=version,
        connection="rel",
        file=f"{package}/schema/rel/{version:03}_x.sql",
        sha256=sha256_of(text),
        applied_at="2026-01-01T00:00:00.000000+00:00",
        applied_by="test",
    )


@pytest.mark.parametrize(
    ("name", "version"),
    [("001_spew_post.sql", 1), ("pkg/schema/rel/042_x.json", 42), ("000_a.sql", 0)],
)
def test_the_number_prefix_is_the_version(name: str, version: int) -> None:
    assert migration_version(name) == version


@pytest.mark.parametrize("name", ["spew_post.sql", "1a_x.sql", "001.sql", "_001_x.sql", "001_"])
def test_a_name_without_a_prefix_has_no_version(name: str) -> None:
    assert migration_version(name) is None


@given(st.text(max_size=30))
def test_any_name_has_a_version_only_with_a_number_and_underscore_first(name: str) -> None:
    version = migration_version(name)
    base = name.rpartition("/")[2]
    if version is not None:
        assert base.startswith(f"{base.split('_')[0]}_")
        assert int(base.split("_")[0]) == version


def test_registration_refuses_a_file_without_a_version_naming_it() -> None:
    with pytest.raises(TemplateError, match=r"'pkg/schema/rel/spew\.sql'.*migration version"):
        check_versions([_file("001_a.sql"), _file("spew.sql")])


def test_registration_refuses_two_files_with_one_version_naming_both() -> None:
    with pytest.raises(TemplateError) as refused:
        check_versions([_file("003_a.sql"), _file("003_b.sql")])
    assert "pkg/schema/rel/003_a.sql" in str(refused.value)
    assert "'pkg/schema/rel/003_b.sql'" in str(refused.value)


def test_the_plan_lists_the_files_not_recorded_in_version_order() -> None:
    files = [_file("010_c.sql"), _file("002_b.sql"), _file("001_a.sql")]
    (status,) = plan_migrations(files, [_applied(1)])
    assert (status.installed, status.required) == (1, 10)
    assert [m.basename for m in status.pending] == ["002_b.sql", "010_c.sql"]
    assert status.problem() == (
        "package pkg needs version 10, installed 1 (pending 002_b.sql, 010_c.sql): "
        "run beds schema migrate"
    )
    (done,) = plan_migrations(files, [_applied(1), _applied(2), _applied(10)])
    assert done.pending == ()
    assert done.problem() is None


def test_packages_are_planned_apart_and_in_name_order() -> None:
    files = [_file("001_a.sql", package="zed"), _file("001_a.sql", package="abe")]
    statuses = plan_migrations(files, [_applied(1, package="zed")])
    assert [(s.package, s.installed, len(s.pending)) for s in statuses] == [
        ("abe", 0, 1),
        ("zed", 1, 0),
    ]


def test_a_changed_checksum_is_reported_with_both_sums() -> None:
    (status,) = plan_migrations([_file("001_a.sql", text="SELECT 2")], [_applied(1)])
    assert status.pending == ()
    (line,) = status.changed
    assert line == (
        f"001_a.sql: recorded {sha256_of('SELECT 1')[:12]}, shipped {sha256_of('SELECT 2')[:12]}"
    )


class _Store:
    """A record in memory; a file whose text is ``FAIL`` fails."""

    def __init__(self, applied: list[AppliedMigration] | None) -> None:
        self.applied = applied

    async def read_migrations(self) -> list[AppliedMigration] | None:
        return None if self.applied is None else list(self.applied)

    async def apply_migration(self, file: SchemaFile, applied: AppliedMigration) -> None:
        if file.text == "FAIL":
            raise Conflict("failed", details=(file.name,))
        self.applied = [*(self.applied or []), applied]

    def migration_store(self) -> _Store | None:
        return None  # a record in memory has no DBA account


def test_run_applies_and_records_pending_files_and_stops_at_a_failure() -> None:
    store = _Store(None)
    files = [_file("001_a.sql"), _file("002_b.sql", text="FAIL"), _file("003_c.sql")]
    with pytest.raises(Conflict):
        asyncio.run(run_migrations(store, "rel", files, applied_by="t", strict=True))
    assert [a.version for a in store.applied or []] == [1]
    files[1] = _file("002_b.sql")
    done = asyncio.run(run_migrations(store, "rel", files, applied_by="t", strict=True))
    assert [a.version for a in done] == [2, 3]
    assert asyncio.run(run_migrations(store, "rel", files, applied_by="t", strict=True)) == []


def test_strict_run_refuses_an_edited_migration_and_applies_nothing() -> None:
    store = _Store([_applied(1)])
    files = [_file("001_a.sql", text="SELECT 2"), _file("002_b.sql")]
    with pytest.raises(Conflict) as refused:
        asyncio.run(run_migrations(store, "rel", files, applied_by="t", strict=True))
    assert refused.value.CODE == "BEDS-409"
    assert refused.value.details[0].startswith("pkg 001_a.sql: recorded ")
    assert len(store.applied or []) == 1
    warned: list[str] = []
    done = asyncio.run(
        run_migrations(store, "rel", files, applied_by="t", strict=False, on_changed=warned.append)
    )
    assert [a.version for a in done] == [2]
    assert len(warned) == 1


def test_a_limited_run_applies_the_next_files_only_and_goes_on_from_the_record() -> None:
    store = _Store([])
    files = [_file("003_c.sql"), _file("001_a.sql"), _file("002_b.sql")]
    steps = []
    for _ in range(4):  # one file per step, as the migration ticket runs them
        done = asyncio.run(
            run_migrations(store, "rel", files, applied_by="t", strict=True, limit=1)
        )
        steps.append([a.version for a in done])
    assert steps == [[1], [2], [3], []]
