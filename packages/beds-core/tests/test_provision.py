"""The provisioning plan: which templates a role serves, RabbitMQ's regexes, names, passwords.

No service is touched: rabbitmqctl is a stand-in script that records its command lines and
stdin (the real one is exercised by tests/e2e/test_provision.py).
"""

from __future__ import annotations

import json
import re
import stat
import sys
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beds.config.loader import load_config
from beds.config.model import BrokerSettings, Config, NodeSettings, RoleSettings
from beds.envelopes import Operation
from beds.errors import ConfigError
from beds.provision.needs import (
    Grant,
    StoreNeeds,
    merge_grants,
    request_patterns,
    served_templates,
)
from beds.provision.passwords import Passwords, variable_of
from beds.provision.plan import roles_of, user_namer
from beds.provision.rabbitmq import (
    CLIENT,
    amqp_accounts,
    apply_accounts,
    client_permissions,
    node_permissions,
    pattern,
    plan_lines,
    vhost_of,
)
from beds.provision.rabbitmqctl import RabbitCtl
from beds.registry import TemplateRegistry
from beds.templates.model import Template


def _template(name: str, tla: str, *, distribution: str = "", queries: bool = True) -> str:
    query = f'\n[queries.all]\nparams = []\nmax_limit = 10\nprocedure = "{tla}_all"\n'
    return f"""
name = "{name}"
store = "rel"
tla = "{tla}"
key = ["id"]

[access]
create = ["*"]
update = ["*"]
delete = ["*"]
fetch = ["*"]

[fields.id]
type = "int"

[operations.create]
params = ["id"]
procedure = "{tla}_create"

[operations.delete]
params = ["id"]
procedure = "{tla}_delete"
{query if queries else ""}"""


@pytest.fixture
def templates() -> dict[str, Template]:
    registry = TemplateRegistry()
    registry.add_text(_template("aaa_item", "aaa"), source="app/templates/aaa_item.toml")
    registry.add_text(_template("bbb_note", "bbb"), source="app/templates/bbb_note.toml")
    for name, tla in (("ccc_user", "ccc"), ("ccc_login", "cln")):
        registry.add_text(
            _template(name, tla), source=f"idp/templates/{name}.toml", distribution="idp"
        )
    return registry.templates


def _served(templates: dict[str, Template], *patterns: str) -> dict[str, set[Operation]]:
    return {
        name: set(use.operations) for name, use in served_templates(templates, patterns, ()).items()
    }


def test_a_role_serves_what_its_bindings_route(templates: dict[str, Template]) -> None:
    reads = _served(templates, "*.read")
    assert reads == {name: {Operation.FETCH} for name in templates}
    assert _served(templates, "aaa_item.write") == {
        "aaa_item": {Operation.CREATE, Operation.DELETE}
    }
    assert _served(templates, "aaa_item.*", "bbb_note.read") == {
        "aaa_item": {Operation.FETCH, Operation.CREATE, Operation.DELETE},
        "bbb_note": {Operation.FETCH},
    }
    assert _served(templates, "*.admin", "log.#") == {}


def test_serving_one_handled_template_serves_its_packages_other_handled_ones(
    templates: dict[str, Template],
) -> None:
    handled = {"ccc_user", "ccc_login"}
    uses = served_templates(templates, ["ccc_login.write"], handled)
    assert sorted(uses) == ["ccc_login", "ccc_user"]
    assert uses["ccc_login"].operations == {Operation.CREATE, Operation.DELETE}
    assert uses["ccc_user"].operations == set()  # not routed: for the handlers' sake
    assert all(use.handled for use in uses.values())
    # Handlers of one package never pull in another package's templates.
    assert sorted(served_templates(templates, ["aaa_item.read"], handled)) == ["aaa_item"]


def test_a_store_is_written_when_a_write_is_routed_or_a_handled_template_writes(
    templates: dict[str, Template],
) -> None:
    reads = served_templates(templates, ["*.read"], set())
    assert not StoreNeeds(role="r", store="rel", uses=tuple(reads.values())).writes
    handled = served_templates(templates, ["ccc_user.read"], {"ccc_user"})
    assert StoreNeeds(role="r", store="rel", uses=tuple(handled.values())).writes


