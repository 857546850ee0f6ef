"""Parse a template's ``[batch]`` table: its batch operations' size limit and atomicity."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from beds.config.model import MAX_BATCH_RECORDS
from beds.templates.model import BatchSettings

if TYPE_CHECKING:
    from collections.abc import Mapping

    from beds.envelopes import Operation
    from beds.templates.model import OperationSpec
    from beds.templates.reader import Reader

__all__ = ("parse_batch",)

_KEYS = frozenset({"max_records", "atomic"})


def parse_batch(
    r: Reader, raw: Mapping[str, Any], operations: Mapping[Operation, OperationSpec]
) -> BatchSettings:
    """Read ``[batch]`` (absent: the defaults).

    Raises:
        TemplateError: an unknown key or a bad value, naming ``batch.<key>``.
    """
    for name in sorted(set(raw) - _KEYS):
        raise r.fail(f"batch.{name}", "is not a batch setting (max_records, atomic)")
    limit = raw.get("max_records")
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_BATCH_RECORDS
    ):
        raise r.fail("batch.max_records", f"must be an integer from 1 to {MAX_BATCH_RECORDS}")
    atomic = r.boolean(raw, "atomic", "batch.atomic", False)
    if atomic and not operations:
        raise r.fail("batch.atomic", "is set on a template without writes")
    return BatchSettings(max_records=limit, atomic=atomic)
