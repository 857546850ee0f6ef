"""Schema migrations: each template package's numbered DBA files, and the record of those applied.

A template package ships its DBA files per store as ``schema/<store>/NNN_name.ext``: the number
is the file's **migration version**, per package and store, and a package's *required version*
for a store is its highest number. Each connection records the migrations applied to it in
``beds_schema_migrations`` (REL: a table; REC: a collection), one entry per package and version
with the file's name, the SHA-256 of its text, when and by whom. Applying a connection's
migrations runs only the files not recorded yet, in version order, and records each one right
after it ran, so a run that fails part-way keeps the ones before the failure and a run again
goes on from there.

A recorded migration whose checksum differs from the shipped file's was edited after it was
shipped: development (``beds schema apply``) warns and goes on; ``beds schema migrate`` refuses
(``Conflict``), because a DBA must never edit a shipped migration but add the next one.

Stores keep the record through :class:`MigrationStore`, which both shipped adapters implement;
``beds schema apply``, ``migrate``, ``status`` and the start-up check (:mod:`beds.ipl`) read it
through :func:`plan_migrations` and run it through :func:`run_migrations`. In production the
migration ticket (:mod:`beds.calgon.migrate`) runs them one file per step through the store's
DBA connection (:meth:`MigrationStore.migration_store`, key ``migration_url``).

Why this module is long: versions, the record, the plan and the run are one contract (what a
file's number means, what is recorded, what runs next); split, each part would restate it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

import attrs

from beds.config.stores import split_connection
from beds.errors import Conflict, TemplateError
from beds.namaste import SchemaFile

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from beds.templates.model import Template

__all__ = (
    "RECORD",
    "AppliedMigration",
    "Migration",
    "MigrationStore",
    "PackageStatus",
    "changed_error",
    "check_versions",
    "files_for",
    "migration_version",
    "package_of_file",
    "plan_migrations",
    "run_migrations",
    "sha256_of",
)

RECORD: Final = "beds_schema_migrations"
"""The table (REL) or collection (REC) each connection records its applied migrations in."""

_VERSIONED = re.compile(r"^(\d{1,9})_.")


def migration_version(name: str) -> int | None:
    """The version of a schema file from its name's number prefix (``004_x.sql`` → 4).

    ``name`` may be a path; only its last part counts. ``None``: the name has no prefix.
    """
    match = _VERSIONED.match(name.rpartition("/")[2])
    return int(match.group(1)) if match else None


def check_versions(files: Sequence[SchemaFile]) -> None:
    """Refuse a package's files for one store that are not numbered migrations.

    Raises:
        TemplateError: a file without a number prefix (``NNN_name.ext``), or two files with one
            number; names the file (and the other one).
    """
    seen: dict[int, str] = {}
    for file in files:
        version = migration_version(file.name)
        if version is None:
            raise TemplateError(
                "a schema file's name must start with its migration version, a number and _ "
                "(such as 007_add_index.sql)",
                template=file.name,
            )
        if version in seen:
            raise TemplateError(
                f"migration version {version} is used twice: by {seen[version]} and by this file "
                "(give the new one the next number)",
                template=file.name,
            )
        seen[version] = file.name


def package_of_file(file: SchemaFile) -> str:
    """The package a schema file belongs to: its distribution, else its import package."""
    return file.distribution or file.name.partition("/")[0]


def sha256_of(text: str) -> str:
    """The checksum recorded for a migration: SHA-256 of its UTF-8 text, in hexadecimal."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@attrs.frozen(kw_only=True)
class Migration:
    """One shipped migration: a package's numbered schema file for a store."""

    package: str
    version: int
    file: SchemaFile

    @property
    def sha256(self) -> str:
        """The checksum of the shipped text."""
        return sha256_of(self.file.text)

    @property
    def basename(self) -> str:
        """The file's own name (``004_spew_boost.sql``)."""
        return self.file.name.rpartition("/")[2]


@attrs.frozen(kw_only=True)
class AppliedMigration:
    """One entry of a connection's ``beds_schema_migrations``."""

    package: str
    version: int
    connection: str
    file: str
    sha256: str
    applied_at: str
    """ISO 8601, UTC."""
    applied_by: str
    """Who applied it: the operator's principal, or ``beds schema apply`` in development."""


@attrs.frozen(kw_only=True)
class PackageStatus:
    """One package's migrations on one connection."""

    package: str
    installed: int
    """The highest version recorded (0: none)."""
    required: int
    """The highest version shipped."""
    pending: tuple[Migration, ...]
    """Shipped migrations not recorded yet, in version order."""
    changed: tuple[str, ...] = ()
    """Recorded migrations whose shipped file differs: ``file: recorded …, shipped …``."""

    def as_json(self, connection: str) -> dict[str, object]:
        """The status as ``beds schema status --json`` prints it."""
        return {
            "connection": connection,
            "package": self.package,
            "installed": self.installed,
            "required": self.required,
            "pending": [m.basename for m in self.pending],
            "changed": list(self.changed),
        }

    def problem(self) -> str | None:
        """What the start-up check says about this package, ``None`` when it is up to date."""
        if not self.pending:
            return None
        names = ", ".join(m.basename for m in self.pending)
        return (
            f"package {self.package} needs version {self.required}, installed "
            f"{self.installed} (pending {names}): run beds schema migrate"
        )


