"""Medians, ratios and target verdicts; the JSON, Markdown and PNG outputs."""

from __future__ import annotations

import json
import math
import statistics
from typing import TYPE_CHECKING, Any

from benchmarks import targets
from benchmarks.scenarios import GROUPS

if TYPE_CHECKING:
    from pathlib import Path

CONCURRENCIES = (1, 16, 128)
PIPELINE_PAIRS = [
    ("beds_rel_fetch", "pipe_rel_fetch"),
    ("beds_rel_create_unkeyed", "pipe_rel_create"),
    ("beds_rec_fetch", "pipe_rec_fetch"),
    ("beds_rec_create_unaudited", "pipe_rec_create"),
]
"""Like for like: the same store work on both sides (creates without an idempotency key, and
REC creates without the audit record ``spew_profile`` declares)."""
KEYED_PAIRS = [
    ("beds_rel_create", "pipe_rel_create"),
    ("beds_rec_create", "pipe_rec_create"),
    ("beds_rec_create_unkeyed", "pipe_rec_create"),
]
"""BedsClient's default keyed creates (three store calls against the pipeline's one) and the
audited REC create: more store work than the pipeline's (no target)."""
COST_PAIRS = [
    ("beds_rel_create", "beds_rel_create_unkeyed"),
    ("beds_rec_create", "beds_rec_create_unkeyed"),
    ("beds_rec_create_unkeyed", "beds_rec_create_unaudited"),
    ("beds_ping", "beds_ping_nolineage"),
    ("beds_rel_fetch", "beds_rel_fetch_nolineage"),
    ("beds_ping_uvloop", "beds_ping"),
    ("beds_rel_fetch_uvloop", "beds_rel_fetch"),
    ("beds_ping", "amqp_echo_confirmed_batched"),
    ("beds_ping", "amqp_echo_confirmed"),
    ("amqp_echo_confirmed_batched", "amqp_echo_batched"),
    ("amqp_echo_confirmed", "amqp_echo"),
    ("amqp_echo_confirmed_persistent_batched", "amqp_echo_confirmed_batched"),
]
"""What a feature costs or brings: idempotency keys, event lineage, uvloop, and the client's
publisher confirms and ``mandatory`` (and persistence) on the echo ceiling (no target)."""
BATCHED = "_batched"
"""The suffix of the batched AMQP ceiling and pipeline (``amqp_echo_batched``, ``pipe_*_batched``):
the best hand-written aiormq, which the targets are computed against. The unbatched ones (aiormq
as it comes) were the targets' denominators until BEDS passed them; their ratios are kept
without a target."""
BATCHING_PAIRS = [
    ("amqp_echo_batched", "amqp_echo"),
    *((pipe + BATCHED, pipe) for _, pipe in PIPELINE_PAIRS),
]
"""What batching brings hand-written aiormq (no target)."""
TLS_PAIRS = [
    ("beds_ping_tls", "beds_ping_spare"),
    ("beds_rel_fetch_tls", "beds_rel_fetch_spare"),
]
"""The same scenario over TLS (amqps and MariaDB over TLS) and in plaintext, on the same spare
servers, in the same run: the price of TLS alone (goal >= 0.85)."""
TLS_OTHER_PAIRS = [
    ("beds_ping_tls", "beds_ping"),
    ("beds_rel_fetch_tls", "beds_rel_fetch"),
    ("beds_ping_spare", "beds_ping"),
    ("beds_rel_fetch_spare", "beds_rel_fetch"),
    ("beds_ping_tls_uvloop", "beds_ping_spare_uvloop"),
    ("beds_rel_fetch_tls_uvloop", "beds_rel_fetch_spare_uvloop"),
    ("beds_ping_tls_uvloop", "beds_ping_tls"),
    ("beds_rel_fetch_tls_uvloop", "beds_rel_fetch_tls"),
]
"""TLS on the spare servers against plaintext on the machine's (TLS and the servers' differences
together), the spare servers against the machine's, TLS on uvloop, and what uvloop brings TLS
(no target)."""
PEER_PAIRS = [
    ("beds_ping", "faststream_echo"),
    ("beds_ping", "nameko_echo"),
    ("beds_rel_fetch", "faststream_rel_fetch"),
    ("beds_rel_fetch", "nameko_rel_fetch"),
]


