"""``beds contract asyncapi`` with every installed template package, as an operator runs it.

The document must validate against the official AsyncAPI 3.0.0 JSON Schema (vendored with
beds-core's tests, read offline) and name every installed template, and the AMQP URL's
credentials must not reach it.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import orjson

from beds.config import load_config
from beds.node import BedsNode
from tests.e2e.helpers import beds, config_text

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "packages/beds-core/tests/contract_schemas/asyncapi-3.0.0.json"
PASSWORD = "pw-never-printed-7f3a"


def test_the_installed_packages_give_a_valid_asyncapi_document(tmp_path: Path) -> None:
    config_path = tmp_path / "beds.toml"
    # The e2e configuration (stores included: the adapters are built, never connected).
    text = config_text(
        f"amqp://svc:{PASSWORD}@127.0.0.1:5672/%2F",
        "mysql://root@127.0.0.1:3306/test",
        "mongodb://127.0.0.1:27017",
        "contract",
        "contract",
    )
    config_path.write_text(text, encoding="utf-8")
    output = tmp_path / "asyncapi.json"
    result = beds("contract", "asyncapi", "--config", str(config_path), "--output", str(output))
    assert result.returncode == 0, result.stderr
    text = output.read_text(encoding="utf-8")
    assert PASSWORD not in text
    assert "svc" not in text
    document = orjson.loads(text)
    validator = jsonschema.Draft7Validator(orjson.loads(SCHEMA.read_bytes()))
    assert [error.message for error in validator.iter_errors(document)] == []

    node = BedsNode(load_config(config_path, environ={}))
    node.load_plugins()
    assert node.registry is not None
    installed = set(node.registry.templates)
    assert {"spew_post", "beds_user"} <= installed
    operations = {name.split(".")[0] for name in document["operations"]}
    assert installed <= operations
    for address, channel in document["channels"].items():
        binding = channel["bindings"]["amqp"]
        if binding["is"] == "routingKey":  # requests on the events exchange, live events not
            live = address in ("record.changed", "records.changed")
            exchange = "beds.control.live" if live else "beds.events.contract"
            assert binding["exchange"]["name"] == exchange
    assert document["servers"]["rabbitmq"]["host"] == "127.0.0.1:5672"


def test_stdout_is_the_same_document(tmp_path: Path) -> None:
    written = tmp_path / "a.json"
    assert beds("contract", "asyncapi", "-o", str(written)).returncode == 0
    printed = beds("contract", "asyncapi")
    assert printed.returncode == 0, printed.stderr
    assert orjson.loads(printed.stdout) == orjson.loads(written.read_bytes())


def test_an_unwritable_output_fails_with_one_line(tmp_path: Path) -> None:
    result = beds("contract", "asyncapi", "--output", str(tmp_path / "missing" / "a.json"))
    assert result.returncode == 1
    assert result.stderr.startswith("beds: error: cannot write ")
    assert "Traceback" not in result.stderr


def test_a_bad_config_exits_2(tmp_path: Path) -> None:
    config_path = tmp_path / "beds.toml"
    config_path.write_text('schema_version = 1\n[amqp]\nurl = "http://nope"\n', encoding="utf-8")
    result = beds("contract", "asyncapi", "--config", str(config_path))
    assert result.returncode == 2
    assert "amqp.url" in result.stderr
