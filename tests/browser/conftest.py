"""The SPEW page in a real Chromium against a real node and a real ``beds http`` edge.

One node (appServer: the example domain and beds-identity, schema applied) and one edge serve
the whole session: every test signs up its own users (unique handles), so tests share nothing
they could see of each other. Both are stopped by PID (SIGTERM) at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from beds.testing import unique_name
from tests.browser.harness import (
    ARTIFACTS,
    CHROMIUM,
    Spew,
    free_port,
    start_process,
    wait_edge,
    wait_node,
)
from tests.e2e.helpers import beds, config_text


@pytest.fixture(scope="session")
def spew(
    tmp_path_factory: pytest.TempPathFactory,
    amqp_url: str,
    mariadb_url: str,
    mongo_server_uri: str,
    mongo_database: str,
) -> Iterator[Spew]:
    folder = tmp_path_factory.mktemp("spew")
    env = unique_name("browser")
    config = folder / "beds.toml"
    config.write_text(
        config_text(amqp_url, mariadb_url, mongo_server_uri, mongo_database, env), encoding="utf-8"
    )
    applied = beds("schema", "apply", "--config", str(config))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    port = free_port()
    node = start_process("node", folder, "run", "--config", str(config))
    edge = None
    try:
        wait_node(node, amqp_url, env)
        edge = start_process(
            "edge", folder, "http", "--config", str(config), "--host", "127.0.0.1",
            "--port", str(port),
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_edge(edge, url)
        yield Spew(url, node, edge)
    finally:
        # Both, before asserting: a failing stop must not leave the other running.
        codes = [(p.stop(), p) for p in (edge, node) if p is not None]
        for code, process in codes:
            assert code == 0, f"{process.name} exited with {code}:\n{process.output()}"


@pytest.fixture(scope="module")
def playwright(spew: Spew) -> Iterator[Playwright]:
    """Playwright's driver, for one test module only.

    Its synchronous API runs an event loop in this thread while it is started, and
    ``asyncio.run`` refuses to run beside it: so the ``spew`` fixture (which runs some) is set up
    first, and the driver stops at the end of the module, before other folders' asyncio tests.
    """
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium with ./dev browser "
            "(apt-get install -y chromium)",
            pytrace=False,
        )
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """``test-artifacts/`` at the repository root (gitignored): screenshots of the tests."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