@runtime_checkable
class MigrationStore(Protocol):
    """An adapter that records the migrations applied to its database.

    Both methods work whether or not the adapter was started (``beds schema apply`` and the
    migration ticket do not start it; the start-up check does).
    """

    async def read_migrations(self) -> list[AppliedMigration] | None:
        """Every recorded migration; ``None`` when the record does not exist yet."""

    async def apply_migration(self, file: SchemaFile, applied: AppliedMigration) -> None:
        """Run one migration file, then record it (a record already there is replaced).

        Raises:
            StoreError: the file failed (its details name the file and the statement); nothing
                is recorded.
        """

    def migration_store(self) -> MigrationStore | None:
        """The same database reached with the DBA's account (``migration_url``), not yet open.

        ``None``: the connection's table has no ``migration_url``. The migration ticket runs the
        files through it, never through the node's everyday account.
        """


class _Registry(Protocol):
    """What :func:`files_for` reads of a :class:`beds.registry.TemplateRegistry` (a layer up)."""

    @property
    def templates(self) -> Mapping[str, Template]: ...

    @property
    def schema(self) -> Mapping[str, Sequence[SchemaFile]]: ...


def files_for(registry: _Registry, connection: str) -> list[SchemaFile]:
    """The schema files a connection gets (``rel``, or ``rel.warehouse``).

    A package's files for a store (``schema/<store>/``) go to every connection of that store its
    templates use, and to the store's default connection when none of them names a database.
    """
    store = split_connection(connection)[0]
    targets: dict[str, set[str]] = {}
    for template in registry.templates.values():
        if template.store == store:
            targets.setdefault(_package_of(template), set()).add(template.connection)
    return [
        file
        for file in registry.schema.get(store, [])
        if connection in targets.get(package_of_file(file), {store})
    ]


def _package_of(template: Template) -> str:
    # beds.provision.needs.package_of, imported late: needs imports the template model.
    from beds.provision.needs import package_of

    return package_of(template)


def plan_migrations(
    files: Sequence[SchemaFile], applied: Sequence[AppliedMigration]
) -> list[PackageStatus]:
    """Each package's status on a connection: shipped ``files`` against the ``applied`` record.

    Packages are in name order; a package recorded but no longer shipped is left out.
    """
    shipped: dict[str, list[Migration]] = {}
    for file in files:
        version = migration_version(file.name)
        if version is None:  # the registry refuses such files; a hand-made list may hold one
            raise TemplateError(
                "a schema file's name must start with its migration version", template=file.name
            )
        package = package_of_file(file)
        shipped.setdefault(package, []).append(
            Migration(package=package, version=version, file=file)
        )
    recorded: dict[tuple[str, int], AppliedMigration] = {
        (entry.package, entry.version): entry for entry in applied
    }
    statuses = []
    for package, migrations in sorted(shipped.items()):
        migrations.sort(key=lambda m: m.version)
        pending = tuple(m for m in migrations if (package, m.version) not in recorded)
        changed = tuple(
            f"{m.basename}: recorded {entry.sha256[:12]}, shipped {m.sha256[:12]}"
            for m in migrations
            if (entry := recorded.get((package, m.version))) is not None
            and entry.sha256 != m.sha256
        )
        versions = [entry.version for (name, _), entry in recorded.items() if name == package]
        statuses.append(
            PackageStatus(
                package=package,
                installed=max(versions, default=0),
                required=migrations[-1].version,
                pending=pending,
                changed=changed,
            )
        )
    return statuses


def changed_error(connection: str, statuses: Sequence[PackageStatus]) -> Conflict | None:
    """The refusal of ``migrate`` when a recorded migration was edited after it shipped."""
    changed = [f"{s.package} {line}" for s in statuses for line in s.changed]
    if not changed:
        return None
    return Conflict(
        f"a migration recorded on {connection} differs from the shipped file: a shipped "
        "migration must never be edited (ship the change as the next numbered file)",
        details=tuple(changed),
    )


async def run_migrations(
    store: MigrationStore,
    connection: str,
    files: Sequence[SchemaFile],
    *,
    applied_by: str,
    strict: bool,
    on_applied: Callable[[AppliedMigration], None] | None = None,
    on_changed: Callable[[str], None] | None = None,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    limit: int | None = None,
) -> list[AppliedMigration]:
    """Apply the connection's pending migrations in version order, recording each one.

    Args:
        store: the connection's adapter (the DBA's connection).
        connection: its name (``rel``, ``rel.warehouse``), recorded with each migration.
        files: the connection's shipped files (:func:`files_for`).
        applied_by: recorded with each migration.
        strict: refuse to run when a recorded migration's checksum differs (``migrate``);
            else each difference is passed to ``on_changed`` and the run goes on (development).
        on_applied: told of each migration once it is recorded.
        on_changed: told of each edited migration when not ``strict``.
        now: the clock (tests).
        limit: apply at most this many (the ticket: one per step); ``None``: every pending one.

    Returns:
        The migrations applied, in order.

    Raises:
        Conflict: ``strict`` and a recorded migration was edited; nothing is applied.
        StoreError: a migration failed; the ones before it are recorded.
    """
    statuses = plan_migrations(files, await store.read_migrations() or [])
    refused = changed_error(connection, statuses)
    if refused is not None:
        if strict:
            raise refused
        if on_changed is not None:
            for detail in refused.details:
                on_changed(detail)
    # Packages in name order, each one's files in version order: one package never waits on
    # another's numbering.
    done: list[AppliedMigration] = []
    pending = [migration for status in statuses for migration in status.pending]
    for migration in pending if limit is None else pending[:limit]:
        entry = AppliedMigration(
            package=migration.package,
            version=migration.version,
            connection=connection,
            file=migration.file.name,
            sha256=migration.sha256,
            applied_at=now().isoformat(timespec="microseconds"),
            applied_by=applied_by,
        )
        await store.apply_migration(migration.file, entry)
        done.append(entry)
        if on_applied is not None:
            on_applied(entry)
    return done
