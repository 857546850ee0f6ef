"""Syslog: events as RFC 5424 messages, their severity, the level filter, and the configuration.

The formatter is checked against a regular expression written from RFC 5424's ABNF (section 6),
with hostile text in every field. Sending over UDP and TCP is in
``tests/integration/test_syslog_broker.py``.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beds.broker.rfc5424 import FACILITIES, SD_ID, SEVERITIES, Rfc5424, at_level, severity_of
from beds.broker.syslog import TcpSender, UdpSender, sender_for
from beds.config import load_config
from beds.config.defaults import DEFAULTS
from beds.config.model import SyslogFacility, SyslogLevel, syslog_endpoint
from beds.errors import ConfigError
from beds.lineage import Event
from beds.node import BedsNode, StartupError
from beds.policy import findings
from beds.transport.amqp import declare_topology

if TYPE_CHECKING:
    from collections.abc import Callable

# -- RFC 5424, section 6 (ABNF), as a regular expression over bytes ---------------------------

_PRINT = rb"[\x21-\x7e]"
_SD_NAME = rb"[\x21\x23-\x3c\x3e-\x5c\x5e-\x7e]{1,32}"  # PRINTUSASCII but '=', ']', '"'
_PARAM_VALUE = rb'(?:[^"\\\]]|\\["\\\]])*'  # '"', '\' and ']' escaped
_TIMESTAMP = (
    rb"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
    rb"T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?"
    rb"(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)"
)
_SD_ELEMENT = rb"\[" + _SD_NAME + rb"(?: " + _SD_NAME + rb'="' + _PARAM_VALUE + rb'")*\]'
RFC5424 = re.compile(
    rb"<(?P<pri>\d{1,3})>(?P<version>[1-9]\d{0,2}) "
    rb"(?P<timestamp>-|" + _TIMESTAMP + rb") "
    rb"(?P<hostname>-|" + _PRINT + rb"{1,255}) "
    rb"(?P<app>-|" + _PRINT + rb"{1,48}) "
    rb"(?P<procid>-|" + _PRINT + rb"{1,128}) "
    rb"(?P<msgid>-|" + _PRINT + rb"{1,32}) "
    rb"(?P<sd>-|(?:" + _SD_ELEMENT + rb")+)"
    rb"(?: (?P<msg>.*))?\Z",
    re.DOTALL,
)
_PARAM = re.compile(rb"(" + _SD_NAME + rb')="(' + _PARAM_VALUE + rb')"')
BOM = b"\xef\xbb\xbf"


def parse(line: bytes) -> dict[str, Any]:
    """The parts of a well-formed RFC 5424 message (fails the test if it is not one)."""
    match = RFC5424.match(line)
    assert match is not None, f"not RFC 5424: {line!r}"
    assert int(match["pri"]) <= 191
    msg = match["msg"]
    if msg is not None and msg.startswith(BOM):
        msg[len(BOM) :].decode("utf-8")  # MSG-UTF8: a BOM, then UTF-8
    params = {
        name.decode(): re.sub(rb'\\(["\\\]])', rb"\1", value).decode("utf-8")
        for name, value in _PARAM.findall(match["sd"])
    }
    return {**match.groupdict(), "params": params}


def event(**fields: Any) -> Event:
    base: dict[str, Any] = {
        "event_id": "app1.prod.0123456789abcdef0123456789abcdef",
        "kind": "request",
        "node": "app1",
        "env": "prod",
        "at": 1_767_225_600.25,
        "template": "note",
        "operation": "create",
        "status": 200,
    }
    return Event(**{**base, **fields})


FORMAT = Rfc5424(facility=FACILITIES["local0"], hostname="adm1", procid="4242")


# -- the formatter ----------------------------------------------------------------------------


def test_a_request_is_one_rfc5424_message() -> None:
    line = FORMAT.format(event(status=503, code="BEDS-503"), SEVERITIES["crit"])
    assert line == (
        b"<130>1 2026-01-01T00:00:00.250000Z adm1 beds 4242 request "
        b'[beds@32473 event_id="app1.prod.0123456789abcdef0123456789abcdef" node="app1" '
        b'env="prod" template="note" operation="create" status="503" code="BEDS-503"] '
        b"create note answered 503 BEDS-503"
    )
    parts = parse(line)
    assert int(parts["pri"]) == 16 * 8 + 2  # local0, crit
    assert parts["msgid"] == b"request"


def test_empty_fields_are_left_out_and_an_audit_record_keeps_its_data_to_itself() -> None:
    audit = event(
        kind="audit",
        status=0,
        data={"before": {"password_hash": "argon2id$…"}, "after": None, "principal": "ann"},
    )
    line = FORMAT.format(audit, SEVERITIES["notice"])
    parts = parse(line)
    assert set(parts["params"]) == {"event_id", "node", "env", "template", "operation"}
    assert parts["msg"] == b"audit create note"
    assert b"argon2id" not in line
    assert b"ann" not in line


def test_hostile_names_and_messages_stay_inside_their_fields() -> None:
    hostile = event(
        template='x"] [evil@1 forged="yes',
        operation="a\\",
        node="n]\n<13>1 - - - - - forged",
        kind="log",
        code="ERROR",
        message="line one\r\nline two\x00\x1b[31m é",
    )
    line = FORMAT.format(hostile, severity_of(hostile))
    parts = parse(line)
    assert b"\n" not in line
    assert b"\r" not in line
    assert parts["params"]["template"] == 'x"] [evil@1 forged="yes'
    assert parts["params"]["operation"] == "a\\"
    assert parts["params"]["node"] == "n] <13>1 - - - - - forged"
    assert re.fullmatch(_SD_ELEMENT, parts["sd"]), "one SD element, no forged one"
    assert parts["msg"] == BOM + "line one  line two\ufffd\ufffd[31m é".encode()


def test_a_time_that_cannot_be_written_is_the_nil_value() -> None:
    for at in (float("nan"), float("inf"), 1e300, -1e300):
        assert parse(FORMAT.format(event(at=at), 6))["timestamp"] == b"-"


def test_a_long_message_is_cut_to_the_bound_at_a_character_boundary() -> None:
    formatter = Rfc5424(facility=1, hostname="h", procid="1", max_bytes=480)
    line = formatter.format(event(kind="log", code="ERROR", message="é" * 1000), 3)
    assert len(line) <= 480
    assert len(line) >= 478  # filled up to the bound, less at most one cut character
    parse(line)


@pytest.mark.parametrize("room", range(1, 7))
def test_a_text_that_does_not_fit_is_left_out_whole(room: int) -> None:
    """A few bytes left: no half character, no byte order mark alone."""
    bare = Rfc5424(facility=1, hostname="h", procid="1", max_bytes=2048)
    head = bare.format(event(kind="log", code="ERROR", message=""), 3)
    formatter = attrs.evolve(bare, max_bytes=len(head) + room)
    line = formatter.format(event(kind="log", code="ERROR", message="é" * 10), 3)
    assert len(line) <= len(head) + room
    assert line == head or line.startswith(head + b" " + BOM + "é".encode())
    parse(line)


_ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=()))
"""Any code point, lone surrogates and control characters included."""


@settings(max_examples=400)
@given(
    fields=st.fixed_dictionaries(
        {
            "event_id": _ANY_TEXT,
            "parent_id": _ANY_TEXT,
            "kind": st.sampled_from(["request", "db", "log", "audit"]),
            "node": _ANY_TEXT,
            "env": _ANY_TEXT,
            "at": st.floats(),
            "template": _ANY_TEXT,
            "operation": _ANY_TEXT,
            "status": st.integers(),
            "code": _ANY_TEXT | st.sampled_from(["BEDS-503", "BEDS-404", "ERROR", "TRACE"]),
            "message": _ANY_TEXT,
        }
    ),
    hostname=_ANY_TEXT,
    procid=_ANY_TEXT,
    app_name=st.from_regex(r"[!-~]{1,48}", fullmatch=True),
    facility=st.sampled_from(sorted(FACILITIES.values())),
    max_bytes=st.sampled_from([480, 1024, 2048]),
)
def test_any_text_in_any_field_gives_one_well_formed_message(
    fields: dict[str, Any],
    hostname: str,
    procid: str,
    app_name: str,
    facility: int,
    max_bytes: int,
) -> None:
    hostile = Event(**fields)
    formatter = Rfc5424(
        facility=facility,
        app_name=app_name,
        hostname=hostname,
        procid=procid,
        max_bytes=max_bytes,
    )
    severity = severity_of(hostile)
    line = formatter.format(hostile, severity)
    parts = parse(line)
    assert len(line) <= max_bytes
    assert b"\n" not in line
    assert b"\r" not in line
    assert int(parts["pri"]) == facility * 8 + severity
    assert parts["app"] == app_name.encode()
    assert parts["msgid"] == hostile.kind.encode()
    sd = parts["sd"]
    assert sd == b"-" or sd.startswith(f"[{SD_ID} ".encode())
    for name, value in parts["params"].items():
        sent: str = str(hostile.status) if name == "status" else getattr(hostile, name)
        assert len(value) <= len(sent)
        for got, original in zip(value, sent, strict=False):
            # A character is sent as it is, or a control character as a space or U+FFFD.
            assert got == original or (
                got in " \ufffd" and (unicodedata.category(original)[0] in "CZ" and original != " ")
            )


# -- severity and level -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "severity"),
    [
        ({"status": 200}, "info"),
        ({"status": 201}, "info"),
        ({"status": 404, "code": "BEDS-404"}, "warning"),
        ({"status": 422, "code": "BEDS-422"}, "warning"),
        ({"status": 403, "code": "BEDS-403O"}, "warning"),
        ({"status": 500, "code": "BEDS-500"}, "err"),
        ({"status": 502, "code": "BEDS-502D"}, "err"),
        ({"status": 504, "code": "BEDS-504"}, "err"),
        ({"status": 503, "code": "BEDS-503"}, "crit"),  # still failing after retries: DLQ
        ({"status": 503, "code": "BEDS-503B"}, "crit"),
        ({"status": 504, "code": "BEDS-504H"}, "crit"),  # handler stopped: dead-lettered
        ({"status": 500, "code": "BEDS-500R"}, "crit"),  # reply lost: kept in the DLQ
        ({"status": 0, "code": "BEDS-999"}, "err"),  # an unknown code
        ({"kind": "db", "status": 0, "message": "rel create"}, "debug"),
        ({"kind": "db", "status": 0, "code": "BEDS-503"}, "err"),
        ({"kind": "db", "status": 0, "code": "BEDS-409"}, "warning"),
        ({"kind": "log", "code": "TRACE"}, "debug"),
        ({"kind": "log", "code": "DEBUG"}, "debug"),
        ({"kind": "log", "code": "INFO"}, "info"),
        ({"kind": "log", "code": "SUCCESS"}, "notice"),
        ({"kind": "log", "code": "WARNING"}, "warning"),
        ({"kind": "log", "code": "ERROR"}, "err"),
        ({"kind": "log", "code": "CRITICAL"}, "crit"),
        ({"kind": "log", "code": "AUDITING"}, "info"),  # a level of its own
        ({"kind": "audit", "status": 0}, "notice"),
    ],
)
def test_the_severity_map(fields: dict[str, Any], severity: SyslogLevel) -> None:
    assert severity_of(event(**fields)) == SEVERITIES[severity]


def test_the_level_keeps_what_is_at_least_as_severe() -> None:
    events = [
        event(status=200),
        event(status=404, code="BEDS-404"),
        event(status=500, code="BEDS-500"),
        event(kind="audit", status=0),
        event(status=503, code="BEDS-503"),
    ]
    assert [s for _, s in at_level(events, SEVERITIES["warning"])] == [4, 3, 2]
    assert [s for _, s in at_level(events, SEVERITIES["crit"])] == [2]
    assert [e for e, _ in at_level(events, SEVERITIES["debug"])] == events
    assert at_level(events, SEVERITIES["emerg"]) == []


def test_every_level_and_facility_of_the_configuration_has_its_number() -> None:
    assert set(SEVERITIES) == set(SyslogLevel.__args__)  # type: ignore[attr-defined]
    assert set(FACILITIES) == set(SyslogFacility.__args__)  # type: ignore[attr-defined]


# -- configuration ------------------------------------------------------------------------------


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str], Path]:
    def write_file(text: str) -> Path:
        path = tmp_path / "beds.toml"
        path.write_text("schema_version = 1\n" + text, encoding="utf-8")
        return path

    return write_file


SYSLOG_ADMIN = """
[syslog]
target = "{target}"
[roles.admin.brokers.adminSyslogBroker]
type = "syslog"
bindings = ["log.#"]
"""


def test_the_syslog_section_and_its_defaults(write: Callable[[str], Path]) -> None:
    config = load_config(write('[syslog]\ntarget = "tcp://[::1]:6514"\n'), environ={})
    syslog = config.syslog
    assert (syslog.level, syslog.facility, syslog.app_name) == ("warning", "local0", "beds")
    assert syslog.max_message_bytes == 2048
    assert syslog_endpoint(syslog.target) == ("tcp", "::1", 6514)
    assert load_config(None, environ={}).syslog.target == ""
    assert isinstance(sender_for("udp://127.0.0.1:514"), UdpSender)
    assert isinstance(sender_for("tcp://localhost:601"), TcpSender)


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ('target = "http://127.0.0.1:514"', "syslog.target", "must be udp://host:port"),
        ('target = "udp://127.0.0.1"', "syslog.target", "must be udp://host:port"),
        ('target = "tcp://:514"', "syslog.target", "must be udp://host:port"),
        ('target = "tcp://u:pw@host:514"', "syslog.target", "must be udp://host:port"),
        ('target = "udp://127.0.0.1:99999"', "syslog.target", "must be udp://host:port"),
        ('target = "udp://127.0.0.1:514/x"', "syslog.target", "must be udp://host:port"),
        ('level = "error"', "syslog.level", 'must be "emerg" or "alert"'),
        ('facility = "local9"', "syslog.facility", '"local7"'),
        ('app_name = "my app"', "syslog.app_name", "RFC 5424 APP-NAME"),
        ('app_name = ""', "syslog.app_name", "RFC 5424 APP-NAME"),
        ("max_message_bytes = 100", "syslog.max_message_bytes", "at least 480"),
        ("max_message_bytes = 70000", "syslog.max_message_bytes", "at most 65000"),
        ("port = 514", "syslog.port", "is not a known key"),
    ],
)
def test_a_bad_syslog_key_is_named_with_its_file(
    write: Callable[[str], Path], table: str, key: str, words: str
) -> None:
    path = write(f"[syslog]\n{table}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert (caught.value.key, caught.value.file) == (key, str(path))
    assert words in str(caught.value)


def test_a_password_in_a_target_is_not_repeated(write: Callable[[str], Path]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write('[syslog]\ntarget = "tcp://u:s3cret@host:514"\n'), environ={})
    assert caught.value.key == "syslog.target"
    assert "s3cret" not in str(caught.value)


def test_a_broker_type_other_than_the_three_is_refused(write: Callable[[str], Path]) -> None:
    path = write('[roles.admin.brokers.x]\ntype = "graph"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.key == "roles.admin.brokers.x.type"
    assert '"requests" or "logs" or "syslog"' in str(caught.value)


def test_the_seed_admin_role_has_no_syslog_or_graph_broker() -> None:
    admin = DEFAULTS["roles"]["admin"]["brokers"]
    assert sorted(admin) == ["adminBrokerIn", "adminLogsBroker"]


# -- IPL and the production policy ----------------------------------------------------------------


def test_a_syslog_broker_without_a_target_does_not_start(write: Callable[[str], Path]) -> None:
    node = BedsNode(load_config(write(SYSLOG_ADMIN.format(target="")), role="admin", environ={}))
    with pytest.raises(StartupError, match="adminSyslogBroker forward events to syslog, but"):
        node.ipl.check_syslog()
    assert node.checks[-1].name == "syslog"
    assert "syslog.target is empty" in node.checks[-1].detail


def test_the_checklist_says_where_syslog_goes(write: Callable[[str], Path]) -> None:
    path = write(SYSLOG_ADMIN.format(target="udp://127.0.0.1:514"))
    admin = BedsNode(load_config(path, role="admin", environ={}))
    admin.ipl.check_syslog()
    assert [(c.name, c.status, c.detail) for c in admin.checks] == [
        ("syslog", "ok", "udp://127.0.0.1:514, warning and more severe")
    ]
    other = BedsNode(load_config(path, role="appServer", environ={}))
    other.ipl.check_syslog()  # its role forwards nothing
    assert other.checks == []


@pytest.mark.parametrize(
    ("target", "role", "found"),
    [
        ("udp://syslog.internal:514", "admin", True),
        ("tcp://10.0.0.5:601", "admin", True),
        ("udp://127.0.0.1:514", "admin", False),
        ("tcp://localhost:601", "admin", False),
        ("tcp://[::1]:601", "admin", False),
        ("udp://syslog.internal:514", "appServer", False),  # its role forwards nothing
    ],
)
def test_plaintext_syslog_to_another_host_is_a_production_finding(
    write: Callable[[str], Path], target: str, role: str, found: bool
) -> None:
    config = load_config(write(SYSLOG_ADMIN.format(target=target)), role=role, environ={})
    syslog = [f for f in findings(config) if f.key == "syslog.target"]
    assert bool(syslog) is found
    if found:
        assert "plaintext syslog" in syslog[0].problem
        assert "relay on this machine" in syslog[0].problem


def test_a_syslog_broker_believes_named_users_only_in_production(
    write: Callable[[str], Path],
) -> None:
    path = write(
        SYSLOG_ADMIN.format(target="udp://127.0.0.1:514")
        + '[roles.admin.brokers.adminLogsBroker]\ntype = "requests"\nbindings = []\n'
    )
    config = load_config(path, role="admin", environ={})
    assert not any(b.type == "logs" for b in config.brokers.values())
    [finding] = [f for f in findings(config) if f.key == "lineage.trusted_users"]
    assert "syslog messages" in finding.problem
    named = load_config(
        path, role="admin", environ={"BEDS__LINEAGE__TRUSTED_USERS": '["beds-prod-app"]'}
    )
    assert [f for f in findings(named) if f.key == "lineage.trusted_users"] == []


class RecordingChannel:
    """Records the bindings ``declare_topology`` makes."""

    def __init__(self) -> None:
        self.bindings: list[tuple[str, str, str]] = []

    async def exchange_declare(self, **_: Any) -> None:
        return None

    async def queue_declare(self, queue: str, **_: Any) -> None:
        return None

    async def queue_bind(self, queue: str, exchange: str, *, routing_key: str) -> None:
        self.bindings.append((queue, exchange, routing_key))


async def test_a_syslog_queue_is_bound_on_the_logs_exchange(
    write: Callable[[str], Path],
) -> None:
    path = write(SYSLOG_ADMIN.format(target="udp://127.0.0.1:514"))
    channel = RecordingChannel()
    queues = await declare_topology(channel, load_config(path, role="admin", environ={}))  # type: ignore[arg-type]
    queue = queues["adminSyslogBroker"]
    assert [(e, k) for q, e, k in channel.bindings if q == queue] == [("beds.logs", "log.#")]