def test_logs_brokers_route_no_template() -> None:
    role = RoleSettings(
        brokers={
            "in": BrokerSettings(bindings=("*.admin",)),
            "logs": BrokerSettings(type="logs", bindings=("log.#",)),
        }
    )
    assert request_patterns(role) == ("*.admin",)


def test_grants_are_merged_with_their_reasons() -> None:
    merged = merge_grants(
        [
            Grant(kind="view", name="v", privilege="SELECT", reasons=("a fetch",)),
            Grant(kind="procedure", name="p", privilege="EXECUTE", reasons=("a create",)),
            Grant(kind="view", name="v", privilege="SELECT", reasons=("b fetch",)),
        ]
    )
    assert [(g.kind, g.name, g.reasons) for g in merged] == [
        ("procedure", "p", ("a create",)),
        ("view", "v", ("a fetch", "b fetch")),
    ]


# -- RabbitMQ ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed() -> Config:
    """The development default configuration (the four seed roles)."""
    return load_config(None, environ={})


def test_a_node_may_touch_its_own_queues_and_the_shared_names_only(seed: Config) -> None:
    app = node_permissions(seed, "appServer")
    configure, write, read = (
        re.compile(app.configure),
        re.compile(app.write),
        re.compile(app.read),
    )
    own = seed.queue_name("rBroker", "appServer")
    admin_in = seed.queue_name("adminBrokerIn", "admin")
    logs = seed.queue_name("adminLogsBroker", "admin")
    assert all(regex.search(own) for regex in (configure, write, read))
    for regex in (configure, write, read):
        assert not regex.search(admin_in)  # another role's request queue
        assert not regex.search(f"x{own}")  # anchored
        assert not regex.search(f"{own}x")
    assert read.search(logs)  # every node declares and binds them
    assert write.search(logs)
    assert write.search("amq.default")  # replies and counted requeues
    assert not write.search(seed.amqp.events_exchange)  # nodes never send requests
    assert read.search(seed.amqp.events_exchange)  # its queues are bound to it
    admin = node_permissions(seed, "admin")
    assert not re.search(admin.read, own)


def test_a_client_may_only_publish_requests(seed: Config) -> None:
    client = client_permissions(seed)
    assert (client.configure, client.read) == ("^$", "^$")
    assert client.write == r"^(beds\.events)$"


def test_a_role_without_control_does_not_touch_the_control_stream(seed: Config) -> None:
    quiet = attrs.evolve(seed, control=attrs.evolve(seed.control, enabled=False))
    for regex in attrs.astuple(node_permissions(quiet, "segundo")):
        assert "control" not in regex


_NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,12}", fullmatch=True)
_QUEUES = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")),
    min_size=1,
    max_size=30,
).filter(lambda name: not name.startswith("amq."))


@settings(max_examples=200, deadline=None)
@given(
    env=_NAMES,
    roles=st.lists(_NAMES, min_size=2, max_size=3, unique=True),
    brokers=st.lists(_NAMES, min_size=1, max_size=3, unique=True),
    queues=st.lists(st.one_of(st.just(""), _QUEUES), min_size=3, max_size=3),
)
def test_no_generated_name_lets_a_role_reach_another_roles_queue(
    env: str, roles: list[str], brokers: list[str], queues: list[str]
) -> None:
    """Each role's own queues, named by default or by `queue`: another role's regexes miss them."""
    config = Config(
        node=NodeSettings(env=env, role=roles[0]),
        roles={
            role: RoleSettings(
                brokers={
                    broker: BrokerSettings(
                        bindings=("*.read",),
                        queue=f"{queues[index]}{role}{broker}" if queues[index] else "",
                    )
                    for index, broker in enumerate(brokers)
                }
            )
            for role in roles
        },
    )
    shared = {config.queue_name(broker, role) for role in roles for broker in brokers}
    for role in roles:
        mine = {config.queue_name(broker, role) for broker in brokers}
        others = {
            config.queue_name(broker, other)
            for other in roles
            if other != role
            for broker in brokers
        } - mine
        assert shared >= others
        for regex in attrs.astuple(node_permissions(config, role)):
            assert not any(re.search(regex, queue) for queue in others), (role, regex)


