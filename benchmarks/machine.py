"""What the numbers were measured on: CPU, cores, memory, and every relevant version."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from typing import Any

PACKAGES = (
    "beds-core",
    "beds-rel",
    "beds-rec",
    "aiormq",
    "pamqp",
    "asyncmy",
    "pymongo",
    "orjson",
    "uvloop",
    "faststream",
    "aio-pika",
    "nameko",
    "eventlet",
    "kombu",
    "pymysql",
    "secantusdb",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def _command(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "unknown"
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (result.stdout.strip() or result.stderr.strip() or "unknown").splitlines()[0]


def _mariadb_version(mysql_url: str) -> str:
    try:
        import pymysql

        from benchmarks.work import mysql_kwargs

        conn = pymysql.connect(**mysql_kwargs(mysql_url, with_database=False))
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT VERSION()")
                row = cursor.fetchone()
                return str(row[0]) if row else "unknown"
        finally:
            conn.close()
    except Exception as exc:
        return f"unknown ({type(exc).__name__})"


def describe(mysql_url: str) -> dict[str, Any]:
    versions: dict[str, str] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "rabbitmq": _command(["rabbitmqctl", "version"]),
        "mariadb": _mariadb_version(mysql_url),
        "packages": versions,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
