"""A SPEW node (identity, posts, likes) in this process and the edge on a real uvicorn socket.

The node serves the session's MariaDB and MongoDB wire server through RabbitMQ; the edge is
``beds_http.create_app`` on a loopback port, with its own BedsClient and live consumer, as
``beds http`` runs it. Each test has its own environment (queues, exchanges, control stream),
deleted at teardown.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from beds.config import load_config
from beds.node import BedsNode
from beds.testing import unique_name
from beds_http.app import create_app
from tests.e2e.helpers import beds, config_text
from tests.integration.http.helpers import Edge, delete_environment, free_port


@pytest.fixture(scope="session")
def http_schema_config(
    tmp_path_factory: pytest.TempPathFactory,
    amqp_url: str,
    mariadb_url: str,
    mongo_server_uri: str,
    mongo_database: str,
) -> str:
    """The SPEW config text (``{env}`` left to fill), its schema applied once."""
    env = unique_name("http")
    text = config_text(amqp_url, mariadb_url, mongo_server_uri, mongo_database, env)
    path = tmp_path_factory.mktemp("http") / "schema.toml"
    path.write_text(text, encoding="utf-8")
    result = beds("schema", "apply", "--config", str(path))
    assert result.returncode == 0, result.stderr
    # Each test's own control exchange too (the streams are per environment already).
    return text.replace(env, "{env}").replace(
        'dead_letter_exchange = "beds.dlx.{env}"',
        'dead_letter_exchange = "beds.dlx.{env}"\ncontrol_exchange = "beds.control.{env}"',
    )


@pytest.fixture
async def edge(tmp_path: Path, http_schema_config: str, amqp_url: str) -> AsyncIterator[Edge]:
    env = unique_name("http")
    path = tmp_path / "beds.toml"
    path.write_text(
        http_schema_config.replace("{env}", env)
        + "\n[http]\nkeepalive_seconds = 0.5\nrequest_timeout = 10\n",
        encoding="utf-8",
    )
    config = load_config(path, environ={})
    port = free_port()
    try:
        async with BedsNode(config) as node:
            app = create_app(config)
            server = uvicorn.Server(
                uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
            )
            serving = asyncio.get_running_loop().create_task(server.serve())
            for _ in range(200):
                if server.started:
                    break
                await asyncio.sleep(0.05)
            assert server.started, "uvicorn did not start"
            try:
                yield Edge(node, f"http://127.0.0.1:{port}", app)
            finally:
                server.should_exit = True
                await asyncio.wait_for(serving, 15)
    finally:
        await delete_environment(amqp_url, env)


@pytest.fixture
async def http(edge: Edge) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=edge.url, timeout=15) as client:
        yield client