@given(st.lists(_QUEUES, max_size=5))
def test_a_pattern_matches_exactly_its_names(names: list[str]) -> None:
    regex = re.compile(pattern(names))
    for name in names:
        assert regex.search(name)
        assert not regex.search(name + "x")
        assert not regex.search("x" + name)
    assert bool(regex.search("")) is (not names or "" in names)


@given(names=st.lists(_QUEUES, max_size=3), prefix=_QUEUES, tail=_QUEUES)
def test_a_prefix_matches_the_names_that_continue_it(
    names: list[str], prefix: str, tail: str
) -> None:
    regex = re.compile(pattern(names, [prefix]))
    for candidate in (prefix + tail, "x" + prefix + tail, prefix, tail, *names):
        expected = candidate in names or (
            candidate.startswith(prefix) and len(candidate) > len(prefix)
        )
        assert bool(regex.search(candidate)) is expected, candidate


def test_a_node_may_touch_server_named_queues_for_its_cache(seed: Config) -> None:
    """The cache reads' exclusive queues are named by RabbitMQ (``amq.gen-``); no configured
    queue may start with ``amq.``, so the prefix reaches no role's queue."""
    for regex in attrs.astuple(node_permissions(seed, "appServer")):
        assert re.search(regex, "amq.gen-JzTY20BRgKO-HjmUJj0wLg")
        assert not re.search(regex, "amq.gen-")
        assert not re.search(regex, "amq.rabbitmq.trace")
    with pytest.raises(ValueError, match=r"must not start with 'amq\.'"):
        BrokerSettings(queue="amq.gen-x")


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        ("amqp://u@h/", "/"),
        ("amqp://u@h", "/"),
        ("amqp://u@h/%2F", "/"),
        ("amqps://u@h:5671/beds-prod", "beds-prod"),
    ],
)
def test_the_vhost_of_a_url(url: str, vhost: str) -> None:
    assert vhost_of(url) == vhost


def test_the_plan_shows_no_password_and_where_each_comes_from(seed: Config, tmp_path: Path) -> None:
    passwords = Passwords(tmp_path, environ={"BEDS_PROVISION_ADMIN_PASSWORD": "pw-from-env"})
    accounts = amqp_accounts(
        seed, roles_of(seed, (), client=True), user_namer("beds-{env}-{role}", "dev")
    )
    assert [a.user for a in accounts] == [
        "beds-dev-appServer",
        "beds-dev-admin",
        "beds-dev-segundo",
        "beds-dev-client",
    ]
    text = "\n".join(plan_lines(seed, accounts, passwords))
    assert "pw-from-env" not in text
    assert "password from BEDS_PROVISION_ADMIN_PASSWORD" in text
    assert f"generated into {tmp_path / 'rabbitmq-beds-dev-client.password'}" in text
    assert "rabbitmqctl add_user beds-dev-client   # password on stdin: ***" in text
    assert not list(tmp_path.iterdir())  # the plan writes nothing


# -- names and passwords ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("beds-{env}", "must contain {role}"),
        ("beds-{role}-{host}", "may name only {env} and {role}"),
        ("beds {role}", "is not 1 to 80 of letters"),
        ("{role}" + "x" * 80, "is not 1 to 80 of letters"),
    ],
)
def test_a_bad_user_name_template_is_a_config_error(template: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)) as caught:
        user_namer(template, "dev")("appServer")
    assert caught.value.key == "--user-name"


def test_an_unknown_role_is_a_config_error(seed: Config) -> None:
    with pytest.raises(ConfigError, match="unknown role 'nope'"):
        roles_of(seed, ("admin", "nope"), client=True)
    assert roles_of(seed, (CLIENT, "admin", CLIENT), client=True) == [CLIENT, "admin"]
    with pytest.raises(ConfigError):
        roles_of(seed, (CLIENT,), client=False)  # no database account for clients


