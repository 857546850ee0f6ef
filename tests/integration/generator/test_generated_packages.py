"""Each example description, from text to a served domain (issue 18's "done when").

For every ``examples/domains/*.toml``: ``beds new-domain`` writes the package; a clean virtual
environment gets beds-core, the two adapters and the package only (uv, offline, from its cache);
``beds schema apply`` installs its schema into a private MariaDB database and MongoDB database;
``beds check`` runs a node's start-up against RabbitMQ and the stores; the package's own
generated tests pass against those stores; and a node (``beds run``) answers a fetch sent
through RabbitMQ (``beds call``). The library example is then changed: the new run
writes a numbered migration, ``beds schema migrate`` applies it, and the regenerated tests pass.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from beds.cli import cli
from beds.testing import unique_name

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples" / "domains").glob("*.toml"))
ADAPTERS = ("beds-core", "beds-rel", "beds-rec")


def _uv() -> str:
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    if not Path(found).exists():
        pytest.fail("uv is needed (./dev installs it into .tools/)", pytrace=False)
    return found


def _run(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Copies of the BEDS packages outside the workspace, so uv builds each one alone."""
    folder = tmp_path_factory.mktemp("sources")
    for name in ADAPTERS:
        shutil.copytree(
            ROOT / "packages" / name,
            folder / name,
            ignore=shutil.ignore_patterns("tests", "__pycache__", "*.egg-info"),
        )
    return folder


class Site:
    """A clean virtual environment, private databases and the node configuration naming them."""

    def __init__(
        self,
        folder: Path,
        sources: Path,
        amqp_url: str,
        mariadb_url: str,
        mongo: str,
        sql: Callable[[str], None],
    ):
        self.folder = folder
        self.sources = sources
        self.venv = folder / "venv"
        self.rel = unique_name("beds_gen")[:60]
        self.rec = unique_name("beds_gen")[:60]
        self.mariadb_url = mariadb_url
        self.sql = sql
        self.mongo = mongo
        base = urlsplit(mariadb_url)
        rel_url = mariadb_url.replace(base.path, "/" + self.rel) if base.path else mariadb_url
        env = unique_name("gen")
        self.config = folder / "beds.toml"
        self.config.write_text(
            f"""schema_version = 1
[node]
name = "g1"
env = "{env}"
[amqp]
url = "{amqp_url}"
events_exchange = "beds.events.{env}"
logs_exchange = "beds.logs.{env}"
dead_letter_exchange = "beds.dlx.{env}"
control_exchange = "beds.control.{env}"
[telemetry]
enabled = false
[lineage]
enabled = false
[stores.rel]
url = "{rel_url}"
[stores.rec]
uri = "{mongo}"
database = "{self.rec}"
server_selection_timeout = 5
""",
            encoding="utf-8",
        )
        sql(f"CREATE DATABASE `{self.rel}`")

    def install(self, package: Path) -> None:
        uv = _uv()
        if not self.venv.exists():
            _run(uv, "venv", "--quiet", "--python", sys.executable, self.venv)
        _run(
            uv,
            "pip",
            "install",
            "--quiet",
            "--offline",
            "--reinstall-package",
            package.name,
            "--python",
            self.venv / "bin" / "python",
            *(self.sources / name for name in ADAPTERS),
            package,
            "pytest",
            "pytest-asyncio",
        )

    def beds(self, *args: str, cwd: Path | None = None) -> str:
        return _run(self.venv / "bin" / "beds", *args, "--config", self.config, cwd=cwd)

    def pytest(self, package: Path) -> str:
        return _run(
            self.venv / "bin" / "python",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            package / "tests",
            env={"BEDS_CONFIG": str(self.config)},
            cwd=package,
        )

    def serve_and_fetch(self, package: Path) -> dict[str, object]:
        """Run a node (``beds run``) and fetch through RabbitMQ from a template anyone reads."""
        chosen = None
        for path in sorted(package.glob("src/*/templates/*.toml")):
            template = tomllib.loads(path.read_text(encoding="utf-8"))
            if template.get("access", {}).get("fetch") == ["*"] and template["key"] == ["id"]:
                chosen = template
                break
        assert chosen is not None, "every example has a template anyone reads"
        key = 1 if chosen["fields"]["id"]["type"] == "int" else "0" * 24
        payload = json.dumps({"query": "by_key", "params": {"id": key}})
        run = [self.venv / "bin" / "beds", "run", "--config", self.config]
        call = [self.venv / "bin" / "beds", "call", chosen["name"], "fetch", payload]
        with (self.folder / "node.log").open("w", encoding="utf-8") as log:
            node = subprocess.Popen([str(a) for a in run], stdout=log, stderr=log)
            try:
                deadline = time.monotonic() + 60
                while True:
                    done = subprocess.run(
                        [str(a) for a in [*call, "--config", self.config, "--timeout", "2"]],
                        capture_output=True,
                        text=True,
                        check=False,
                    )
                    stopped = node.poll() is not None
                    if done.returncode == 0 or time.monotonic() > deadline or stopped:
                        break
                    time.sleep(0.5)
            finally:
                node.terminate()
                node.wait(timeout=60)
        logged = (self.folder / "node.log").read_text(encoding="utf-8")
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{logged}"
        answer: dict[str, object] = json.loads(done.stdout)
        return answer

    def drop(self) -> None:
        from pymongo import MongoClient

        self.sql(f"DROP DATABASE IF EXISTS `{self.rel}`")
        client: MongoClient[dict[str, object]] = MongoClient(self.mongo)
        try:
            client.drop_database(self.rec)
        finally:
            client.close()


