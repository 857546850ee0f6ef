"""The exception tree and the error-code catalogue."""

from __future__ import annotations

import re
import traceback
from pathlib import Path

import pytest

import beds
from beds import errors
from beds.codec import decode_response, encode_response
from beds.envelopes import ErrorBody, Response
from beds.errors import (
    BedsError,
    BrokerUnavailable,
    ConfigError,
    DatabaseObjectMissing,
    InternalError,
    RequestError,
    TemplateError,
    error_catalogue,
)

SNAPSHOT = Path(__file__).with_name("error_catalogue.txt")


def core_catalogue() -> dict[str, type[RequestError]]:
    """The catalogue entries beds.errors itself defines (plugins may add their own)."""
    return {
        code: cls
        for code, cls in error_catalogue().items()
        if vars(errors).get(cls.__name__) is cls
    }


def render(catalogue: dict[str, type[RequestError]]) -> str:
    return "".join(f"{code} {cls.__name__} {cls.STATUS}\n" for code, cls in catalogue.items())


def all_subclasses(cls: type[RequestError]) -> list[type[RequestError]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *all_subclasses(sub)]
    return found


CORE_REQUEST_ERRORS = sorted(core_catalogue().values(), key=lambda cls: cls.CODE)


def test_catalogue_matches_snapshot() -> None:
    # Codes are part of the wire contract: changing one breaks every deployed client.
    # If a code is *added* on purpose, append its line to error_catalogue.txt.
    assert render(core_catalogue()) == SNAPSHOT.read_text(encoding="utf-8")


def test_catalogue_is_sorted_and_complete() -> None:
    catalogue = error_catalogue()
    assert list(catalogue) == sorted(catalogue)
    exported = {
        obj
        for name in errors.__all__
        if isinstance(obj := getattr(errors, name), type) and issubclass(obj, RequestError)
    }
    assert set(core_catalogue().values()) == exported - {RequestError}


def test_codes_are_unique() -> None:
    subclasses = [cls for cls in all_subclasses(RequestError) if cls in CORE_REQUEST_ERRORS]
    codes = [cls.CODE for cls in subclasses]
    assert len(codes) == len(set(codes)) == len(CORE_REQUEST_ERRORS)


def test_a_duplicate_code_is_refused() -> None:
    before = dict(error_catalogue())
    with pytest.raises(TypeError, match="duplicate error code BEDS-409"):

        class AnotherConflict(RequestError):
            CODE = "BEDS-409"

    assert dict(error_catalogue()) == before


@pytest.mark.parametrize("cls", CORE_REQUEST_ERRORS, ids=lambda cls: cls.__name__)
def test_code_shape_status_and_documentation(cls: type[RequestError]) -> None:
    assert re.fullmatch(r"BEDS-[45]\d\d[A-Z]?", cls.CODE)
    assert int(cls.CODE[5:8]) == cls.STATUS
    assert cls.__doc__
    # The tree in the module docstring lists every class with its code.
    assert re.search(rf"\b{cls.__name__}\s+{re.escape(cls.CODE)}\s", errors.__doc__ or "")


@pytest.mark.parametrize("cls", CORE_REQUEST_ERRORS, ids=lambda cls: cls.__name__)
def test_to_error_from_error_round_trip(cls: type[RequestError]) -> None:
    error = cls("it went wrong", details=("$.b: second", "$.a: first"))
    body = error.to_error()
    assert body == ErrorBody(
        code=cls.CODE, message="it went wrong", details=("$.b: second", "$.a: first")
    )

    back = RequestError.from_error(body)
    assert type(back) is cls
    assert back.message == "it went wrong"
    assert back.details == ("$.b: second", "$.a: first")
    assert back.to_error() == body


@pytest.mark.parametrize("cls", CORE_REQUEST_ERRORS, ids=lambda cls: cls.__name__)
def test_round_trip_through_a_response_on_the_wire(cls: type[RequestError]) -> None:
    body = cls("no", details=["x"]).to_error()
    wire = encode_response(Response(ok=False, status=cls.STATUS, error=body))
    decoded = decode_response(wire)
    assert decoded.error is not None
    assert type(RequestError.from_error(decoded.error)) is cls


