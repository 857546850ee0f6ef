"""``beds run --workers N``: N node processes sharing one environment's queues.

The supervisor starts N ``beds run`` worker processes with the same configuration and command
line; each is told its index by ``BEDS_WORKER_INDEX`` and is named ``<node.name>-<index>``
(``BEDS__NODE__NAME``), so heartbeats, ``/status`` and replies' ``meta.node`` tell them apart.
Each serves its own telemetry port, ``telemetry.port + index`` (0 stays 0: each picks a free
port and logs it). Each has its own connections; RabbitMQ shares the queues between them.

SIGTERM or SIGINT is forwarded to every worker, which drains (``node.drain_seconds``) and exits;
the supervisor waits for them, kills one still running ``GRACE_SECONDS`` after its drain time,
and exits 0 only if every worker exited 0. A second signal is forwarded too (workers exit at
once) and the supervisor exits ``128 + signal``. A worker that exits while nothing asked it to is
replaced after a back-off that doubles with its recent exits; more than ``crash_limit`` such
exits in ``crash_window_seconds`` (a crash loop) stop the supervisor, exit 1. A worker exiting 1
or 2 (``beds run``'s codes of a failed start-up check and of bad configuration) stops it at once
with that code: a replacement would fail the same way. A worker that stops on a bug exits 70
(``beds.cli.common.EXIT_CRASHED``) and is replaced like one killed by a signal.

Why this module is long: the loop's states (serving, replacing, draining, killing) share the
workers' records and are read together.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import attrs
from loguru import logger

from beds.config.model import NAME
from beds.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from types import FrameType

    from beds.config.model import Config

__all__ = (
    "GRACE_SECONDS",
    "WORKER_INDEX_VARIABLE",
    "Policy",
    "Supervisor",
    "worker_command",
    "worker_count",
    "worker_environ",
)

WORKER_INDEX_VARIABLE = "BEDS_WORKER_INDEX"
"""Set in a worker's environment: its index (0…N-1); such a ``beds run`` serves one node."""
GRACE_SECONDS = 10.0
"""How long past its drain time a worker may take to exit before it is killed."""
# beds run's exit codes of a failed start (beds.cli.common; the CLI sits above this module): a
# replacement would fail the same way.
_EXIT_STARTUP = {1: "a start-up check failed", 2: "bad configuration"}
_EMBEDDED = "embedded"
_PORT_MAX = 65535


def worker_count(config: Config, requested: int | None = None) -> int:
    """How many node processes to run: ``--workers``, else ``node.workers`` (default 1).

    0 means one in development, ``os.cpu_count()`` in production.

    Raises:
        ConfigError: more than one worker with the embedded MongoDB server (it belongs to one
            process), a worker name longer than a node name may be, or a port past 65535.
    """
    key = "node.workers"
    chosen = config.node.workers if requested is None else requested
    count = chosen or ((os.cpu_count() or 1) if config.production else 1)
    file = config.files[0] if config.files else None
    if count > 1 and _uses_embedded_rec(config):
        raise ConfigError(
            f"{key}: {count} workers cannot share the embedded MongoDB server (it belongs to one "
            "process); run one worker, or set stores.rec.uri to a MongoDB server",
            file=file,
            key=key,
        )
    if count > 1 and not NAME.fullmatch(f"{config.node.name}-{count - 1}"):
        raise ConfigError(
            f"node.name: too long for {count} workers, named <node.name>-<index>",
            file=file,
            key="node.name",
        )
    port = config.telemetry.port
    if count > 1 and config.telemetry.enabled and port and port + count - 1 > _PORT_MAX:
        raise ConfigError(
            f"telemetry.port: workers listen on {port}…{port + count - 1}, past {_PORT_MAX}",
            file=file,
            key="telemetry.port",
        )
    return count


def _uses_embedded_rec(config: Config) -> bool:
    """Whether a ``rec`` connection (the default or a named one) has no server URI."""
    table = config.stores.get("rec")
    if table is None:
        return False
    named = table.get("databases") or {}
    tables = [table, *(t for t in named.values() if isinstance(t, dict))]
    return any(str(t.get("uri", table.get("uri", "")) or _EMBEDDED) == _EMBEDDED for t in tables)


