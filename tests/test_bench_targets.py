"""The benchmark's targets table (``benchmarks/targets.py``) from synthetic results.

No benchmark runs here: each test builds a ``results.json``-shaped dict by hand and checks the
rows the suite would print (verdicts, ratio arithmetic, best points, guarantee-cost rows).
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import targets


def _results(
    rps: dict[str, float] | None = None,
    records: dict[str, dict[str, float]] | None = None,
    **modules: Any,
) -> dict[str, Any]:
    """Scenarios with a 16-in-flight req/s each, and batch scenarios' records/s by point."""
    scenarios: dict[str, Any] = {}
    for key, value in (rps or {}).items():
        scenarios[key] = {"points": {"1": {"rps": value / 3}, "16": {"rps": value}}}
    for key, points in (records or {}).items():
        scenarios[key] = {
            "points": {at: {"rps": v / 500, "records_per_s": v} for at, v in points.items()}
        }
    return {"scenarios": scenarios, **modules}


def _row(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [row for row in rows if row["name"] == name]
    assert len(found) == 1, [row["name"] for row in rows]
    return found[0]


PING = "ping / batched AMQP echo"
REL_CREATE = "REL keyed create / batched pipeline create"
LINEAGE = "lineage cost (1 - REL fetch lineage on / off)"
CREATE_MANY = "REL records created per second (create_many)"


def test_nothing_run_is_not_run_never_a_pass() -> None:
    rows = targets.evaluate({"scenarios": {}})
    assert rows, "the issue's targets are listed even when nothing ran"
    assert {targets.verdict(row) for row in rows} == {"not run"}
    assert all(row["value"] is None and row["met"] is None for row in rows)


def test_a_ratio_passes_at_its_goal_and_misses_below() -> None:
    passing = targets.evaluate(_results({"beds_ping": 850.0, "amqp_echo_batched": 1000.0}))
    row = _row(passing, PING)
    assert row["value"] == pytest.approx(0.85)
    assert row["comparison"] == ">="
    assert targets.verdict(row) == "pass"
    missing = targets.evaluate(_results({"beds_ping": 849.0, "amqp_echo_batched": 1000.0}))
    assert targets.verdict(_row(missing, PING)) == "MISS"


def test_a_ratio_is_taken_at_16_in_flight() -> None:
    results = _results({"beds_rel_create": 400.0, "pipe_rel_create_batched": 1000.0})
    # Other points, far better, do not count.
    results["scenarios"]["beds_rel_create"]["points"]["128"] = {"rps": 5000.0}
    row = _row(targets.evaluate(results), REL_CREATE)
    assert row["value"] == pytest.approx(0.4)
    assert targets.verdict(row) == "MISS"
    assert "at 16 in flight" in row["note"]


def test_a_ratio_with_one_side_missing_is_not_run() -> None:
    row = _row(targets.evaluate(_results({"beds_ping": 900.0})), PING)
    assert row["value"] is None
    assert targets.verdict(row) == "not run"


def test_an_at_most_row_passes_below_its_goal() -> None:
    cheap = _results({"beds_rel_fetch": 960.0, "beds_rel_fetch_nolineage": 1000.0})
    row = _row(targets.evaluate(cheap), LINEAGE)
    assert row["comparison"] == "<="
    assert row["value"] == pytest.approx(0.04)
    assert targets.verdict(row) == "pass"
    dear = _results({"beds_rel_fetch": 900.0, "beds_rel_fetch_nolineage": 1000.0})
    row = _row(targets.evaluate(dear), LINEAGE)
    assert row["value"] == pytest.approx(0.1)
    assert targets.verdict(row) == "MISS"


def test_a_batched_target_takes_the_best_point() -> None:
    results = _results(records={"beds_rel_create_many": {"1": 9000.0, "4": 41000.0, "16": 30000.0}})
    row = _row(targets.evaluate(results), CREATE_MANY)
    assert row["value"] == 41000.0
    assert targets.verdict(row) == "pass"
    assert "(4 messages in flight)" in row["note"]
    worse = _results(records={"beds_rel_create_many": {"1": 9000.0, "16": 39999.0}})
    assert targets.verdict(_row(targets.evaluate(worse), CREATE_MANY)) == "MISS"


def test_the_rec_batch_ratio_divides_its_best_point_by_the_single_rate() -> None:
    results = _results(
        {"beds_rec_create": 150.0}, records={"beds_rec_create_many": {"1": 900.0, "16": 1600.0}}
    )
    row = _row(targets.evaluate(results), "REC create_many records/s / REC create req/s")
    assert row["value"] == pytest.approx(10.67)
    assert targets.verdict(row) == "pass"


def test_a_row_with_a_value_and_no_goal_is_measured() -> None:
    results = _results(
        {"beds_rel_create_unkeyed": 700.0, "pipe_rel_create_batched": 1000.0},
        workers={
            "targets": [
                {
                    "name": "rel_fetch c=16: 2 workers / 1 worker req/s",
                    "value": 1.3,
                    "target": None,
                    "comparison": ">=",
                    "met": None,
                    "note": "",
                }
            ]
        },
    )
    rows = targets.evaluate(results)
    cost = _row(rows, targets.COST + "REL create, no idempotency key / batched pipeline create")
    assert cost["target"] is None
    assert cost["value"] == pytest.approx(0.7)
    assert targets.verdict(cost) == "measured"
    assert targets.verdict(_row(rows, "rel_fetch c=16: 2 workers / 1 worker req/s")) == "measured"
    assert "-" in targets.markdown_rows([cost])[-1].split("|")[3]


def test_each_ratio_target_is_followed_by_its_guarantee_costs() -> None:
    rows = targets.evaluate({"scenarios": {}})
    names = [row["name"] for row in rows]
    after = {
        PING: ("beds_ping", "amqp_echo_confirmed_batched"),
        REL_CREATE: ("beds_rel_create_unkeyed", "pipe_rel_create_batched"),
        "REC keyed+audited create / batched pipeline create": (
            "beds_rec_create_unaudited",
            "pipe_rec_create_batched",
        ),
    }
    for target, (top, bottom) in after.items():
        start = names.index(target) + 1
        costs = []
        for row in rows[start:]:
            if row["kind"] != "guarantee cost":
                break
            costs.append(row)
        assert any(f"{top} / {bottom}" in row["note"] for row in costs), (target, costs)
    # The issue's own rows keep their goals.
    goals = {row["name"]: row["target"] for row in rows if row["kind"] == "target"}
    assert goals[PING] == 0.85
    assert goals["REL fetch / batched pipeline"] == 0.85
    assert goals[REL_CREATE] == 0.80
    assert goals["REC keyed+audited create / batched pipeline create"] == 0.75


def test_a_guarantee_cost_row_states_the_price_in_the_same_run() -> None:
    results = _results(
        {
            "beds_rel_create": 400.0,
            "beds_rel_create_unkeyed": 800.0,
            "pipe_rel_create_batched": 1000.0,
            "beds_ping": 600.0,
            "amqp_echo_batched": 1000.0,
            "amqp_echo_confirmed_batched": 750.0,
        }
    )
    rows = targets.evaluate(results)
    rel = _row(rows, targets.COST + "REL create, no idempotency key / batched pipeline create")
    assert rel["value"] == pytest.approx(0.8)
    assert "beds_rel_create / beds_rel_create_unkeyed = 0.5" in rel["note"]
    ping = _row(rows, targets.COST + "ping / batched confirmed echo (publishing as BedsClient)")
    assert ping["value"] == pytest.approx(0.8)
    assert "amqp_echo_confirmed_batched / amqp_echo_batched = 0.75" in ping["note"]


def test_the_mariadb_only_ceiling_row_follows_its_batch_target() -> None:
    results = _results(
        records={
            "beds_rel_create_many": {"1": 10000.0, "16": 20000.0},
            "db_rel_create_many": {"1": 50000.0, "4": 65000.0, "16": 60000.0},
        }
    )
    rows = targets.evaluate(results)
    names = [row["name"] for row in rows]
    ceiling = _row(rows, "REL create_many / MariaDB-only create_many")
    assert names.index(ceiling["name"]) == names.index(CREATE_MANY) + 1
    assert ceiling["value"] == pytest.approx(20000 / 65000, abs=1e-3)
    assert targets.verdict(ceiling) == "measured"
    assert "65,000 records/s at 4 calls in flight" in ceiling["note"]
    fetch = _row(rows, "REL fetch_many / MariaDB-only fetch_many")
    assert targets.verdict(fetch) == "not run"


def test_the_tables_show_every_row_with_its_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    rows = targets.evaluate(_results({"beds_ping": 900.0, "amqp_echo_batched": 1000.0}))
    lines = targets.markdown_rows(rows)
    assert len(lines) == len(rows) + 2
    assert "| ping / batched AMQP echo | 0.9 | >= 0.85 | pass |" in lines[2]
    targets.print_targets(rows)
    printed = capsys.readouterr().out.splitlines()
    assert printed[2].startswith(PING)
    assert printed[2].rstrip().endswith("pass")
    assert sum(line.rstrip().endswith("not run") for line in printed) == len(rows) - 1
