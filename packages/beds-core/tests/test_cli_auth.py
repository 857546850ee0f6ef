"""``beds login``, ``logout``, ``whoami``, ``user …`` and ``call --token``, against a fake node.

The client is a real :class:`~beds.client.BedsClient` whose ``call`` is answered in memory by
:class:`FakeIdentity` (the wire contract of docs/identity.md, "Users and sessions"), so
``login``, ``logout``, ``fetch`` and ``update`` run their own code; ``beds.cli.common.make_client``
is replaced to build it and to record the token each command sends.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loguru import logger

from beds.cli import cli
from beds.cli.credentials import masked, write_token_file
from beds.cli.user import parse_roles, roles_text, with_role, without_role
from beds.client import BedsClient
from beds.config.model import Config
from beds.envelopes import ErrorBody, Operation, Response
from beds.errors import BrokerUnavailable, Unauthenticated

SIGNING_KEY = "k" * 64  # HS256 stands in for EdDSA: the command never checks signatures
PASSWORD = "correct horse battery staple"


def make_token(handle: str = "ann", **changes: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": "beds",
        "aud": "dev",
        "sub": f"u-{handle}",
        "handle": handle,
        "roles": ["member"],
        "sid": f"s-{handle}",
        "iat": now,
        "nbf": now,
        "exp": now + 900,
    }
    payload.update(changes)
    return jwt.encode(payload, SIGNING_KEY, algorithm="HS256")


def ok(data: Any, status: int = 200) -> Response:
    return Response(ok=True, status=status, data=data)


def refused(code: str, message: str, status: int) -> Response:
    return Response(ok=False, status=status, error=ErrorBody(code=code, message=message))


class FakeIdentity:
    """``beds_user`` and ``beds_session`` as the node answers them, and an echoing template."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {
            "ann": {"id": "u-ann", "handle": "ann", "roles": "member", "password": PASSWORD}
        }
        self.sessions: dict[str, str] = {}  # token -> handle
        self.requests: list[tuple[str, str, dict[str, Any], str | None]] = []
        self.down = False

    def answer(
        self, template: str, operation: str, payload: dict[str, Any], token: str | None
    ) -> Response:
        self.requests.append((template, operation, payload, token))
        if self.down:
            raise BrokerUnavailable("RabbitMQ at amqp://127.0.0.1 is not reachable")
        if template == "beds_session":
            return self.session(operation, payload, token)
        if template == "beds_user":
            return self.user(operation, payload)
        return ok({"echo": payload})

    def session(self, operation: str, payload: dict[str, Any], token: str | None) -> Response:
        if operation == "create":
            user = self.users.get(payload["handle"])
            if user is None or user["password"] != payload["password"]:
                # A careless node that repeats what it was sent: the command must blank it out.
                return refused("BEDS-401", f"bad login {payload['password']}", 401)
            issued = make_token(payload["handle"])
            self.sessions[issued] = payload["handle"]
            return ok({"token": issued, "expires_at": "2030-01-01T00:00:00Z", "session": "s-1"})
        if token not in self.sessions:
            return refused("BEDS-401", "not authenticated", 401)
        if operation == "delete":
            del self.sessions[token]
            return ok({"session": "s-1"})
        return refused("BEDS-405", "not here", 405)

    def user(self, operation: str, payload: dict[str, Any]) -> Response:
        if operation == "create":
            record = {"id": f"u-{payload['handle']}", "roles": "member", **payload}
            self.users[payload["handle"]] = record
            return ok({"id": record["id"], "handle": record["handle"], "created_at": "now"}, 201)
        if operation == "update":
            [user] = [u for u in self.users.values() if u["id"] == payload["id"]]
            user["roles"] = payload["roles"]
            return ok({"id": user["id"], "updated_at": "now"})
        public = [
            {key: value for key, value in user.items() if key != "password"}
            for user in self.users.values()
        ]
        if payload.get("query") == "by_handle":
            return ok([u for u in public if u["handle"] == payload["params"]["handle"]])
        return ok(public)