def worker_environ(
    config: Config, index: int, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of worker ``index``: ``base`` plus its index, name and telemetry port."""
    environ = dict(os.environ if base is None else base)
    environ[WORKER_INDEX_VARIABLE] = str(index)
    environ["BEDS__NODE__NAME"] = f"{config.node.name}-{index}"
    if config.telemetry.port:
        environ["BEDS__TELEMETRY__PORT"] = str(config.telemetry.port + index)
    return environ


def worker_command(config_path: str | None, role: str | None) -> list[str]:
    """``beds run`` as the supervisor was started (config file and role), for one worker."""
    command = [sys.executable, "-m", "beds", "run"]
    if config_path is not None:
        command += ["--config", config_path]
    if role is not None:
        command += ["--node", role]
    return command


@attrs.frozen(kw_only=True)
class Policy:
    """How the supervisor waits, replaces and gives up."""

    drain_seconds: float = 10.0
    """The workers' ``node.drain_seconds``; ``GRACE_SECONDS`` more, then a worker is killed."""
    grace_seconds: float = GRACE_SECONDS
    backoff_seconds: float = 0.5
    """Delay before replacing a worker that exited once; it doubles with each recent exit."""
    max_backoff_seconds: float = 10.0
    crash_limit: int = 5
    """Unexpected exits (all workers together) within the window that stop the supervisor."""
    crash_window_seconds: float = 60.0
    poll_seconds: float = 0.05


@attrs.define
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    restart_at: float | None = None
    exits: collections.deque[float] = attrs.field(factory=collections.deque)
    """When it exited unexpectedly, within the crash window."""


class Supervisor:
    """Run ``count`` worker processes until a signal, replacing the ones that die.

    Args:
        count: how many workers.
        command: a worker's command line, given its index.
        environ: a worker's environment, given its index.
        policy: delays and limits.
    """

    def __init__(
        self,
        count: int,
        command: Callable[[int], Sequence[str]],
        environ: Callable[[int], Mapping[str, str]],
        policy: Policy | None = None,
    ) -> None:
        self.count = count
        self.policy = policy or Policy()
        self._command = command
        self._environ = environ
        self.workers = [_Worker(index) for index in range(count)]
        self.started = 0
        """Worker processes started, replacements included."""
        self._signals: list[int] = []
        self._exits: collections.deque[float] = collections.deque()

    def run(self) -> int:
        """Serve until a signal or a crash loop; the exit code (0: every worker exited 0)."""
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for worker in self.workers:
                self._start(worker)
            failure = self._serve()
            return self._stop(failure)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)  # acted on by the loop, outside the handler

    def _start(self, worker: _Worker) -> None:
        # Its own process group: a terminal's Ctrl-C reaches the supervisor only, which
        # forwards it once (twice would make the workers exit without draining).
        worker.process = subprocess.Popen(
            list(self._command(worker.index)),
            env=dict(self._environ(worker.index)),
            process_group=0,
            preexec_fn=_die_with_parent,  # the supervisor has one thread: safe
        )
        worker.restart_at = None
        self.started += 1
        logger.info("worker {} started (pid {})", worker.index, worker.process.pid)

    def _serve(self) -> int | None:
        """Until a signal (``None``) or a reason to stop (the exit code)."""
        while not self._signals:
            now = time.monotonic()
            for worker in self.workers:
                process = worker.process
                if process is not None and (code := process.poll()) is not None:
                    failure = self._exited(worker, code, now)
                    if failure is not None:
                        return failure
                elif worker.restart_at is not None and now >= worker.restart_at:
                    self._start(worker)
            time.sleep(self.policy.poll_seconds)
        return None

    def _exited(self, worker: _Worker, code: int, now: float) -> int | None:
        """A worker exited unasked: schedule its replacement, or the exit code to stop with."""
        policy = self.policy
        pid = worker.process.pid if worker.process is not None else "?"
        worker.process = None
        if code in _EXIT_STARTUP:
            logger.error(
                "worker {} (pid {}) exited with code {} ({}): stopping",
                worker.index,
                pid,
                code,
                _EXIT_STARTUP[code],
            )
            return code
        for exits in (worker.exits, self._exits):
            exits.append(now)
            while exits and exits[0] < now - policy.crash_window_seconds:
                exits.popleft()
        if len(self._exits) > policy.crash_limit:
            logger.error(
                "crash loop: workers exited {} times in {:g} s (limit {}); stopping. The last: "
                "worker {} (pid {}) with code {}",
                len(self._exits),
                policy.crash_window_seconds,
                policy.crash_limit,
                worker.index,
                pid,
                code,
            )
            return 1
        delay = min(
            policy.backoff_seconds * 2 ** (len(worker.exits) - 1), policy.max_backoff_seconds
        )
        worker.restart_at = now + delay
        logger.error(
            "worker {} (pid {}) exited with code {}; replacing it in {:g} s",
            worker.index,
            pid,
            code,
            delay,
        )
        return None

    def _running(self) -> list[tuple[_Worker, subprocess.Popen[bytes]]]:
        return [(w, w.process) for w in self.workers if w.process is not None]

    def _forward(self, signum: int) -> None:
        for worker, process in self._running():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
            logger.info("worker {} (pid {}): sent {}", worker.index, process.pid, _name(signum))

    def _stop(self, failure: int | None) -> int:
        """Signal every worker, wait for them to drain (killing the late ones), reap them."""
        if failure is None:
            logger.info("signal {}: draining the workers", _name(self._signals[0]))
        self._forward(self._signals[0] if failure is None else signal.SIGTERM)
        handled = max(len(self._signals), 1)
        deadline = time.monotonic() + self.policy.drain_seconds + self.policy.grace_seconds
        codes: dict[int, int] = {}
        while True:
            for worker, process in self._running():
                if (code := process.poll()) is not None:
                    codes[worker.index] = code
                    worker.process = None
                    logger.info(
                        "worker {} (pid {}) exited with code {}", worker.index, process.pid, code
                    )
            if not self._running():
                break
            if len(self._signals) > handled:
                handled = len(self._signals)
                logger.warning("second signal: the workers exit now")
                self._forward(self._signals[-1])
            if time.monotonic() > deadline:
                for worker, process in self._running():
                    logger.error(
                        "worker {} (pid {}) did not drain in time: killed",
                        worker.index,
                        process.pid,
                    )
                    process.kill()
                    codes[worker.index] = process.wait()
                    worker.process = None
                break
            time.sleep(self.policy.poll_seconds)
        if failure is not None:
            return failure
        if len(self._signals) > 1:
            return 128 + self._signals[-1]
        failed = sorted(index for index, code in codes.items() if code != 0)
        if failed:
            logger.error("workers {} did not stop cleanly", ", ".join(map(str, failed)))
            return 1
        logger.info("all {} workers stopped", self.count)
        return 0


def _name(signum: int) -> str:
    return signal.Signals(signum).name


def _die_with_parent() -> None:
    """In the child (Linux): get SIGKILL when the supervisor dies, so no worker outlives it."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
