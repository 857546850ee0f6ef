"""The performance issue's targets (issue 19), each with its value, goal and verdict.

Every target is computed from one run's results (ratios of scenarios measured side by side, or
records per second), at 16 in flight for the single-record paths and at the best point of the
batched ones (stated in the row). A row's verdict is ``pass`` or ``MISS`` against its goal,
``measured`` when it has a value and no goal, and ``not run`` when a scenario it needs did not
run (never a pass).

The issue keeps every guarantee on in the targets' paths and asks, where the reference pipeline
lacks a guarantee BEDS keeps, for its measured cost: after each ratio target come its
"guarantee cost" rows (no goal), measured in the same run, in which either the same BEDS path
runs with that guarantee off (no idempotency key, audit off, lineage off) or the ceiling runs
with the client's guarantees on (the echo publishing as ``BedsClient`` does: publisher
confirms and ``mandatory``). The batched REL rows are followed by the MariaDB-only ceiling of
the same work. Modules that measure outside the scenario table (``workers``, ``failover``,
``http``) add rows of the same shape under ``results[<name>]["targets"]``.
"""

from __future__ import annotations

from typing import Any

__all__ = ("evaluate", "markdown_rows", "print_targets", "target_row", "verdict")

AT = "16"
"""Where the single-record ratios are taken: 16 requests in flight."""
BATCHED = "_batched"
COST = "guarantee cost: "
"""The name prefix of a guarantee-cost row."""

# name, numerator, denominator, what each guarantee-cost row divides
_Cost = tuple[str, str, str]
# name, numerator, denominator, goal (ratio at least), guarantee-cost rows
_RATIOS: tuple[tuple[str, str, str, float, tuple[_Cost, ...]], ...] = (
    (
        "ping / batched AMQP echo",
        "beds_ping",
        "amqp_echo" + BATCHED,
        0.85,
        (
            (
                "ping / batched confirmed echo (publishing as BedsClient)",
                "beds_ping",
                "amqp_echo_confirmed" + BATCHED,
            ),
            (
                "ping, lineage off / batched confirmed echo",
                "beds_ping_nolineage",
                "amqp_echo_confirmed" + BATCHED,
            ),
            (
                "ping / batched confirmed echo through a topic exchange (routed as BEDS routes)",
                "beds_ping",
                "amqp_echo_confirmed_topic" + BATCHED,
            ),
        ),
    ),
    (
        "REL fetch / batched pipeline",
        "beds_rel_fetch",
        "pipe_rel_fetch" + BATCHED,
        0.85,
        (
            (
                "REL fetch, lineage off / batched pipeline",
                "beds_rel_fetch_nolineage",
                "pipe_rel_fetch" + BATCHED,
            ),
        ),
    ),
    (
        "REL keyed create / batched pipeline create",
        "beds_rel_create",
        "pipe_rel_create" + BATCHED,
        0.80,
        (
            (
                "REL create, no idempotency key / batched pipeline create",
                "beds_rel_create_unkeyed",
                "pipe_rel_create" + BATCHED,
            ),
        ),
    ),
    (
        "REC keyed+audited create / batched pipeline create",
        "beds_rec_create",
        "pipe_rec_create" + BATCHED,
        0.75,
        (
            (
                "REC create, no key, audited / batched pipeline create",
                "beds_rec_create_unkeyed",
                "pipe_rec_create" + BATCHED,
            ),
            (
                "REC create, no key, audit off / batched pipeline create",
                "beds_rec_create_unaudited",
                "pipe_rec_create" + BATCHED,
            ),
        ),
    ),
)
# name, scenario, goal (records per second at least), MariaDB-only ceiling of the same work
_RECORDS = (
    (
        "REL records created per second (create_many)",
        "beds_rel_create_many",
        40_000.0,
        "db_rel_create_many",
    ),
    (
        "REL records fetched per second (fetch_many)",
        "beds_rel_fetch_many",
        100_000.0,
        "db_rel_fetch_many",
    ),
)
_CEILING = {
    "db_rel_create_many": "REL create_many / MariaDB-only create_many",
    "db_rel_fetch_many": "REL fetch_many / MariaDB-only fetch_many",
}


def _rps(results: dict[str, Any], key: str, at: str = AT) -> float | None:
    point = results.get("scenarios", {}).get(key, {}).get("points", {}).get(at)
    value = point.get("rps") if point else None
    return float(value) if value else None


def _best(results: dict[str, Any], key: str, metric: str) -> tuple[float, str] | None:
    """The best point of a batched scenario: (value, messages in flight)."""
    points = results.get("scenarios", {}).get(key, {}).get("points", {})
    measured = [(float(p[metric]), at) for at, p in points.items() if p.get(metric)]
    return max(measured) if measured else None


def target_row(
    name: str,
    value: float | None,
    goal: float | None,
    *,
    at_most: bool = False,
    where: str = "",
    kind: str = "target",
) -> dict[str, Any]:
    """One row; ``met`` is None when there is no value or no goal (``verdict`` tells which)."""
    met = None
    if value is not None and goal is not None:
        met = value <= goal if at_most else value >= goal
    return {
        "name": name,
        "value": value,
        "target": goal,
        "comparison": "<=" if at_most else ">=",
        "met": met,
        "note": where,
        "kind": kind,
    }