def _median_cpu(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Median CPU microseconds per request of each process over the repeats."""
    roles = {role for run in runs for role in run.get("cpu_us", {})}
    return {
        role: round(statistics.median(r["cpu_us"][role] for r in runs if role in r["cpu_us"]), 1)
        for role in sorted(roles)
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Median of each point over its repeats (errors and requests are summed)."""
    points: dict[str, dict[str, Any]] = {}
    for concurrency in sorted({run["concurrency"] for run in runs}):
        mine = [run for run in runs if run["concurrency"] == concurrency]
        valid = [run for run in mine if run["requests"]]
        points[str(concurrency)] = {
            "rps": round(statistics.median(r["rps"] for r in mine), 1),
            "p50_ms": round(statistics.median(r["p50_ms"] for r in valid), 2) if valid else None,
            "p99_ms": round(statistics.median(r["p99_ms"] for r in valid), 2) if valid else None,
            "errors": sum(r["errors"] for r in mine),
            "requests": sum(r["requests"] for r in mine),
            "repeats": len(mine),
            "rps_runs": [r["rps"] for r in mine],
            "error_sample": next((r["error_sample"] for r in mine if r["error_sample"]), ""),
            "cpu_us": _median_cpu(mine),
        }
        for carried in ("records_per_s", "calls_per_s"):  # calls carrying many items
            if any(carried in run for run in mine):
                points[str(concurrency)][carried] = round(
                    statistics.median(r.get(carried, 0.0) for r in mine), 1
                )
    return points


def _point(results: dict[str, Any], key: str, concurrency: int) -> dict[str, Any] | None:
    scenario = results["scenarios"].get(key)
    if not scenario or "points" not in scenario:
        return None
    point: dict[str, Any] | None = scenario["points"].get(str(concurrency))
    return point


def _ratio(
    results: dict[str, Any], numerator: str, denominator: str, concurrency: int, metric: str
) -> float | None:
    top, bottom = _point(results, numerator, concurrency), _point(results, denominator, concurrency)
    if top is None or bottom is None or not top.get(metric) or not bottom.get(metric):
        return None
    return round(float(top[metric]) / float(bottom[metric]), 3)


def ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every BEDS/ceiling and BEDS/peer ratio, with its target where the issue sets one."""
    out: list[dict[str, Any]] = []

    def add(
        numerator: str,
        denominator: str,
        concurrency: int,
        target: float | None,
        metric: str = "rps",
        *,
        at_most: bool = False,
    ) -> None:
        value = _ratio(results, numerator, denominator, concurrency, metric)
        met = None
        if target is not None and value is not None:
            met = value <= target if at_most else value >= target
        out.append(
            {
                "numerator": numerator,
                "denominator": denominator,
                "concurrency": concurrency,
                "metric": metric,
                "value": value,
                "target": target,
                "comparison": "<=" if at_most else ">=",
                "met": met,
            }
        )

    for concurrency in CONCURRENCIES:
        targeted = concurrency in (16, 128)
        add("beds_ping", "amqp_echo" + BATCHED, concurrency, 0.90 if targeted else None)
        for beds, pipe in PIPELINE_PAIRS:
            add(beds, pipe + BATCHED, concurrency, 0.85 if targeted else None)
        for beds, peer in PEER_PAIRS:
            add(beds, peer, concurrency, 2.0 if targeted else None)
        for tls, plain in TLS_PAIRS:
            add(tls, plain, concurrency, 0.85 if targeted else None)
        for numerator, denominator in TLS_OTHER_PAIRS:
            add(numerator, denominator, concurrency, None)
        add("beds_ping", "amqp_echo", concurrency, None)
        for beds, pipe in PIPELINE_PAIRS:
            add(beds, pipe, concurrency, None)
        for beds, pipe in KEYED_PAIRS:
            add(beds, pipe + BATCHED, concurrency, None)
            add(beds, pipe, concurrency, None)
        for batched, unbatched in BATCHING_PAIRS:
            add(batched, unbatched, concurrency, None)
        for beds, pipe in PIPELINE_PAIRS:
            add(beds, pipe.replace("pipe_", "db_"), concurrency, None)
        add("beds_ping_raw", "amqp_echo", concurrency, None)
        add("beds_ping_raw_batched", "amqp_echo" + BATCHED, concurrency, None)
        add("beds_ping_uvloop", "amqp_echo_uvloop", concurrency, None)
        for numerator, denominator in COST_PAIRS:
            add(numerator, denominator, concurrency, None)
    for beds, pipe in PIPELINE_PAIRS:
        add(beds, pipe + BATCHED, 16, 1.5, "p99_ms", at_most=True)
    for beds, pipe in PIPELINE_PAIRS:
        add(beds, pipe, 16, None, "p99_ms")
    return out


def memory_verdict(memory: dict[str, Any]) -> bool | None:
    small, large = memory.get("rss_mib_after_small"), memory.get("rss_mib_after_large")
    if not small or not large:
        return None
    return bool(large <= small * 1.05)


# -- outputs -------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "-"}[met]


CPU_ROLES = ("client", "server", "rabbitmq", "mariadb", "secantusdb")


def _cpu_table(results: dict[str, Any], concurrency: str = "16") -> list[str]:
    """CPU microseconds per request by process, at one concurrency: where the time goes."""
    rows = [
        (key, scenario["points"][concurrency]["cpu_us"])
        for key, scenario in results["scenarios"].items()
        if concurrency in scenario.get("points", {})
        and scenario["points"][concurrency].get("cpu_us")
    ]
    if not rows:
        return []
    lines = [
        "",
        f"### CPU per request ({concurrency} in flight)",
        "",
        "Microseconds of CPU each process used per completed request (user + system, from "
        "`/proc`), median of the repeats. Every process shares the same cores, so a scenario's "
        "throughput is bounded by the sum.",
        "",
        "| scenario | " + " | ".join(CPU_ROLES) + " | sum |",
        "|---|" + "---:|" * (len(CPU_ROLES) + 1),
    ]
    for key, cpu in rows:
        cells = [_fmt(cpu[role], 0) if role in cpu else "-" for role in CPU_ROLES]
        lines.append(f"| `{key}` | " + " | ".join(cells) + f" | {_fmt(sum(cpu.values()), 0)} |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    lines: list[str] = []
    machine = results["machine"]
    settings = results["settings"]
    lines += [
        f"Measured {results['generated']} on {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['memory_gib']} GiB; {machine['python']}, RabbitMQ {machine['rabbitmq']}, "
        f"MariaDB {machine['mariadb']}, SecantusDB {machine['packages'].get('secantusdb')}. "
        f"Load average at start {machine['load_average_at_start']}, at end "
        f"{machine.get('load_average_at_end', '-')}."
        + (" **Quick smoke run: not representative.**" if results.get("quick") else ""),
        "",
        "Each point: up to "
        + ", ".join(
            f"{int(n):,} requests at {c} in flight"
            for c, n in settings["count_by_concurrency"].items()
        )
        + f", at most {settings['seconds']:g} s; median of {settings['repeats']} repeat(s)"
        + (
            f" in each of {settings['rounds']} rounds, pooled (the scenarios run in turn)"
            if settings.get("rounds", 1) > 1
            else ""
        )
        + ". "
        + "Layout: "
        + ", ".join(f"{k} {v}" for k, v in settings["layout"].items())
        + ".",
        "",
        "### Targets of the performance issue (pass/miss)",
        "",
        *targets.markdown_rows(results.get("targets") or targets.evaluate(results)),
        "",
        "![each target's value / goal, the goal at 1.0](targets.png)",
        "",
        "### Throughput and latency",
        "",
        "A call that carries many items (a batch message, a fan-out page) shows its items per "
        "second beside its calls per second.",
        "",
        "| scenario | in flight | req/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for group, title in GROUPS.items():
        for key, scenario in results["scenarios"].items():
            if scenario["group"] != group:
                continue
            name = f"{title.split(' ', 1)[-1]}: {scenario['label']}"
            if "error" in scenario:
                reason = scenario["error"].splitlines()[0][:160].replace("|", "\\|")
                lines.append(f"| {name} (`{key}`) | - | failed: {reason} | | | |")
                continue
            for concurrency, point in scenario["points"].items():
                carried = "".join(
                    f" ({_fmt(point[unit], 0)} {unit.split('_')[0]}/s)"
                    for unit in ("records_per_s", "calls_per_s")
                    if point.get(unit)
                )
                lines.append(
                    f"| {name} (`{key}`) | {concurrency} | {_fmt(point['rps'], 0)}{carried} | "
                    f"{_fmt(point['p50_ms'], 2)} | {_fmt(point['p99_ms'], 2)} | {point['errors']} |"
                )
    lines += _cpu_table(results)
    lines += [
        "",
        "### Targets",
        "",
        "| ratio | in flight | value | target | verdict |",
        "|---|---:|---:|---:|---|",
    ]
    for ratio in results["ratios"]:
        if ratio["target"] is None:
            continue
        what = "p99" if ratio["metric"] == "p99_ms" else "req/s"
        name = f"{what} `{ratio['numerator']}` / `{ratio['denominator']}`"
        lines.append(
            f"| {name} | {ratio['concurrency']} | {_fmt(ratio['value'], 2)} | "
            f"{ratio['comparison']} {ratio['target']:g} | {_verdict(ratio['met'])} |"
        )
    memory = results.get("memory", {})
    if memory.get("rss_mib_after_small"):
        lines.append(
            f"| node RSS after {memory['large']:,} / after {memory['small']:,} pings | - | "
            f"{_fmt(memory['rss_mib_after_large'] / memory['rss_mib_after_small'], 3)} | <= 1.05 | "
            f"{_verdict(memory_verdict(memory))} |"
        )
    lines += [
        "",
        "### Other ratios (no target)",
        "",
        "| ratio | in flight | value |",
        "|---|---:|---:|",
    ]
    for ratio in results["ratios"]:
        if ratio["target"] is None and ratio["value"] is not None:
            what = "p99 " if ratio["metric"] == "p99_ms" else ""
            lines.append(
                f"| {what}`{ratio['numerator']}` / `{ratio['denominator']}` | "
                f"{ratio['concurrency']} | {_fmt(ratio['value'], 2)} |"
            )
    if memory:
        lines += ["", "### Memory", ""]
        if memory.get("rss_mib_after_small"):
            lines.append(
                f"Resident memory of the `beds run` node: {memory['rss_mib_at_start']:.1f} MiB "
                f"after start-up, {memory['rss_mib_after_small']:.1f} MiB after "
                f"{memory['small']:,} pings, {memory['rss_mib_after_large']:.1f} MiB after "
                f"{memory['large']:,} ({memory['errors']} errors, {memory['rps']:,.0f} req/s at "
                f"{memory['concurrency']} in flight)."
            )
        else:
            lines.append(f"Not measured: {memory.get('skipped', memory.get('error', '?'))}.")
    notes = [
        f"- `{key}`: {scenario['note']}"
        for key, scenario in results["scenarios"].items()
        if scenario.get("note")
    ]
    if notes:
        lines += ["", "### Notes", "", *notes]
    profiles = results.get("profile") or {}
    if "top_self" in profiles:  # an older run: ping only
        profiles = {"ping": profiles}
    for operation, profile in profiles.items():
        if not profile.get("top_self"):
            continue
        what = operation.replace("_", " ") + (
            " (no idempotency key)" if "create" in operation else ""
        )
        lines += [
            "",
            f"### Where the node spends its time ({what}, 16 in flight, py-spy, "
            f"{profile['samples']:,} samples)",
            "",
        ]
        if profile.get("by_area"):
            lines += ["| self time in | share |", "|---|---:|"]
            lines += [f"| {row['frame']} | {row['share']:.1%} |" for row in profile["by_area"]]
            lines.append("")
        lines += ["| function (self time) | share |", "|---|---:|"]
        for row in profile["top_self"][:12]:
            lines.append(f"| `{row['frame']}` | {row['share']:.1%} |")
        lines += ["", "| function (including callees) | share |", "|---|---:|"]
        for row in profile["top_inclusive"][:12]:
            lines.append(f"| `{row['frame']}` | {row['share']:.1%} |")
    lines += ["", "![throughput and p99 against requests in flight](throughput.png)", ""]
    return "\n".join(lines)


def plot_targets(rows: list[dict[str, Any]], path: Path) -> None:
    """Each target with a goal as value / goal, a line at 1.0 (``targets.png``).

    A row compared with ``>=`` passes at or right of the line, one compared with ``<=`` at or
    left of it (marked in its label); a row not run is named with no bar. Rows with no goal
    (guarantee costs, ceilings, worker scaling) are in the table only.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    goals = [row for row in rows if row.get("target")]
    names, shares, colours = [], [], []
    for row in goals:
        at_most = row.get("comparison") == "<="
        names.append(row["name"] + (" (pass at or below 1)" if at_most else ""))
        value = row["value"]
        shares.append(math.nan if value is None else value / row["target"])
        colours.append({"pass": "tab:green", "MISS": "tab:red"}.get(targets.verdict(row), "grey"))
    height = max(2.5, 0.45 * len(goals) + 1.2)
    figure, axis = plt.subplots(figsize=(11, height))
    ys = list(range(len(goals)))[::-1]
    axis.barh(ys, [0 if math.isnan(v) else v for v in shares], color=colours)
    for y, share, row in zip(ys, shares, goals, strict=True):
        text = "not run" if math.isnan(share) else f"{share:.2f} ({targets.verdict(row)})"
        axis.text(0 if math.isnan(share) else max(share, 0), y, " " + text, va="center")
    axis.axvline(1.0, color="black", linewidth=1.2)
    axis.set_yticks(ys, names, fontsize=8)
    axis.set_xlabel("value / goal")
    axis.set_xlim(min([0.0, *(v for v in shares if not math.isnan(v))]), None)
    axis.set_title("Targets of the performance issue: value / goal (line: the goal)")
    axis.grid(True, axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(15, 6.5))
    colours = plt.get_cmap("tab20")
    styles = {
        "amqp": "-",
        "db": ":",
        "pipeline": "--",
        "beds": "-",
        "peer": "-.",
        "tls": "-",
        "diagnostic": ":",
    }
    markers = {
        "amqp": "s",
        "db": "x",
        "pipeline": "^",
        "beds": "o",
        "peer": "D",
        "tls": "P",
        "diagnostic": "v",
    }
    index = 0
    for key, scenario in results["scenarios"].items():
        if "points" not in scenario:
            continue
        xs = [int(c) for c in scenario["points"]]
        rps = [p["rps"] for p in scenario["points"].values()]
        p99 = [p["p99_ms"] or math.nan for p in scenario["points"].values()]
        style = {
            "linestyle": styles.get(scenario["group"], "-"),
            "marker": markers.get(scenario["group"], "o"),
            "color": colours(index % 20),
            "linewidth": 2.4 if scenario["group"] == "beds" else 1.3,
        }
        left.plot(xs, rps, label=key, **style)
        right.plot(xs, p99, label=key, **style)
        index += 1
    for axis, title, unit in ((left, "Throughput", "requests/s"), (right, "p99 latency", "ms")):
        axis.set_xscale("log")
        axis.set_xticks(list(CONCURRENCIES), [str(c) for c in CONCURRENCIES])
        axis.set_xlabel("requests in flight")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    left.set_yscale("log")
    right.set_yscale("log")
    right.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    figure.suptitle(
        f"BEDS benchmarks ({results['machine']['cpu']}, {results['machine']['cores']} cores)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(results: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out_dir / "results.md").write_text(markdown(results), encoding="utf-8")
    plot(results, out_dir / "throughput.png")
    plot_targets(results.get("targets") or targets.evaluate(results), out_dir / "targets.png")
