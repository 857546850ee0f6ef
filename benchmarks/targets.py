"""The performance issue's targets (issue 19), each with its value, goal and pass/miss.

Every target is computed from one run's results (ratios of scenarios measured side by side, or
records per second), at 16 in flight for the single-record paths and at the best point of the
batched ones (stated in the row). A target whose scenarios did not run is "not run", never a
pass. Modules that measure outside the scenario table (``workers``, ``failover``, ``http``)
add rows of the same shape under ``results[<name>]["targets"]``.
"""

from __future__ import annotations

from typing import Any

__all__ = ("evaluate", "markdown_rows", "print_targets")

AT = "16"
"""Where the single-record ratios are taken: 16 requests in flight."""
BATCHED = "_batched"

# name, numerator, denominator, goal (ratio at least), what the denominator is
_RATIOS = (
    ("ping / batched AMQP echo", "beds_ping", "amqp_echo" + BATCHED, 0.85),
    ("REL fetch / batched pipeline", "beds_rel_fetch", "pipe_rel_fetch" + BATCHED, 0.85),
    (
        "REL keyed create / batched pipeline create",
        "beds_rel_create",
        "pipe_rel_create" + BATCHED,
        0.80,
    ),
    (
        "REC keyed+audited create / batched pipeline create",
        "beds_rec_create",
        "pipe_rec_create" + BATCHED,
        0.75,
    ),
)
# name, scenario, goal (records per second at least)
_RECORDS = (
    ("REL records created per second (create_many)", "beds_rel_create_many", 40_000.0),
    ("REL records fetched per second (fetch_many)", "beds_rel_fetch_many", 100_000.0),
)


def _rps(results: dict[str, Any], key: str, at: str = AT) -> float | None:
    point = results.get("scenarios", {}).get(key, {}).get("points", {}).get(at)
    value = point.get("rps") if point else None
    return float(value) if value else None


def _best(results: dict[str, Any], key: str, metric: str) -> tuple[float, str] | None:
    """The best point of a batched scenario: (value, messages in flight)."""
    points = results.get("scenarios", {}).get(key, {}).get("points", {})
    measured = [(float(p[metric]), at) for at, p in points.items() if p.get(metric)]
    return max(measured) if measured else None


def _row(
    name: str, value: float | None, goal: float, *, at_most: bool = False, where: str = ""
) -> dict[str, Any]:
    met = None if value is None else (value <= goal if at_most else value >= goal)
    return {
        "name": name,
        "value": value,
        "target": goal,
        "comparison": "<=" if at_most else ">=",
        "met": met,
        "note": where,
    }


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the issue, in its order, then the measuring modules' own."""
    rows: list[dict[str, Any]] = []
    for name, top, bottom, goal in _RATIOS:
        a, b = _rps(results, top), _rps(results, bottom)
        value = round(a / b, 3) if a and b else None
        rows.append(_row(name, value, goal, where=f"{top} / {bottom} at {AT} in flight"))
    on, off = _rps(results, "beds_rel_fetch"), _rps(results, "beds_rel_fetch_nolineage")
    cost = round(1 - on / off, 3) if on and off else None
    rows.append(
        _row(
            "lineage cost (1 - REL fetch lineage on / off)",
            cost,
            0.05,
            at_most=True,
            where=f"beds_rel_fetch / beds_rel_fetch_nolineage at {AT} in flight",
        )
    )
    for name, key, goal in _RECORDS:
        best = _best(results, key, "records_per_s")
        rows.append(
            _row(
                name,
                best[0] if best else None,
                goal,
                where=f"{key}, best point ({best[1]} messages in flight)" if best else key,
            )
        )
    many = _best(results, "beds_rec_create_many", "records_per_s")
    single = _rps(results, "beds_rec_create")
    rows.append(
        _row(
            "REC create_many records/s / REC create req/s",
            round(many[0] / single, 2) if many and single else None,
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


def _verdict(row: dict[str, Any]) -> str:
    return {True: "pass", False: "MISS", None: "not run"}[row["met"]]


def print_targets(rows: list[dict[str, Any]]) -> None:
    """The targets table on stdout, after the scenario table."""
    print(f"\n{'target':<56}{'value':>10}  {'goal':<12}verdict")
    for row in rows:
        goal = f"{row['comparison']} {row['target']:g}" if row["target"] is not None else "-"
        print(f"{row['name']:<56}{_value(row):>10}  {goal:<12}{_verdict(row)}")


def markdown_rows(rows: list[dict[str, Any]]) -> list[str]:
    """The targets as a Markdown table (results.md)."""
    lines = [
        "| target | value | goal | verdict | measured as / bound |",
        "|---|---:|---|---|---|",
    ]
    for row in rows:
        goal = f"{row['comparison']} {row['target']:g}" if row["target"] is not None else "-"
        lines.append(
            f"| {row['name']} | {_value(row)} | {goal} | {_verdict(row)} | {row.get('note', '')} |"
        )
    return lines
