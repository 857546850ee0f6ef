"""Several broker URLs (``amqp.urls``): validation, loading, rotation of ``connect_first``.

No service is needed: rotation is shown against loopback ports nothing listens on, and with
``connect`` replaced by a recorder; the cluster itself is tested in
``tests/integration/cluster/``.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beds.client import BedsClient
from beds.config import load_config
from beds.config.model import MAX_AMQP_URLS, AmqpSettings, FieldValueError
from beds.contract.asyncapi import asyncapi_document
from beds.errors import BrokerUnavailable, ConfigError
from beds.transport import amqp
from beds.transport.amqp import broker_index, connect_first, redact

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

SECRET = "s3cr3tpassw0rd"


def url(port: int, *, user: str = "beds", vhost: str = "v", scheme: str = "amqp") -> str:
    return f"{scheme}://{user}:{SECRET}@127.0.0.1:{port}/{vhost}"


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    def write_file(text: str, name: str = "beds.toml") -> Path:
        path = tmp_path / name
        path.write_text("schema_version = 1\n" + text, encoding="utf-8")
        return path

    return write_file


def error_of(path: Path, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ or {})
    return caught.value


def listed(*urls: str) -> str:
    return "[amqp]\nurls = [" + ", ".join(f'"{u}"' for u in urls) + "]\n"


# -- the settings --------------------------------------------------------------------------


def test_urls_give_the_addresses_and_url_reads_as_the_first() -> None:
    settings = AmqpSettings(urls=(url(5672), url(5673)))
    assert settings.addresses == (url(5672), url(5673))
    assert settings.url == url(5672)
    assert AmqpSettings(url=url(5674)).addresses == (url(5674),)


def test_url_and_urls_given_together_in_python_are_refused() -> None:
    with pytest.raises(FieldValueError) as caught:
        AmqpSettings(url=url(5674), urls=(url(5672),))
    assert caught.value.field == "url"
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("urls", "field", "words"),
    [
        ((url(1), url(2, user="other")), "urls[1]", "same user"),
        ((url(1), url(2), url(3, vhost="w")), "urls[2]", "same vhost"),
        ((url(1), url(1)), "urls[1]", "same broker (amqp://127.0.0.1:1) as amqp.urls[0]"),
        ((url(1), url(2, scheme="amqps")), "urls[1]", "same scheme"),
        ((url(1), f"http://u:{SECRET}@h/"), "urls[1]", "amqp:// or amqps://"),
        ((url(1), f"amqp://u:{SECRET}@h:99999/"), "urls[1]", "not a valid URL"),
        (tuple(url(p) for p in range(1, MAX_AMQP_URLS + 2)), "urls", "at most 16"),
    ],
)
def test_bad_url_lists_name_the_item_and_never_the_password(
    urls: tuple[str, ...], field: str, words: str
) -> None:
    with pytest.raises(FieldValueError) as caught:
        AmqpSettings(urls=urls)
    assert caught.value.field == field
    assert words in str(caught.value)
    assert SECRET not in str(caught.value)


def test_the_default_port_and_vhost_spellings_are_one_broker() -> None:
    with pytest.raises(FieldValueError, match="same broker"):
        AmqpSettings(urls=("amqp://u:p@Rabbit/", "amqp://u:p@rabbit:5672/%2F"))


_users = st.sampled_from(["beds", "app"])
_vhosts = st.sampled_from(["v", "w"])
_hosts = st.sampled_from(["10.0.0.1", "10.0.0.2", "rabbit"])
_ports = st.sampled_from([5672, 5673])
_passwords = st.text(alphabet="0123456789abcdef", min_size=16, max_size=24)


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(
        st.tuples(_users, _passwords, _hosts, _ports, _vhosts), min_size=1, max_size=MAX_AMQP_URLS
    )
)
def test_a_list_is_accepted_exactly_when_one_user_one_vhost_and_no_broker_twice(
    items: list[tuple[str, str, str, int, str]],
) -> None:
    urls = tuple(f"amqp://{u}:{p}@{h}:{port}/{v}" for u, p, h, port, v in items)
    expected: str | None = None  # the first item that breaks a rule, as the validator says
    seen: set[tuple[str, int]] = set()
    for index, (user, _, host, port, vhost) in enumerate(items):
        if user != items[0][0] or vhost != items[0][4] or (host, port) in seen:
            expected = f"urls[{index}]"
            break
        seen.add((host, port))
    if expected is None:
        assert AmqpSettings(urls=urls).addresses == urls
        return
    with pytest.raises(FieldValueError) as caught:
        AmqpSettings(urls=urls)
    assert caught.value.field == expected
    assert not any(password in str(caught.value) for _, password, *_ in items)


# -- the loader ----------------------------------------------------------------------------


def test_a_bad_item_is_named_with_its_file(write: Callable[..., Path]) -> None:
    path = write(listed(url(1), url(2, vhost="other")))
    error = error_of(path)
    assert (error.key, error.file) == ("amqp.urls[1]", str(path))
    assert SECRET not in str(error)


def test_url_and_urls_in_one_file_are_an_error_naming_both(write: Callable[..., Path]) -> None:
    path = write(listed(url(1)) + f'url = "{url(2)}"\n')
    error = error_of(path)
    assert error.key == "amqp.urls"
    assert "amqp.url and amqp.urls are both set" in str(error)
    assert str(path) in str(error)
    assert SECRET not in str(error)


def test_both_in_the_environment_are_an_error_naming_the_variables(
    write: Callable[..., Path],
) -> None:
    path = write("")
    error = error_of(path, {"BEDS__AMQP__URL": url(1), "BEDS__AMQP__URLS": f"{url(2)} {url(3)}"})
    assert "(both in <environment> BEDS__AMQP__URL and <environment> BEDS__AMQP__URLS)" in str(
        error
    )
    assert SECRET not in str(error)


def test_a_later_layer_replaces_the_other_key(write: Callable[..., Path]) -> None:
    base = write(f'[amqp]\nurl = "{url(1)}"\n')
    write(listed(url(2), url(3)).replace("schema_version = 1\n", ""), name="env_prod.toml")
    config = load_config(base, environ={"BEDS_ENV": "prod"})
    assert config.amqp.addresses == (url(2), url(3))
    # And back: one broker from the environment replaces the files' list.
    config = load_config(base, environ={"BEDS_ENV": "prod", "BEDS__AMQP__URL": url(4)})
    assert config.amqp.addresses == (url(4),)


def test_urls_from_a_variable_as_text_or_toml_array(write: Callable[..., Path]) -> None:
    path = write("")
    spaced = load_config(path, environ={"BEDS__AMQP__URLS": f" {url(1)}\n {url(2)} "})
    assert spaced.amqp.addresses == (url(1), url(2))
    array = load_config(path, environ={"BEDS__AMQP__URLS": f'["{url(1)}", "{url(2)}"]'})
    assert array.amqp.addresses == (url(1), url(2))


def test_urls_from_a_secret_file(write: Callable[..., Path], tmp_path: Path) -> None:
    secret = tmp_path / "amqp_urls"
    secret.write_text(f"{url(1)}\n{url(2)}\n", encoding="utf-8")
    config = load_config(write(""), environ={"BEDS__AMQP__URLS_FILE": str(secret)})
    assert config.amqp.addresses == (url(1), url(2))
    assert config.amqp.url == url(1)


def test_production_refuses_passwords_in_the_base_files_urls(write: Callable[..., Path]) -> None:
    path = write('[node]\nmode = "production"\n' + listed("amqp://beds@h1/v", url(2)))
    error = error_of(path)
    assert error.key == "amqp.urls[1]"
    assert "BEDS__AMQP__URLS" in str(error)
    assert SECRET not in str(error)
    # From the environment they are fine.
    base = write('[node]\nmode = "production"\n' + listed("amqp://beds@h1/v", "amqp://beds@h2/v"))
    config = load_config(base, environ={"BEDS__AMQP__URLS": f"{url(1)} {url(2)}"})
    assert config.amqp.addresses == (url(1), url(2))


# -- connect_first -------------------------------------------------------------------------


def closed_ports(count: int) -> list[int]:
    """Loopback ports nothing listens on (bound, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for each in sockets:
            each.bind(("127.0.0.1", 0))
        return [each.getsockname()[1] for each in sockets]
    finally:
        for each in sockets:
            each.close()


@pytest.mark.parametrize("start", [0, 1, 2, 3, 5])
async def test_connect_first_tries_every_broker_in_rotation_and_names_each(start: int) -> None:
    ports = closed_ports(3)
    urls = [url(port) for port in ports]
    with pytest.raises(BrokerUnavailable) as caught:
        await connect_first(urls, start=start, timeout=1)
    message = str(caught.value)
    assert message.startswith("none of the 3 RabbitMQ brokers is reachable")
    order = [(start + step) % 3 for step in range(3)]
    positions = [message.index(f"127.0.0.1:{ports[index]}") for index in order]
    assert positions == sorted(positions), "tried from start, wrapping around"
    assert SECRET not in message
    assert message.count("***") == 3


async def test_one_url_fails_with_its_own_error() -> None:
    (port,) = closed_ports(1)
    with pytest.raises(BrokerUnavailable) as caught:
        await connect_first([url(port)], timeout=1)
    assert str(caught.value).startswith(f"RabbitMQ at {redact(url(port))} is not reachable")
    with pytest.raises(BrokerUnavailable, match="no RabbitMQ URL"):
        await connect_first([], timeout=1)


class FakeConnection:
    def __init__(self, target: str) -> None:
        self.url = target


async def test_connect_first_returns_the_first_that_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tried: list[str] = []
    answering = {url(3)}

    async def fake_connect(target: str, **_: Any) -> FakeConnection:
        tried.append(target)
        if target not in answering:
            raise BrokerUnavailable(f"RabbitMQ at {redact(target)} is not reachable: refused")
        return FakeConnection(target)

    monkeypatch.setattr(amqp, "connect", fake_connect)
    urls = [url(1), url(2), url(3), url(4)]
    connection, index = await connect_first(urls, start=1)
    assert (index, tried) == (2, [url(2), url(3)])
    tried.clear()
    connection, index = await connect_first(urls, start=index + 1)  # lost it: the next first
    assert (index, tried) == (2, [url(4), url(1), url(2), url(3)])
    assert broker_index(connection, urls) == 2


def test_broker_index_matches_host_and_port_with_default_ports() -> None:
    urls = ["amqp://u:p@rabbit1/v", "amqp://u:p@rabbit2:5673/v"]
    assert broker_index(FakeConnection("amqp://u:p@RABBIT2:5673/v?name=x"), urls) == 1  # type: ignore[arg-type]
    assert broker_index(FakeConnection("amqp://u:p@rabbit1:5672/v"), urls) == 0  # type: ignore[arg-type]
    assert broker_index(FakeConnection("amqp://u:p@elsewhere:5672/v"), urls) == 0  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(password=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.~", min_size=8))
def test_redact_never_keeps_the_password(password: str) -> None:
    shown = redact(f"amqp://beds:{password}@127.0.0.1:5672/v")
    assert password not in shown
    assert shown == "amqp://beds:***@127.0.0.1:5672/v"


# -- the places that connect ---------------------------------------------------------------


def test_the_client_takes_one_url_or_several_of_one_user() -> None:
    assert BedsClient(url(1)).urls == (url(1),)
    client = BedsClient([url(1), url(2)])
    assert (client.urls, client.url) == ((url(1), url(2)), url(1))
    with pytest.raises(ValueError, match="same user") as caught:
        BedsClient([url(1), url(2, user="other")])
    assert SECRET not in str(caught.value)
    with pytest.raises(ValueError, match="at least one"):
        BedsClient([])


def test_asyncapi_lists_one_server_per_broker_without_credentials(
    write: Callable[..., Path],
) -> None:
    config = load_config(write(listed(url(5672), url(5673))), environ={})
    servers = asyncapi_document({}, config)["servers"]
    assert list(servers) == ["rabbitmq-1", "rabbitmq-2"]
    assert [server["host"] for server in servers.values()] == [
        "127.0.0.1:5672",
        "127.0.0.1:5673",
    ]
    assert SECRET not in str(servers)
    single = asyncapi_document({}, load_config(write(""), environ={}))["servers"]
    assert list(single) == ["rabbitmq"]