class FakeClient(BedsClient):
    """A BedsClient whose requests the fake node answers; no RabbitMQ."""

    def __init__(self, node: FakeIdentity, token: str | None) -> None:
        super().__init__(origin="cli", token=token)
        self.node = node

    async def connect(self) -> None:
        pass

    async def call(
        self,
        template: str,
        operation: Operation | str,
        payload: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        **_: Any,
    ) -> Response:
        sent = token if token is not None else self.token
        return self.node.answer(template, Operation(operation).value, payload or {}, sent or None)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Commands configure loguru on the runner's stderr: take that sink away afterwards."""
    yield
    logger.remove()
    logger.configure(extra={})
    logger.disable("beds")
    logging.basicConfig(handlers=[], force=True)


@pytest.fixture
def node(monkeypatch: pytest.MonkeyPatch) -> FakeIdentity:
    fake = FakeIdentity()

    def make_client(
        config: Config, url: str | None, timeout: float, token: str | None = None
    ) -> BedsClient:
        return FakeClient(fake, token)

    monkeypatch.setattr("beds.cli.common.make_client", make_client)
    return fake


@pytest.fixture
def token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "conf" / "beds" / "token"
    monkeypatch.setenv("BEDS_TOKEN_FILE", str(path))
    monkeypatch.delenv("BEDS_TOKEN", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    (tmp_path / "beds.toml").write_text("schema_version = 1\n", encoding="utf-8")
    monkeypatch.setenv("BEDS_CONFIG", str(tmp_path / "beds.toml"))
    return path


def invoke(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="beds", input=stdin, env=env)


def store(path: Path, token: str, env: str = "dev") -> None:
    write_token_file(path, {"token": token, "session": "s-1", "handle": "ann", "env": env})


# -- beds login --------------------------------------------------------------------------------


def test_login_writes_a_token_file_only_its_owner_can_read(
    node: FakeIdentity, token_file: Path
) -> None:
    result = invoke("login", "ann", "--password-stdin", stdin=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "logged in as ann (session s-1, expires 2030-01-01T00:00:00Z)\n"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    stored = json.loads(token_file.read_text(encoding="utf-8"))
    assert set(stored) == {"token", "expires_at", "session", "handle", "env"}
    assert stored["token"] in node.sessions
    assert (stored["handle"], stored["env"]) == ("ann", "dev")
    # The login itself goes without a credential, and with the password in the payload only.
    assert node.requests == [
        ("beds_session", "create", {"handle": "ann", "password": PASSWORD}, None)
    ]
    assert [p.name for p in token_file.parent.iterdir()] == ["token"]  # no temporary file left


def test_login_replaces_a_readable_file_with_a_private_one(
    node: FakeIdentity, token_file: Path
) -> None:
    token_file.parent.mkdir(parents=True)
    token_file.write_text("old", encoding="utf-8")
    token_file.chmod(0o644)
    result = invoke("login", "ann", "--password-stdin", stdin=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert json.loads(token_file.read_text(encoding="utf-8"))["handle"] == "ann"


def test_login_asks_for_the_handle_and_the_hidden_password(
    node: FakeIdentity, token_file: Path
) -> None:
    result = invoke("login", stdin=f"ann\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "handle: ann\n" in result.output
    assert "password: \n" in result.output  # not echoed
    assert PASSWORD not in result.output
    assert result.stdout.endswith("logged in as ann (session s-1, expires 2030-01-01T00:00:00Z)\n")


def test_a_failed_login_prints_the_code_and_writes_nothing(
    node: FakeIdentity, token_file: Path
) -> None:
    result = invoke("login", "ann", "--password-stdin", stdin="wrong-guess\n")
    assert result.exit_code == 1
    assert result.stderr == "beds: error: BEDS-401 bad login ***\n"
    assert not token_file.exists()


def test_an_empty_password_is_bad_usage(node: FakeIdentity, token_file: Path) -> None:
    result = invoke("login", "ann", "--password-stdin", stdin="\n")
    assert result.exit_code == 2
    assert result.stderr == "beds: error: the password is empty\n"
    assert node.requests == []


# -- beds logout -------------------------------------------------------------------------------


def test_logout_ends_the_session_and_removes_the_file(node: FakeIdentity, token_file: Path) -> None:
    assert invoke("login", "ann", "--password-stdin", stdin=PASSWORD + "\n").exit_code == 0
    token = json.loads(token_file.read_text(encoding="utf-8"))["token"]
    result = invoke("logout")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"logged out ann (session s-1); removed {token_file}\n"
    assert not token_file.exists()
    assert node.requests[-1] == ("beds_session", "delete", {}, token)
    assert node.sessions == {}


def test_logout_of_an_ended_session_still_removes_the_file(
    node: FakeIdentity, token_file: Path
) -> None:
    store(token_file, make_token())  # the node knows no such session: it answers 401
    result = invoke("logout")
    assert result.exit_code == 0, result.output
    assert "had ended already (expired or revoked)" in result.stdout
    assert not token_file.exists()


def test_logout_without_a_token_file_exits_1(node: FakeIdentity, token_file: Path) -> None:
    result = invoke("logout")
    assert result.exit_code == 1
    assert result.stderr == f"beds: error: not logged in: there is no token file {token_file}\n"


def test_logout_that_reaches_no_node_keeps_the_file(node: FakeIdentity, token_file: Path) -> None:
    store(token_file, make_token())
    node.down = True
    result = invoke("logout")
    assert result.exit_code == 1
    assert "not reachable" in result.stderr
    assert token_file.exists()


def test_logout_of_another_environment_is_refused(node: FakeIdentity, token_file: Path) -> None:
    store(token_file, make_token(), env="prod")
    result = invoke("logout")
    assert result.exit_code == 2
    assert "is for environment prod, not dev" in result.stderr
    assert token_file.exists()
    assert node.requests == []


async def test_the_client_drops_its_token_when_the_session_had_ended() -> None:
    node = FakeIdentity()
    client = FakeClient(node, make_token())
    with pytest.raises(Unauthenticated):
        await client.logout()
    assert client.token is None
    data = await client.login("ann", PASSWORD)
    assert client.token == data["token"]
    await client.logout()
    assert client.token is None


# -- beds whoami -------------------------------------------------------------------------------


def test_whoami_prints_the_claims_of_the_stored_token(token_file: Path) -> None:
    token = make_token(roles=["admin", "member"], exp=1_900_000_000)
    store(token_file, token)
    result = invoke("whoami")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "handle   ann",
        "id       u-ann",
        "roles    admin, member",
        "session  s-ann",
        "env      dev",
        "expires  2030-03-17T17:46:40Z",
        f"token    {token[:8]}… ({token_file})",
    ]


def test_whoami_json_shows_no_usable_token(token_file: Path) -> None:
    token = make_token(exp=int(time.time()) - 60)
    store(token_file, token)
    result = invoke("whoami", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["handle"] == "ann"
    assert document["id"] == "u-ann"
    assert document["roles"] == ["member"]
    assert document["session"] == "s-ann"
    assert document["expired"] is True
    assert document["token"] == masked(token) == token[:8] + "…"
    assert document["source"] == str(token_file)
    assert token not in result.output


def test_whoami_says_expired(token_file: Path) -> None:
    store(token_file, make_token(exp=1_000_000_000))
    result = invoke("whoami", env={"NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert "expires  2001-09-09T01:46:40Z (expired)\n" in result.stdout


def test_whoami_reads_token_option_then_environment(token_file: Path) -> None:
    store(token_file, make_token("file"))
    from_env = invoke("whoami", "--json", env={"BEDS_TOKEN": make_token("env")})
    assert json.loads(from_env.stdout)["handle"] == "env"
    assert json.loads(from_env.stdout)["source"] == "BEDS_TOKEN"
    from_option = invoke(
        "whoami", "--json", "--token", make_token("opt"), env={"BEDS_TOKEN": make_token("env")}
    )
    assert json.loads(from_option.stdout)["handle"] == "opt"
    assert json.loads(from_option.stdout)["source"] == "--token"


def test_whoami_without_a_token_exits_1(token_file: Path) -> None:
    result = invoke("whoami")
    assert result.exit_code == 1
    assert result.stderr.startswith("beds: error: not logged in")


def test_whoami_of_something_that_is_not_a_jwt_exits_1(token_file: Path) -> None:
    result = invoke("whoami", "--token", "opaque-secret-value")
    assert result.exit_code == 1
    assert "opaque-secret-value" not in result.output


# -- beds call ---------------------------------------------------------------------------------


def _sent(node: FakeIdentity) -> str | None:
    return node.requests[-1][3]


def test_call_sends_token_option_then_environment_then_file(
    node: FakeIdentity, token_file: Path
) -> None:
    stored, from_env, from_option = make_token("file"), make_token("env"), make_token("opt")
    store(token_file, stored)
    assert invoke("call", "spew_post", "fetch").exit_code == 0
    assert _sent(node) == stored
    assert invoke("call", "spew_post", "fetch", env={"BEDS_TOKEN": from_env}).exit_code == 0
    assert _sent(node) == from_env
    args = ("call", "spew_post", "fetch", "--token", from_option)
    assert invoke(*args, env={"BEDS_TOKEN": from_env}).exit_code == 0
    assert _sent(node) == from_option
    token_file.unlink()
    assert invoke("call", "spew_post", "fetch").exit_code == 0
    assert _sent(node) is None


@pytest.mark.parametrize(
    ("token", "env", "note"),
    [
        (make_token(exp=1_000_000_000), "dev", "expired at 2001-09-09T01:46:40Z"),
        (make_token(), "prod", "is for environment prod, not dev"),
    ],
)
def test_call_leaves_out_a_stored_token_that_cannot_work(
    node: FakeIdentity, token_file: Path, token: str, env: str, note: str
) -> None:
    store(token_file, token, env=env)
    result = invoke("call", "spew_post", "fetch")
    assert result.exit_code == 0, result.output
    assert _sent(node) is None
    assert note in result.stderr
    assert token not in result.output


# -- beds user ---------------------------------------------------------------------------------


def test_user_create_signs_up_without_a_credential(node: FakeIdentity, token_file: Path) -> None:
    store(token_file, make_token())
    result = invoke(
        "user", "create", "bob", "--display-name", "Bob", "--password-stdin", stdin="pw-bob\n"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "created user bob (id u-bob)\n"
    assert node.requests == [
        (
            "beds_user",
            "create",
            {"handle": "bob", "password": "pw-bob", "display_name": "Bob"},
            None,
        )
    ]


def test_user_create_asks_for_the_password_twice(node: FakeIdentity, token_file: Path) -> None:
    result = invoke("user", "create", "bob", stdin="pw-bob\npw-bob\n")
    assert result.exit_code == 0, result.output
    assert node.users["bob"]["password"] == "pw-bob"
    assert "pw-bob" not in result.output


def test_user_list_sends_the_stored_token(node: FakeIdentity, token_file: Path) -> None:
    token = make_token(roles=["admin", "member"])
    store(token_file, token)
    result = invoke("user", "list")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].split() == ["ann", "u-ann", "member", "yes", "-"]
    assert node.requests[-1] == ("beds_user", "fetch", {"params": {}, "query": "everyone"}, token)
    listed = invoke("user", "list", "--json")
    assert json.loads(listed.stdout) == [{"id": "u-ann", "handle": "ann", "roles": "member"}]


roles = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-0123456789", min_size=1, max_size=12),
    max_size=5,
    unique=True,
)


@given(roles=roles, role=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8))
def test_granting_and_revoking_a_role(roles: list[str], role: str) -> None:
    granted = with_role(roles, role)
    assert role in granted
    assert [r for r in granted if r != role] == [r for r in roles if r != role]
    assert parse_roles(roles_text(granted)) == granted
    assert role not in without_role(granted, role)
    assert with_role(granted, role) == granted


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=30)
@given(
    handle=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.", min_size=1, max_size=16),
    held=roles,
    role=st.sampled_from(["admin", "member", "editor"]),
    grant=st.booleans(),
)
def test_user_grant_and_revoke_send_the_new_roles_text(
    token_file: Path, handle: str, held: list[str], role: str, grant: bool
) -> None:
    node = FakeIdentity()
    node.users = {handle: {"id": "u-1", "handle": handle, "roles": " , ".join(held)}}
    token = make_token(roles=["admin"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("beds.cli.common.make_client", lambda *_, token=None: FakeClient(node, token))
        result = invoke("user", "grant" if grant else "revoke", handle, role, "--token", token)
    assert result.exit_code == 0, result.output
    expected = with_role(held, role) if grant else without_role(held, role)
    lookup = ("beds_user", "fetch", {"params": {"handle": handle}, "query": "by_handle"}, token)
    assert node.requests[0] == lookup
    if expected == held:
        assert len(node.requests) == 1
        assert "not changed" in result.stdout
    else:
        update = ("beds_user", "update", {"id": "u-1", "roles": ",".join(expected)}, token)
        assert node.requests[1:] == [update]
        assert f"(roles: {','.join(expected) or 'none'})" in result.stdout


def test_grant_to_nobody_exits_1(node: FakeIdentity, token_file: Path) -> None:
    result = invoke("user", "grant", "zed", "admin", "--token", make_token())
    assert result.exit_code == 1
    assert result.stderr == "beds: error: there is no user zed\n"


@pytest.mark.parametrize("role", ["admin,member", "two words", " "])
def test_a_role_is_one_word(node: FakeIdentity, token_file: Path, role: str) -> None:
    result = invoke("user", "grant", "ann", role)
    assert result.exit_code == 2
    assert node.requests == []


def test_an_error_reply_prints_its_code(node: FakeIdentity, token_file: Path) -> None:
    result = invoke("user", "list")
    assert result.exit_code == 0  # the fake node lets anyone list; a real one answers 403
    node.answer = lambda *_: refused("BEDS-403", "admin only", 403)  # type: ignore[method-assign]
    result = invoke("user", "list")
    assert result.exit_code == 1
    assert result.stderr == "beds: error: BEDS-403 admin only\n"


# -- secrets -----------------------------------------------------------------------------------


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=10)
@given(password=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789!$%", min_size=6))
def test_no_command_prints_the_password_or_the_token(token_file: Path, password: str) -> None:
    # Marked with a character no output has, so "not printed" is checked strictly: a password
    # drawn as "member" is a word of the output (ann's roles) without being printed.
    password = f"\u00a7{password}"
    node = FakeIdentity()
    node.users["ann"]["password"] = password
    outputs: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("beds.cli.common.make_client", lambda *_, token=None: FakeClient(node, token))
        for args, stdin in [
            (("login", "ann", "--password-stdin"), password + "\n"),
            (("login", "ann", "--password-stdin"), password + "x\n"),  # refused, message echoes
            (("login", "ann"), password + "\n"),
            (("whoami",), None),
            (("whoami", "--json"), None),
            (("call", "spew_post", "fetch"), None),
            (("user", "list"), None),
            (("user", "list", "--json"), None),
            (("user", "grant", "ann", "admin"), None),
            (("user", "revoke", "ann", "admin"), None),
            (("user", "create", "bob", "--password-stdin"), password + "\n"),
            (("logout",), None),
            (("logout",), None),
        ]:
            result = invoke(*args, stdin=stdin)
            outputs.append(result.output + result.stderr)
    tokens = list(node.sessions) + [request[3] for request in node.requests if request[3]]
    assert tokens
    for text in outputs:
        assert password not in text
        for token in tokens:
            assert token not in text
    assert not token_file.exists()


def test_a_new_token_file_is_never_readable_by_others(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "made" / "token"
        write_token_file(path, {"token": "t"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