@pytest.fixture
def site(
    tmp_path: Path,
    sources: Path,
    amqp_url: str,
    mariadb_url: str,
    mongo_server_uri: str,
    mariadb_sql: Callable[[str], None],
) -> Iterator[Site]:
    made = Site(tmp_path, sources, amqp_url, mariadb_url, mongo_server_uri, mariadb_sql)
    try:
        yield made
    finally:
        made.drop()


def _generate(description: Path, out: Path, *extra: str) -> str:
    name = description.read_text(encoding="utf-8").split('name = "', 1)[1].split('"', 1)[0]
    result = CliRunner().invoke(
        cli, ["new-domain", name, "--from", str(description), "--out", str(out), *extra]
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("description", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_an_example_becomes_a_served_domain(site: Site, description: Path) -> None:
    package = site.folder / "package"
    _generate(description, package)
    site.install(package)
    applied = site.beds("schema", "apply")
    assert "/schema/" in applied
    site.beds("check")
    assert " passed" in site.pytest(package)
    answer = site.serve_and_fetch(package)
    assert answer["ok"] is True
    assert answer["data"] == []  # the generated tests deleted what they created


def test_a_changed_description_migrates_the_package(site: Site) -> None:
    library = ROOT / "examples" / "domains" / "library.toml"
    package = site.folder / "beds-library"
    _generate(library, package)
    site.install(package)
    site.beds("schema", "apply")

    changed = site.folder / "library.toml"
    text = library.read_text(encoding="utf-8")
    text = text.replace("max_length = 120", "max_length = 150")
    text = text.replace(
        "[entities.loan.fields.note]",
        '[entities.loan.fields.rating]\ntype = "int"\nminimum = 1\nmaximum = 5\nrequired = false\n'
        "nullable = true\n\n[entities.loan.fields.note]",
    )
    changed.write_text(text, encoding="utf-8")
    refused = CliRunner().invoke(
        cli, ["new-domain", "library", "--from", str(changed), "--out", str(package)]
    )
    assert refused.exit_code == 1, refused.output
    assert "+++ b/src/beds_library/schema/rel/003_changes.sql" in refused.output
    assert not (package / "src/beds_library/schema/rel/003_changes.sql").exists()

    _generate(changed, package, "--write")
    migration = (package / "src/beds_library/schema/rel/003_changes.sql").read_text()
    assert "ALTER TABLE lln_loan ADD COLUMN IF NOT EXISTS rating BIGINT NULL" in migration
    assert "ALTER TABLE lbk_book MODIFY COLUMN author VARCHAR(150) NOT NULL;" in migration
    site.install(package)
    assert "003_changes.sql" in site.beds("schema", "migrate", "--local")
    site.beds("check")
    assert " passed" in site.pytest(package)
    assert "up to date" in _generate(changed, package, "--check")
