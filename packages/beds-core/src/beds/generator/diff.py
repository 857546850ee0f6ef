"""A generated package on disk against a description: the plan, its diff, and writing it.

:func:`plan` reads the package's lock (if any), generates, and compares with the files on disk:
which files are new, changed or no longer generated. :func:`write` applies a plan through a
temporary directory beside the package, so a failure leaves the package as it was: a first
generation appears whole (one rename), and a later one moves each file into place only once
every file is written.
"""

from __future__ import annotations

import difflib
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import orjson

from beds.generator.description import DescriptionError
from beds.generator.migration import previous_domain
from beds.generator.package import LOCK_FILE, generate

if TYPE_CHECKING:
    from beds.generator.model import Domain

__all__ = ("Plan", "plan", "write")


@attrs.frozen
class Plan:
    """What generating ``domain`` into ``root`` changes."""

    root: Path
    files: dict[str, bytes]
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    existing: bool
    """The package existed (it has a lock file)."""

    @property
    def up_to_date(self) -> bool:
        """Nothing would change."""
        return not (self.added or self.changed or self.removed)

    @property
    def migrations(self) -> tuple[str, ...]:
        """The new schema migration files."""
        return tuple(p for p in self.added if "/schema/" in p)

    def diff(self) -> str:
        """A unified diff of every file the plan writes or removes."""
        chunks: list[str] = []
        for path in sorted((*self.added, *self.changed, *self.removed)):
            old = _text(self.root / path) if path not in self.added else []
            new = _lines(self.files[path]) if path in self.files else []
            chunks += difflib.unified_diff(
                old,
                new,
                fromfile=f"a/{path}" if path not in self.added else "/dev/null",
                tofile=f"b/{path}" if path not in self.removed else "/dev/null",
            )
        return "".join(chunks)


def _lines(data: bytes) -> list[str]:
    return data.decode("utf-8", "replace").splitlines(keepends=True)


def _text(path: Path) -> list[str]:
    try:
        return _lines(path.read_bytes())
    except OSError:
        return []


def read_lock(root: Path) -> dict[str, Any] | None:
    """The package's lock, or ``None`` when there is no package at ``root``.

    Raises:
        DescriptionError: the lock exists but cannot be read.
    """
    path = root / LOCK_FILE
    if not path.exists():
        return None
    try:
        lock = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise DescriptionError(f"cannot be read ({exc})", file=str(path)) from None
    if not isinstance(lock, dict):
        raise DescriptionError("is not a lock file", file=str(path))
    return lock


def _generated_by(domain: Domain) -> set[str]:
    """The files of a domain's entities that a later generation may remove."""
    src = f"src/{domain.package}"
    out: set[str] = set()
    for entity in domain.entities:
        name = domain.template_name(entity)
        out |= {f"{src}/templates/{name}.toml", f"docs/{name}.md"}
    return out


def plan(domain: Domain, root: Path) -> Plan:
    """Compare what ``domain`` generates with the package at ``root``.

    Raises:
        DescriptionError: the lock is unreadable, or the change cannot be migrated; or
            ``root`` holds files but no lock (not a generated package).
    """
    lock = read_lock(root)
    if lock is None and root.exists() and any(root.iterdir()):
        raise DescriptionError(
            f"{root} exists and is not a generated package (no {LOCK_FILE}); choose an empty"
            " or new --out directory"
        )
    files = generate(domain, lock)
    added: list[str] = []
    changed: list[str] = []
    for path, data in files.items():
        target = root / path
        if not target.exists():
            added.append(path)
        elif target.read_bytes() != data:
            changed.append(path)
    removed: list[str] = []
    if lock is not None:
        stale = _generated_by(previous_domain(lock)) - set(files)
        removed = sorted(p for p in stale if (root / p).exists())
    return Plan(
        root=root,
        files=files,
        added=tuple(added),
        changed=tuple(changed),
        removed=tuple(removed),
        existing=lock is not None,
    )


def write(plan: Plan) -> None:
    """Apply ``plan``: every file is written to a temporary directory first.

    Raises:
        OSError: the directory cannot be written (the package is left as it was, unless the
            failure is in the final moves).
    """
    root = plan.root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        for path in (*plan.added, *plan.changed):
            target = staging / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(plan.files[path])
        if not root.exists():
            os.replace(staging, root)
            return
        # The lock last: an interrupted move leaves the old lock, so the next run redoes it.
        ordered = sorted((*plan.added, *plan.changed), key=lambda p: (p == LOCK_FILE, p))
        for path in ordered:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / path, root / path)
        for path in plan.removed:
            (root / path).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