def test_unknown_code_becomes_a_request_error_keeping_the_code() -> None:
    body = ErrorBody(code="BEDS-599X", message="from a newer node", details=("d",))
    error = RequestError.from_error(body)
    assert type(error) is RequestError
    assert error.CODE == "BEDS-599X"
    assert error.message == "from a newer node"
    assert error.details == ("d",)
    assert error.to_error() == body
    # The class attribute is untouched: only that one instance carries the unknown code.
    assert RequestError.CODE == "BEDS-500"
    assert "BEDS-599X" not in error_catalogue()


def test_base_request_error_code_rebuilds_as_internal_error() -> None:
    assert type(RequestError.from_error(RequestError("x").to_error())) is InternalError


def test_database_object_missing_lists_objects() -> None:
    error = DatabaseObjectMissing("missing objects", details=["spp_create", "spp_posts_v"])
    assert error.objects == ("spp_create", "spp_posts_v")
    back = RequestError.from_error(error.to_error())
    assert isinstance(back, DatabaseObjectMissing)
    assert back.objects == ("spp_create", "spp_posts_v")


@pytest.mark.parametrize(
    ("file", "key", "expected"),
    [
        (
            "conf/beds.toml",
            "brokers.rBroker.instances",
            "must be positive (file conf/beds.toml, key brokers.rBroker.instances)",
        ),
        ("conf/beds.toml", None, "must be positive (file conf/beds.toml)"),
        (None, "amqp.url", "must be positive (key amqp.url)"),
        (None, None, "must be positive"),
    ],
)
def test_config_error_names_file_and_key(file: str | None, key: str | None, expected: str) -> None:
    error = ConfigError("must be positive", file=file, key=key)
    assert str(error) == expected
    assert (error.file, error.key) == (file, key)


def test_template_error_names_the_template() -> None:
    error = TemplateError("fields.body.type is wrong", template="spew_post")
    assert str(error) == "template 'spew_post': fields.body.type is wrong"
    assert error.template == "spew_post"


def exception_classes(names: tuple[str, ...], module: object) -> list[type[BaseException]]:
    return [
        obj
        for name in names
        if isinstance(obj := getattr(module, name), type) and issubclass(obj, BaseException)
    ]


EXPORTED_EXCEPTIONS: list[type[BaseException]] = sorted(
    {*exception_classes(beds.__all__, beds), *exception_classes(errors.__all__, errors)},
    key=lambda cls: cls.__name__,
)


@pytest.mark.parametrize("cls", EXPORTED_EXCEPTIONS, ids=lambda cls: cls.__name__)
def test_exported_exceptions_live_in_beds(cls: type[BaseException]) -> None:
    assert cls.__module__ == "beds"
    assert issubclass(cls, BedsError)
    if cls is TemplateError:
        error: BaseException = TemplateError("boom", template="t")
    elif cls is beds.StartupError:
        error = beds.StartupError("boom", checks=())
    else:
        error = cls("boom")
    line = traceback.format_exception_only(error)
    assert line[-1].startswith(f"beds.{cls.__qualname__}: ")


def test_exceptions_exported_from_beds_are_the_same_objects() -> None:
    from beds import nodeinfo

    for cls in exception_classes(beds.__all__, beds):
        home = nodeinfo if cls.__name__ in nodeinfo.__all__ else errors
        assert getattr(home, cls.__name__) is cls


def test_builtin_bases_help_callers() -> None:
    assert issubclass(BrokerUnavailable, ConnectionError)
    assert issubclass(beds.ReplyTimeout, TimeoutError)


@pytest.mark.parametrize("cls", CORE_REQUEST_ERRORS, ids=lambda cls: cls.__name__)
def test_messages_are_deterministic(cls: type[RequestError]) -> None:
    first, second = cls("same input", details=("a",)), cls("same input", details=("a",))
    assert str(first) == str(second) == "same input"
    assert first.to_error() == second.to_error()
    assert not re.search(r"0x[0-9a-f]{6,}", repr(first))


def test_a_plugin_may_subclass_an_error_without_a_new_code() -> None:
    from beds.errors import StoreError, error_catalogue

    class ReplicaLagging(StoreError):
        """A plugin's finer distinction of a store error."""

    assert ReplicaLagging.CODE == StoreError.CODE
    assert error_catalogue()[StoreError.CODE] is StoreError
    rebuilt = RequestError.from_error(ReplicaLagging("lagging").to_error())
    assert type(rebuilt) is StoreError
