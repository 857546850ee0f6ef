"""Every BEDS error pickles and unpickles with its message, details and attributes.

An error can cross a process boundary (a process pool, a multiprocessing queue, a test worker):
there it must arrive as the same class with the same message, ``details`` and attributes.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest

import beds
from beds.envelopes import ErrorBody
from beds.errors import RequestError, error_catalogue
from beds.nodeinfo import Check, StartupError
from beds.telemetry.status import StatusUnavailable

DETAILS = ("$.payload.body: must be at most 280 characters", "$.payload.tag: unknown field")


class ReplicaLagging(beds.StoreError):
    """A plugin's own error, with an ``__init__`` of its own."""

    def __init__(self, replica: str, *, seconds: float) -> None:
        self.replica = replica
        self.seconds = seconds
        super().__init__(f"replica {replica} is {seconds} s behind", details=(replica,))


def round_trip(error: BaseException) -> Any:
    return pickle.loads(pickle.dumps(error, protocol=pickle.HIGHEST_PROTOCOL))


def assert_same(before: BaseException, after: BaseException) -> None:
    assert type(after) is type(before)
    assert str(after) == str(before)
    assert after.args == before.args
    assert vars(after) == vars(before)


def catalogue_classes() -> list[type[RequestError]]:
    """Every class of the catalogue that pickle can name (not ones defined inside a test)."""
    return [cls for cls in error_catalogue().values() if "<locals>" not in cls.__qualname__]


def test_every_error_of_beds_errors_is_in_the_catalogue_tested() -> None:
    tested = set(catalogue_classes())
    for name in beds.errors.__all__:
        cls = getattr(beds.errors, name)
        if isinstance(cls, type) and "CODE" in vars(cls) and cls is not RequestError:
            assert cls in tested


@pytest.mark.parametrize("cls", catalogue_classes(), ids=lambda cls: cls.__name__)
def test_a_catalogue_error_round_trips(cls: type[RequestError]) -> None:
    error = cls("the payload does not match the template", details=DETAILS)
    after = round_trip(error)
    assert_same(error, after)
    assert after.message == "the payload does not match the template"
    assert after.details == DETAILS
    assert after.CODE == cls.CODE
    assert after.to_error() == error.to_error()


@pytest.mark.parametrize(
    "error",
    [
        beds.BedsError("something failed"),
        beds.ConfigError(
            "must be positive", file="conf/beds.toml", key="brokers.rBroker.instances"
        ),
        beds.ConfigError("must be positive", key="amqp.url"),
        beds.ConfigError("no config"),
        beds.PluginError("plugin 'rel' failed to load"),
        beds.TemplateError("fields.body.type is wrong", template="spew_post"),
        beds.TransportError("channel closed"),
        beds.BrokerUnavailable("RabbitMQ cannot be reached at 127.0.0.1:5672"),
        beds.PublishError("unroutable"),
        beds.ReplyTimeout("no reply within 10 s"),
        beds.RequestError("plain", details=("a",)),
        StatusUnavailable("no node answered at http://127.0.0.1:9187/status"),
        ReplicaLagging("db2", seconds=3.5),
    ],
    ids=lambda error: type(error).__name__,
)
def test_an_error_round_trips_with_its_attributes(error: beds.BedsError) -> None:
    assert_same(error, round_trip(error))


def test_config_error_keeps_file_and_key() -> None:
    after = round_trip(beds.ConfigError("must be positive", file="beds.toml", key="amqp.url"))
    assert (after.file, after.key) == ("beds.toml", "amqp.url")
    assert str(after) == "must be positive (file beds.toml, key amqp.url)"


def test_a_startup_error_keeps_its_checklist() -> None:
    cause = beds.ConfigError("must be positive", key="amqp.url")
    checks = [
        Check(name="config", status="ok", detail="beds.toml"),
        Check(name="rabbitmq", status="failed", detail="refused", error=cause),
    ]
    error = StartupError("start-up failed at rabbitmq: refused", checks)
    after = round_trip(error)
    assert_same(error, after)
    assert after.checks == tuple(checks)
    assert isinstance(after.checks[1].error, beds.ConfigError)
    assert str(after.checks[1].error) == str(cause)


def test_an_error_of_an_unknown_code_keeps_the_code() -> None:
    error = RequestError.from_error(ErrorBody(code="ACME-418", message="teapot", details=("x",)))
    after = round_trip(error)
    assert_same(error, after)
    assert after.CODE == "ACME-418"


def test_notes_survive() -> None:
    error = beds.NotFound("no record")
    error.add_note("while replaying a dead letter")
    assert round_trip(error).__notes__ == ["while replaying a dead letter"]


def test_database_object_missing_keeps_its_objects() -> None:
    after = round_trip(beds.DatabaseObjectMissing("missing", details=("spf_post_create",)))
    assert after.objects == ("spf_post_create",)
