"""The supervisor of ``beds run --workers N``, with small python scripts as its workers."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import attrs
import pytest

from beds.config import load_config
from beds.errors import ConfigError
from beds.supervisor import (
    WORKER_INDEX_VARIABLE,
    Policy,
    Supervisor,
    worker_command,
    worker_count,
    worker_environ,
)

# A worker that writes its pid to a file named by its index, then drains on SIGTERM/SIGINT like
# a node (exit 0; a second signal: 128 + signal), or exits with CODE after LIFE seconds.
WORKER = textwrap.dedent(
    """
    import os, signal, sys, time
    folder, index = sys.argv[1], os.environ["BEDS_WORKER_INDEX"]
    life, code, drain = float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    got = []
    def on_signal(signum, frame):
        if got:
            os._exit(128 + signum)
        got.append(signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with open(os.path.join(folder, f"{index}.{os.getpid()}"), "w") as f:
        f.write(os.environ.get("BEDS__NODE__NAME", ""))
    started = time.monotonic()
    while not got:
        if life and time.monotonic() - started > life:
            sys.exit(code)
        time.sleep(0.01)
    time.sleep(drain)
    """
)
FAST = Policy(
    drain_seconds=1.0,
    grace_seconds=1.0,
    backoff_seconds=0.05,
    max_backoff_seconds=0.2,
    crash_limit=3,
    crash_window_seconds=30.0,
    poll_seconds=0.01,
)


@attrs.define
class Run:
    """A supervisor run in a thread of the test (signals go to the test process)."""

    folder: Path
    supervisor: Supervisor
    code: int | None = None

    def pids(self, index: int | None = None) -> list[int]:
        return [
            int(p.suffix[1:])
            for p in sorted(self.folder.iterdir(), key=lambda p: p.stat().st_mtime)
            if index is None or p.stem == str(index)
        ]

    def wait_started(self, count: int, seconds: float = 10) -> None:
        deadline = time.monotonic() + seconds
        while len(self.pids()) < count:
            assert time.monotonic() < deadline, f"{len(self.pids())} of {count} workers started"
            time.sleep(0.01)


def start(
    tmp_path: Path,
    count: int,
    *,
    life: float = 0,
    code: int = 0,
    drain: float = 0.1,
    policy: Policy = FAST,
) -> Run:
    folder = tmp_path / "pids"
    folder.mkdir()
    supervisor = Supervisor(
        count,
        lambda index: [sys.executable, "-c", WORKER, str(folder), str(life), str(code), str(drain)],
        lambda index: {**os.environ, WORKER_INDEX_VARIABLE: str(index)},
        policy,
    )
    return Run(folder, supervisor)


def drive(run: Run, action: threading.Thread) -> None:
    """Run the supervisor in the main thread while ``action`` drives it from another.

    ``signal.signal`` works only in the main thread, so the supervisor runs there.
    """
    action.start()
    run.code = run.supervisor.run()
    action.join(10)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def signal_after(run: Run, count: int, *signums: int, pause: float = 0.0) -> threading.Thread:
    def act() -> None:
        run.wait_started(count)
        for signum in signums:
            time.sleep(pause)
            os.kill(os.getpid(), signum)

    return threading.Thread(target=act)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_drains_every_worker_and_exits_0(tmp_path: Path, signum: int) -> None:
    run = start(tmp_path, 3, drain=0.3)
    started = time.monotonic()
    drive(run, signal_after(run, 3, signum))
    assert run.code == 0
    assert time.monotonic() - started < 8
    assert len(run.pids()) == 3
    assert not any(alive(pid) for pid in run.pids())


def test_a_second_signal_exits_at_once_with_128_plus_signal(tmp_path: Path) -> None:
    run = start(tmp_path, 2, drain=30)
    started = time.monotonic()
    drive(run, signal_after(run, 2, signal.SIGTERM, signal.SIGINT, pause=0.3))
    assert run.code == 128 + signal.SIGINT
    assert time.monotonic() - started < 5
    assert not any(alive(pid) for pid in run.pids())


def test_a_worker_that_does_not_drain_in_time_is_killed_and_the_exit_is_1(
    tmp_path: Path,
) -> None:
    run = start(tmp_path, 2, drain=30)
    started = time.monotonic()
    drive(run, signal_after(run, 2, signal.SIGTERM))
    assert run.code == 1
    assert time.monotonic() - started < FAST.drain_seconds + FAST.grace_seconds + 3
    assert not any(alive(pid) for pid in run.pids())


def test_a_killed_worker_is_replaced_and_the_others_keep_running(tmp_path: Path) -> None:
    run = start(tmp_path, 2)
    seen: dict[str, list[int]] = {}

    def act() -> None:
        run.wait_started(2)
        first, other = run.pids(0)[0], run.pids(1)[0]
        os.kill(first, signal.SIGKILL)
        run.wait_started(3)
        seen["0"], seen["1"], seen["other"] = run.pids(0), run.pids(1), [other]
        os.kill(os.getpid(), signal.SIGTERM)

    drive(run, threading.Thread(target=act))
    assert run.code == 0
    assert len(seen["0"]) == 2, "worker 0 was not replaced"
    assert seen["1"] == seen["other"], "worker 1 was restarted too"
    assert run.supervisor.started == 3
    assert not any(alive(pid) for pid in run.pids())


def test_a_crash_loop_stops_the_supervisor_with_exit_1(tmp_path: Path) -> None:
    run = start(tmp_path, 2, life=0.05, code=3)
    started = time.monotonic()
    run.code = run.supervisor.run()
    assert run.code == 1
    assert time.monotonic() - started < 10
    # The limit is 3 exits in the window: the 4th stops it; 2 first workers + replacements.
    assert FAST.crash_limit + 1 <= len(run.pids()) <= FAST.crash_limit + 2
    assert not any(alive(pid) for pid in run.pids())


@pytest.mark.parametrize("code", [1, 2], ids=["start-up check", "configuration"])
def test_a_worker_that_failed_to_start_stops_the_supervisor_at_once(
    tmp_path: Path, code: int
) -> None:
    run = start(tmp_path, 2, life=0.05, code=code)
    run.code = run.supervisor.run()
    assert run.code == code
    assert len(run.pids()) == 2, "a worker that failed to start was replaced"
    assert not any(alive(pid) for pid in run.pids())


def test_the_back_off_doubles_with_a_workers_recent_exits(tmp_path: Path) -> None:
    policy = attrs.evolve(FAST, backoff_seconds=0.3, max_backoff_seconds=0.6, crash_limit=3)
    run = start(tmp_path, 1, life=0.01, code=3, policy=policy)
    run.code = run.supervisor.run()
    assert run.code == 1
    times = [
        p.stat().st_mtime for p in sorted(run.folder.iterdir(), key=lambda p: p.stat().st_mtime)
    ]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 3
    assert 0.25 < gaps[0] < 0.9
    assert 0.55 < gaps[1] < 1.2  # doubled
    assert 0.55 < gaps[2] < 1.2  # capped


def config_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "beds.toml"
    path.write_text(f"schema_version = 1\n{body}", encoding="utf-8")
    return path


REC_SERVER = '[stores.rec]\nuri = "mongodb://127.0.0.1:27017"\ndatabase = "d"\n'


def test_zero_is_one_worker_in_development_one_per_core_in_production(tmp_path: Path) -> None:
    development = load_config(config_file(tmp_path, REC_SERVER), environ={})
    assert worker_count(development) == 1
    assert worker_count(development, 0) == 1
    assert worker_count(development, 3) == 3
    production = attrs.evolve(development, node=attrs.evolve(development.node, mode="production"))
    assert worker_count(production) == 1, "the default stays one process, named node.name"
    assert worker_count(production, 0) == (os.cpu_count() or 1)
    configured = load_config(
        config_file(tmp_path, f"[node]\nworkers = 4\n{REC_SERVER}"), environ={}
    )
    assert worker_count(configured) == 4
    assert worker_count(configured, 2) == 2


def test_workers_is_validated_with_its_key_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"node\.workers.*at least 0"):
        load_config(config_file(tmp_path, "[node]\nworkers = -1\n"), environ={})


@pytest.mark.parametrize(
    "rec", ["", '[stores.rec]\ndatabase = "d"\n', '[stores.rec]\nuri = "embedded"\n']
)
def test_many_workers_with_the_embedded_mongodb_server_are_refused(
    tmp_path: Path, rec: str
) -> None:
    config = load_config(config_file(tmp_path, rec) if rec else None, environ={})
    assert worker_count(config) == 1
    with pytest.raises(ConfigError, match=r"embedded MongoDB server.*key node\.workers"):
        worker_count(config, 2)


def test_a_named_rec_database_on_the_embedded_server_is_refused_too(tmp_path: Path) -> None:
    body = REC_SERVER + '[stores.rec.databases.other]\nuri = "embedded"\n'
    with pytest.raises(ConfigError, match=r"key node\.workers"):
        worker_count(load_config(config_file(tmp_path, body), environ={}), 2)


def test_worker_names_and_ports_must_stay_valid(tmp_path: Path) -> None:
    long_name = "n" * 62
    config = load_config(
        config_file(tmp_path, f'[node]\nname = "{long_name}"\n{REC_SERVER}'), environ={}
    )
    with pytest.raises(ConfigError, match=r"key node\.name"):
        worker_count(config, 2)
    config = load_config(
        config_file(tmp_path, f"[telemetry]\nport = 65535\n{REC_SERVER}"), environ={}
    )
    with pytest.raises(ConfigError, match=r"key telemetry\.port"):
        worker_count(config, 2)


def test_each_worker_gets_its_index_name_and_port(tmp_path: Path) -> None:
    config = load_config(
        config_file(tmp_path, f'[node]\nname = "app"\n[telemetry]\nport = 9500\n{REC_SERVER}'),
        environ={},
    )
    environ = worker_environ(config, 2, {"PATH": "/bin"})
    assert environ == {
        "PATH": "/bin",
        WORKER_INDEX_VARIABLE: "2",
        "BEDS__NODE__NAME": "app-2",
        "BEDS__TELEMETRY__PORT": "9502",
    }
    worker = load_config(config_file(tmp_path, REC_SERVER), environ=environ)
    assert worker.node.name == "app-2"
    assert worker.telemetry.port == 9502
    picked = load_config(config_file(tmp_path, f"[telemetry]\nport = 0\n{REC_SERVER}"), environ={})
    assert "BEDS__TELEMETRY__PORT" not in worker_environ(picked, 1, {})


def test_the_worker_command_repeats_the_config_and_role() -> None:
    assert worker_command(None, None) == [sys.executable, "-m", "beds", "run"]
    assert worker_command("/etc/beds.toml", "admin")[-4:] == [
        "--config",
        "/etc/beds.toml",
        "--node",
        "admin",
    ]


def test_beds_run_refuses_two_workers_on_the_embedded_server(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BEDS")}
    result = subprocess.run(
        [sys.executable, "-m", "beds", "run", "--workers", "2"],
        capture_output=True,
        text=True,
        env=environ,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "beds: error: node.workers: 2 workers cannot share the embedded MongoDB" in result.stderr