def test_passwords_come_from_the_environment_a_file_or_are_generated(tmp_path: Path) -> None:
    secret_file = tmp_path / "given"
    secret_file.write_text("from-a-file\n", encoding="utf-8")
    passwords = Passwords(
        tmp_path / "secrets",
        environ={
            variable_of("appServer"): "from-env",
            f"{variable_of('admin')}_FILE": str(secret_file),
        },
    )
    assert variable_of("appServer") == "BEDS_PROVISION_APPSERVER_PASSWORD"
    assert passwords.get("appServer", "rabbitmq", "u1").value == "from-env"
    assert passwords.get("admin", "rabbitmq", "u2").value == "from-a-file"
    generated = passwords.get("segundo", "rabbitmq", "u3")
    path = tmp_path / "secrets" / "rabbitmq-u3.password"
    assert generated.source == f"generated into {path}"
    assert len(generated.value) >= 32
    assert generated.value not in repr(generated)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = Passwords(tmp_path / "secrets", environ={}).get("segundo", "rabbitmq", "u3")
    assert again.value == generated.value  # a second run reuses it


def test_a_password_without_source_or_with_a_line_break_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pass --secrets-dir"):
        Passwords(None, environ={}).get("admin", "mariadb", "u")
    with pytest.raises(ConfigError, match="line break") as caught:
        Passwords(None, environ={variable_of("admin"): "a\nb"}).get("admin", "mariadb", "u")
    assert "a\nb" not in str(caught.value)


# -- rabbitmqctl never sees a password in its arguments -----------------------------------------

_FAKE_CTL = """#!{python}
import json, sys
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps({{"argv": args, "stdin": sys.stdin.read()}}) + "\\n")
command = [a for a in args if not a.startswith("-")][0] if args else ""
answers = {{"list_vhosts": [{{"name": "/"}}], "list_users": {users}, "list_user_permissions": []}}
if command in answers:
    print(json.dumps(answers[command]))
elif command == "eval":
    print("beds_no")
"""


def _fake_rabbitmqctl(tmp_path: Path, users: list[dict[str, object]]) -> tuple[RabbitCtl, Path]:
    log = tmp_path / "calls.jsonl"
    script = tmp_path / "rabbitmqctl"
    script.write_text(
        _FAKE_CTL.format(python=sys.executable, log=str(log), users=json.dumps(users)),
        encoding="utf-8",
    )
    script.chmod(0o700)
    return RabbitCtl(str(script)), log


def test_apply_gives_passwords_on_stdin_only(seed: Config, tmp_path: Path) -> None:
    existing: list[dict[str, object]] = [{"user": "beds-dev-admin", "tags": ["administrator"]}]
    ctl, log = _fake_rabbitmqctl(tmp_path, existing)
    passwords = Passwords(tmp_path / "secrets", environ={})
    accounts = amqp_accounts(seed, ["appServer", "admin"], user_namer("beds-{env}-{role}", "dev"))
    changes = apply_accounts(ctl, seed, accounts, passwords)
    secrets = {
        path.read_text(encoding="utf-8").strip()
        for path in (tmp_path / "secrets").glob("*.password")
    }
    assert len(secrets) == 2
    calls = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    for call in calls:
        assert not any(secret in arg for secret in secrets for arg in call["argv"])
    commands = [next(a for a in call["argv"] if not a.startswith("-")) for call in calls]
    assert "add_user" in commands
    assert "change_password" in commands  # admin's was not known
    stdin_of = {cmd: call["stdin"] for cmd, call in zip(commands, calls, strict=True)}
    assert stdin_of["add_user"].strip() in secrets
    assert "<<" in stdin_of["eval"]
    assert not any(secret in stdin_of["eval"] for secret in secrets)
    assert "removed the tags administrator of beds-dev-admin" in changes
    assert not any(secret in "\n".join(changes) for secret in secrets)
    urls = sorted(path.name for path in (tmp_path / "secrets").glob("*.url"))
    assert urls == ["rabbitmq-beds-dev-admin.url", "rabbitmq-beds-dev-appServer.url"]


def test_a_failing_command_is_named_without_its_input(tmp_path: Path) -> None:
    script = tmp_path / "rabbitmqctl"
    script.write_text("#!/bin/sh\necho 'Error: no such user' >&2\nexit 69\n", encoding="utf-8")
    script.chmod(0o700)
    with pytest.raises(
        Exception, match=r"rabbitmqctl change_password u failed \(69\): Error"
    ) as caught:
        RabbitCtl(str(script)).change_password("u", "hunter2-secret")
    assert "hunter2-secret" not in str(caught.value)
