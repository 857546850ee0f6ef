"""The adapter's behaviour that needs no server: construction, plugin, guards."""

from __future__ import annotations

import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from beds.errors import ConfigError, DeadlineExceeded, StoreUnavailable, TemplateError
from beds.namaste import CallContext, NamasteCore, Query, StoreSettings
from beds.registry import AdapterRegistry
from beds.templates.loader import parse_template
from beds.templates.model import Template
from beds_rec import RecAdapter, plugin
from beds_rec import __all__ as public
from beds_rec.embedded import EmbeddedServer

# The example domain, read from the repository: its package is not installed in unit tests.
EXAMPLE_PACKAGE = Path(__file__).parents[2] / "beds-templates-example/src/beds_templates_example"


def profile() -> Template:
    text = EXAMPLE_PACKAGE.joinpath("templates/spew_profile.toml").read_text(encoding="utf-8")
    return parse_template(text, source="spew_profile.toml")


def remote(**extra: object) -> StoreSettings:
    return StoreSettings(
        store="rec", options={"uri": "mongodb://127.0.0.1:9/", "database": "d", **extra}
    )


def test_public_api() -> None:
    assert public == ("RecAdapter", "RecSettings", "__version__", "parse_settings")


def test_the_plugin_is_discovered_through_its_entry_point() -> None:
    (entry_point,) = metadata.entry_points(group="beds", name="rec")
    assert entry_point.value == "beds_rec.plugin"
    assert entry_point.load() is plugin


def test_the_plugin_registers_the_rec_store() -> None:
    registry = AdapterRegistry()
    plugin.beds_register_adapters(registry)
    adapter = registry.factories["rec"](remote())
    assert isinstance(adapter, RecAdapter)
    assert isinstance(adapter, NamasteCore)
    assert adapter.store == "rec"


def test_embedded_by_default(tmp_path: Path) -> None:
    adapter = RecAdapter(
        StoreSettings(store="rec", options={"database": "d", "embedded_path": str(tmp_path)})
    )
    assert isinstance(adapter._embedded, EmbeddedServer)
    assert adapter._embedded.path == tmp_path


def test_production_refuses_the_embedded_server() -> None:
    settings = StoreSettings(
        store="rec", options={"database": "d"}, file="env_prod.toml", production=True
    )
    with pytest.raises(ConfigError) as caught:
        RecAdapter(settings)
    assert caught.value.key == "stores.rec.uri"
    assert caught.value.file == "env_prod.toml"
    assert "development only" in str(caught.value)


def test_a_missing_secantusdb_tells_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "secantus", None)
    with pytest.raises(ConfigError) as caught:
        RecAdapter(StoreSettings(store="rec", options={"database": "d"}))
    assert caught.value.key == "stores.rec.uri"
    assert "pip install 'beds-rec[embedded]'" in str(caught.value)


def test_prepare_rejects_a_template_it_cannot_serve() -> None:
    adapter = RecAdapter(remote())
    adapter.prepare(profile())
    bad = parse_template(
        'name = "x"\nstore = "rec"\ntla = "abc"\nkey = ["k"]\n[fields.k]\ntype = "str"\n'
        '[rec]\ncollection = "k_things"\n',
        source="x.toml",
    )
    with pytest.raises(TemplateError, match="must start with the template's TLA prefix"):
        adapter.prepare(bad)


async def test_calls_before_start_are_store_unavailable() -> None:
    adapter = RecAdapter(remote())
    template = profile()
    ctx = CallContext(event_id="e")
    with pytest.raises(StoreUnavailable, match="not started"):
        await adapter.create(template, {"handle": "a", "display_name": "A", "bio": None}, ctx)
    with pytest.raises(StoreUnavailable, match="not started"):
        await adapter.verify(template)
    await adapter.aclose()
    await adapter.aclose()


async def test_a_passed_deadline_fails_before_any_database_call() -> None:
    adapter = RecAdapter(remote())
    template = profile()
    adapter._client = object()  # type: ignore[assignment]  # never used: the deadline wins first
    query = Query(spec=template.queries["by_handle"], params={"handle": "a"}, limit=1)
    ctx = CallContext(event_id="e", deadline=time.time() - 1)
    with pytest.raises(DeadlineExceeded):
        await adapter.fetch(template, query, ctx)
    adapter._client = None


def test_an_embedded_folder_locked_by_another_process_is_named_with_its_pid(
    tmp_path: Path,
) -> None:
    """``beds check`` beside a running node: a clear refusal, not the storage engine's error."""
    import subprocess
    import sys

    from beds_rec.embedded import in_use_by

    assert in_use_by(tmp_path) is None  # no storage yet
    (tmp_path / "WiredTiger.lock").write_bytes(b"")
    assert in_use_by(tmp_path) is None  # a file nobody locks
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            f"f = open({str(tmp_path / 'WiredTiger.lock')!r}, 'r+')\n"
            "fcntl.lockf(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(30)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        assert in_use_by(tmp_path) == holder.pid
    finally:
        holder.kill()
        holder.communicate()
    assert in_use_by(tmp_path) is None


async def test_an_embedded_server_in_use_refuses_to_start_naming_the_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beds_rec import embedded

    monkeypatch.setattr(embedded, "in_use_by", lambda path: 4242)

    class NeverStarted:
        def __init__(self, **_: object) -> None:
            raise AssertionError("the storage engine was asked to open a folder in use")

    with pytest.raises(StoreUnavailable, match="in use by process 4242") as refused:
        await embedded.EmbeddedServer(tmp_path, NeverStarted).start()
    assert "stores.rec.embedded_path" in str(refused.value)
