"""Failover time: the outage when the RabbitMQ node leading the queues dies under keyed writes.

How to plug in (benchmarks/run.py): call ``failover.run(res, options)`` and store what it
returns under ``results["failover"]``; ``res`` is not used (the test starts its own 3-node
RabbitMQ cluster, databases and node), ``options`` may be anything. Standalone:
``python -m benchmarks.failover [--json FILE]``.

It runs the cluster fault test, ``tests/integration/cluster/test_failover.py`` (a 3-node
RabbitMQ cluster on this machine, quorum queues, a node and clients given every broker's URL;
the node that leads the queues is killed under keyed write load), with pytest and ``-s``, and
reads the figures the test prints: the outage in seconds (from the kill to the first write
acknowledged again), the acknowledged writes lost and the writes stored twice. Target row:
lost = 0, duplicated = 0, outage <= ``MAX_OUTAGE_S``. pytest comes from the running Python (the
bench session installs it), else from the integration session's virtualenv
(``.nox/integration``). Without the test, or without pytest, the rows say so and the target is
not judged.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.resources import ROOT, _env

TEST: Final = Path("tests/integration/cluster/test_failover.py")
FIXTURES: Final = Path("tests/integration/cluster/servers.py")
MAX_OUTAGE_S: Final = 15.0
"""The issue's bound on the service's return after the leader dies."""
TIMEOUT_S: Final = 900.0
"""The whole test, cluster start and stop included, must end within this."""
_FIGURES: Final = {
    "outage_s": re.compile(r"outage\D{0,40}?(\d+(?:\.\d+)?)\s*s", re.IGNORECASE),
    "lost": re.compile(r"\blost\D{0,40}?(\d+)", re.IGNORECASE),
    "duplicated": re.compile(r"\bduplicat\w*\D{0,40}?(\d+)", re.IGNORECASE),
    "acknowledged": re.compile(r"\backnowledged\D{0,40}?(\d+)", re.IGNORECASE),
}
"""How the test's printed line names its figures (the last match of each counts)."""


def pytest_python() -> str | None:
    """A Python that has pytest: this one, else the integration session's; None when neither."""
    candidates = [sys.executable, str(ROOT / ".nox" / "integration" / "bin" / "python")]
    for python in candidates:
        if not Path(python).exists():
            continue
        probe = subprocess.run(
            [python, "-c", "import pytest"], capture_output=True, timeout=60, check=False
        )
        if probe.returncode == 0:
            return python
    return None


def figures(output: str) -> dict[str, float | int]:
    """The figures printed by the test (``outage_s``, ``lost``, ``duplicated``…) that it has."""
    found: dict[str, float | int] = {}
    for name, pattern in _FIGURES.items():
        matches = pattern.findall(output)
        if matches:
            found[name] = float(matches[-1]) if name == "outage_s" else int(matches[-1])
    return found


def _target(value: Any, met: bool | None, note: str) -> dict[str, Any]:
    return {
        "name": f"failover: lost = 0, duplicated = 0, outage <= {MAX_OUTAGE_S:g} s",
        "value": value,
        "target": MAX_OUTAGE_S,
        "comparison": "<=",
        "met": met,
        "note": note,
    }


def skipped(reason: str) -> dict[str, Any]:
    """The result when the test cannot run: one row saying why, the target not judged."""
    return {"rows": [{"skipped": reason}], "targets": [_target(None, None, reason)]}


def run(res: Any = None, args: Any = None) -> dict[str, Any]:
    """Run the fault test; the failover row and target (``results.json`` key ``failover``)."""
    if not (ROOT / TEST).exists() or not (ROOT / FIXTURES).exists():
        return skipped(f"cluster fixture missing ({TEST} or {FIXTURES} not in the checkout)")
    python = pytest_python()
    if python is None:
        return skipped("no pytest: neither the bench Python nor .nox/integration has it")
    argv = [python, "-m", "pytest", str(TEST), "-s", "-q", "-p", "no:cacheprovider"]
    print(f"  failover: {' '.join(argv[1:])}", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv,
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        reason = f"the cluster fault test ran past {TIMEOUT_S:g} s"
        return {"rows": [{"error": reason}], "targets": [_target(None, False, reason)]}
    output = done.stdout + done.stderr
    found = figures(output)
    row: dict[str, Any] = {
        "test": str(TEST),
        "passed": done.returncode == 0,
        "exit_code": done.returncode,
        "seconds": round(time.monotonic() - started, 1),
        **found,
    }
    if done.returncode != 0 or not {"outage_s", "lost", "duplicated"} <= found.keys():
        row["tail"] = "\n".join(output.splitlines()[-25:])
    missing = [k for k in ("outage_s", "lost", "duplicated") if k not in found]
    if missing:
        reason = f"the test printed no {', '.join(missing)} (exit code {done.returncode})"
        return {"rows": [row], "targets": [_target(None, None, reason)]}
    met = found["lost"] == 0 and found["duplicated"] == 0 and found["outage_s"] <= MAX_OUTAGE_S
    note = (
        f"outage {found['outage_s']:g} s, lost {found['lost']}, duplicated {found['duplicated']}"
        + ("" if done.returncode == 0 else f"; the test failed (exit code {done.returncode})")
    )
    return {"rows": [row], "targets": [_target(found["outage_s"], met, note)]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="accepted for symmetry; no effect")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    options = parser.parse_args(argv)
    result = run(None, options)
    for row in result["rows"]:
        print({k: v for k, v in row.items() if k != "tail"})
        if "tail" in row:
            print(row["tail"])
    for target in result["targets"]:
        verdict = {True: "met", False: "NOT MET", None: "-"}[target["met"]]
        print(f"{target['name']}: {target['value']} {verdict} ({target['note']})")
    if options.json is not None:
        options.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if result["targets"][0]["met"] is not False else 1


if __name__ == "__main__":
    sys.exit(main())