def _ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    return round(a / b, digits) if a and b else None


def _price(results: dict[str, Any], target: tuple[str, str], cost: tuple[str, str]) -> str:
    """What the guarantee costs, in the cost row's note: the target's path over the same path
    with the guarantee off, or the ceiling with the guarantees on over the target's ceiling."""
    (top, bottom), (cost_top, cost_bottom) = target, cost
    parts = []
    if cost_top != top:
        value = _ratio(_rps(results, top), _rps(results, cost_top))
        parts.append(f"{top} / {cost_top} = {'-' if value is None else f'{value:.3g}'}")
    if cost_bottom != bottom:
        value = _ratio(_rps(results, cost_bottom), _rps(results, bottom))
        parts.append(f"{cost_bottom} / {bottom} = {'-' if value is None else f'{value:.3g}'}")
    return "; ".join(parts)


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the issue, in its order (each ratio followed by its guarantee-cost
    rows, each batched REL row by its MariaDB-only ceiling), then the measuring modules' own."""
    rows: list[dict[str, Any]] = []
    for name, top, bottom, goal, costs in _RATIOS:
        value = _ratio(_rps(results, top), _rps(results, bottom))
        rows.append(target_row(name, value, goal, where=f"{top} / {bottom} at {AT} in flight"))
        for cost_name, cost_top, cost_bottom in costs:
            price = _price(results, (top, bottom), (cost_top, cost_bottom))
            rows.append(
                target_row(
                    COST + cost_name,
                    _ratio(_rps(results, cost_top), _rps(results, cost_bottom)),
                    None,
                    where=f"{cost_top} / {cost_bottom} at {AT} in flight; {price}",
                    kind="guarantee cost",
                )
            )
    on, off = _rps(results, "beds_rel_fetch"), _rps(results, "beds_rel_fetch_nolineage")
    cost = round(1 - on / off, 3) if on and off else None
    rows.append(
        target_row(
            "lineage cost (1 - REL fetch lineage on / off)",
            cost,
            0.05,
            at_most=True,
            where=f"beds_rel_fetch / beds_rel_fetch_nolineage at {AT} in flight",
        )
    )
    for name, key, goal, ceiling in _RECORDS:
        best = _best(results, key, "records_per_s")
        rows.append(
            target_row(
                name,
                best[0] if best else None,
                goal,
                where=f"{key}, best point ({best[1]} messages in flight)" if best else key,
            )
        )
        alone = _best(results, ceiling, "records_per_s")
        rows.append(
            target_row(
                _CEILING[ceiling],
                _ratio(best[0] if best else None, alone[0] if alone else None),
                None,
                where=f"{key} best point / {ceiling} best point"
                + (f" ({alone[0]:,.0f} records/s at {alone[1]} calls in flight)" if alone else ""),
                kind="ceiling",
            )
        )
    many = _best(results, "beds_rec_create_many", "records_per_s")
    single = _rps(results, "beds_rec_create")
    rows.append(
        target_row(
            "REC create_many records/s / REC create req/s",
            _ratio(many[0] if many else None, single, 2),
            10.0,
            where=f"beds_rec_create_many best point / beds_rec_create at {AT}",
        )
    )
    for module in ("workers", "failover", "http"):
        rows += [dict(row) for row in results.get(module, {}).get("targets", [])]
    return rows


def _value(row: dict[str, Any]) -> str:
    value = row["value"]
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def verdict(row: dict[str, Any]) -> str:
    """``pass`` or ``MISS`` against the goal; ``measured`` (a value, no goal); ``not run``."""
    if row["value"] is None:
        return "not run"
    if row.get("target") is None:
        return "measured"
    if row["met"] is None:  # a module's row with a goal and no verdict of its own
        at_most = row.get("comparison") == "<="
        return (
            "pass"
            if (row["value"] <= row["target"] if at_most else row["value"] >= row["target"])
            else "MISS"
        )
    return "pass" if row["met"] else "MISS"


def _goal(row: dict[str, Any]) -> str:
    return f"{row['comparison']} {row['target']:g}" if row.get("target") is not None else "-"


def print_targets(rows: list[dict[str, Any]]) -> None:
    """The targets table on stdout, after the scenario table."""
    names = [("  " if row.get("kind", "target") != "target" else "") + row["name"] for row in rows]
    width = max([56, *(len(name) + 2 for name in names)])
    print(f"\n{'target':<{width}}{'value':>10}  {'goal':<12}verdict")
    for name, row in zip(names, rows, strict=True):
        print(f"{name:<{width}}{_value(row):>10}  {_goal(row):<12}{verdict(row)}")


def markdown_rows(rows: list[dict[str, Any]]) -> list[str]:
    """The targets as a Markdown table (results.md)."""
    lines = [
        "| target | value | goal | verdict | measured as / bound |",
        "|---|---:|---|---|---|",
    ]
    for row in rows:
        name = row["name"] if row.get("kind", "target") == "target" else f"↳ {row['name']}"
        lines.append(
            f"| {name} | {_value(row)} | {_goal(row)} | {verdict(row)} | {row.get('note', '')} |"
        )
    return lines
