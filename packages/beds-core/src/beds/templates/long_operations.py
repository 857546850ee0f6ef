"""Parse a template's ``[long_operations.<name>]`` tables (CALGON, docs/calgon.md).

```toml
[long_operations.stats]
description = "Posts per author per day"
steps = 4                 # the store object runs once per step, 0 … 3 (0: until a step
                          # returns no record, for batched work of unknown size)
step_timeout = 120        # seconds one step may take
procedure = "spp_stats"   # REL; REC gives a pipeline (store keys, the adapter checks them)
[long_operations.stats.params.days]
type = "int"
default = 30
minimum = 1
```

Params are declared like fields (type, constraints) with a ``default``; ``step`` and ``steps``
are BEDS's own (every step receives them), so they cannot be params.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from beds.templates.model import FieldSpec, LongOperation, LongParam
from beds.templates.reader import binding
from beds.templates.validate import check_value

if TYPE_CHECKING:
    from beds.templates.reader import Reader

__all__ = ("MAX_STEPS", "RESERVED_PARAMS", "parse_long_operations")

MAX_STEPS = 10_000
RESERVED_PARAMS = frozenset({"step", "steps"})
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_KEYS = frozenset({"description", "steps", "step_timeout", "params"})
_MAX_STEP_TIMEOUT = 86_400.0

FieldParser = Callable[["Reader", str, Any, str], FieldSpec]
"""Reads one field-like table at a key path (the loader's field parser)."""


def parse_long_operations(
    r: Reader, raw: Mapping[str, Any], parse_field: FieldParser
) -> dict[str, LongOperation]:
    """Read ``[long_operations]``.

    Raises:
        TemplateError: a bad name, step count, timeout, param or default, naming
            ``long_operations.<name>.<key>``.
    """
    operations: dict[str, LongOperation] = {}
    for name, table in raw.items():
        path = f"long_operations.{name}"
        if not isinstance(table, Mapping):
            raise r.fail(path, "must be a table")
        if not _NAME.fullmatch(name):
            raise r.fail(path, "name must be lower_snake_case")
        steps = table.get("steps", 1)
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_STEPS:
            raise r.fail(f"{path}.steps", f"must be an integer from 0 (until done) to {MAX_STEPS}")
        timeout = table.get("step_timeout", 300)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= _MAX_STEP_TIMEOUT
        ):
            raise r.fail(
                f"{path}.step_timeout", f"must be seconds, more than 0 and at most {86_400}"
            )
        operations[name] = LongOperation(
            name=name,
            params=_params(r, r.table(table, "params", f"{path}.params"), path, parse_field),
            steps=steps,
            step_timeout=float(timeout),
            description=r.string(table, "description", f"{path}.description", ""),
            binding=binding(table, _KEYS),
        )
    return operations


def _params(
    r: Reader, raw: Mapping[str, Any], path: str, parse_field: FieldParser
) -> dict[str, LongParam]:
    params: dict[str, LongParam] = {}
    for name, table in raw.items():
        param_path = f"{path}.params.{name}"
        if name in RESERVED_PARAMS:
            raise r.fail(param_path, "is given to every step by BEDS; choose another name")
        if not isinstance(table, Mapping):
            raise r.fail(param_path, "must be a table")
        declared = dict(table)
        default = declared.pop("default", None)
        spec = parse_field(r, name, declared, param_path)
        if spec.generated:
            raise r.fail(f"{param_path}.generated", "does not apply to a param")
        if default is not None:
            problems: list[str] = []
            check_value(spec, default, f"{param_path}.default", problems)
            if problems:
                raise r.fail(f"{param_path}.default", problems[0].split(": ", 1)[1])
        params[name] = LongParam(field=spec, default=default)
    return params
