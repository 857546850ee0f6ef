"""Authenticated principals without services: tokens, revocations, access by role and owner."""

from __future__ import annotations

import base64
import hmac
import json
import time
from typing import Any, ClassVar

import attrs
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from beds.auth import Authenticator, Principal, Revocations, SessionTokens, TokenKeys, bearer
from beds.codec import encode_request
from beds.config.model import AuthSettings
from beds.dispatch import Dispatcher
from beds.envelopes import Operation, Request, RequestMeta, Response
from beds.errors import ConfigError, Unauthenticated, Unauthorized
from beds.factory import Factory
from beds.plugins import Hooks, hookimpl, make_plugin_manager
from beds.templates import AccessRules, Template
from beds.testing import MemoryAdapter, TestIdentity

ENV = "test"
RECORD = {"title": "abc", "count": 1, "active": True}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.fixture
def identity() -> TestIdentity:
    return TestIdentity(env=ENV)


def test_a_token_proves_its_principal(identity: TestIdentity) -> None:
    principal = identity.authenticator.authenticate(identity.credential("ann", ("member", "x")))
    assert principal is not None
    assert (principal.id, principal.handle) == ("ann", "ann")
    assert principal.roles == frozenset({"member", "x"})
    assert identity.authenticator.authenticate(None) is None


def _forged_tokens(identity: TestIdentity) -> dict[str, str]:
    good = identity.token("ann")
    header, claims, _ = good.split(".")
    now = int(time.time())
    base = jwt.decode(good, options={"verify_signature": False})
    other = Ed25519PrivateKey.generate()
    public_pem = identity.tokens.keys.verify["test"].public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "wrong key": jwt.encode(base, other, algorithm="EdDSA", headers={"kid": "test"}),
        "unknown kid": jwt.encode(base, other, algorithm="EdDSA", headers={"kid": "nope"}),
        "alg none": f"{_b64({'alg': 'none', 'kid': 'test'})}.{claims}.",
        # PyJWT refuses to sign HS256 with a PEM key; a forger writes the token by hand.
        "HS256 keyed with the public key": f"{_b64({'alg': 'HS256', 'kid': 'test'})}.{claims}."
        + _b64({"mac": hmac.new(public_pem, f"{header}.{claims}".encode(), "sha256").hexdigest()}),
        "expired": identity.token("ann", now=now - 10_000),
        "not yet valid": identity.token("ann", now=now + 10_000),
        "wrong audience": TestIdentity(env="prod").token("ann"),
        "tampered claims": f"{header}.{_b64({**base, 'roles': ['admin']})}.{good.split('.')[2]}",
        "not a JWT": "abc.def",
        "empty": "",
    }


@pytest.mark.parametrize(
    "case",
    [
        "wrong key",
        "unknown kid",
        "alg none",
        "HS256 keyed with the public key",
        "expired",
        "not yet valid",
        "wrong audience",
        "tampered claims",
        "not a JWT",
        "empty",
    ],
)
def test_every_bad_token_gets_the_one_error(identity: TestIdentity, case: str) -> None:
    token = _forged_tokens(identity)[case]
    with pytest.raises(Unauthenticated) as refused:
        identity.authenticator.authenticate(bearer(token))
    assert refused.value.message == "the request's credential is not valid"
    assert refused.value.details == ()


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.text(max_size=300), st.binary(max_size=300), st.integers(), st.lists(st.text()))
)
def test_any_credential_value_is_a_principal_or_401(value: object) -> None:
    authenticator = TestIdentity(env=ENV).authenticator
    try:
        principal = authenticator.authenticate(value)
    except Unauthenticated as exc:
        refused: Unauthenticated | None = exc
    else:
        refused = None
        assert principal is None or isinstance(principal, Principal)
    assert refused is None or refused.to_error().code == "BEDS-401"


def test_revoked_sessions_and_subjects_are_refused_until_their_tokens_expire(
    identity: TestIdentity,
) -> None:
    now = time.time()
    session = identity.credential("ann", session="s1")
    other = identity.credential("ann", session="s2", now=now - 5)
    assert identity.authenticator.authenticate(session) is not None  # cached from here on
    assert identity.revocations.apply({"sid": "s1", "until": now + 900})
    with pytest.raises(Unauthenticated):
        identity.authenticator.authenticate(session)
    assert identity.authenticator.authenticate(other) is not None
    assert identity.revocations.apply({"sub": "ann", "before": int(now), "until": now + 900})
    with pytest.raises(Unauthenticated):
        identity.authenticator.authenticate(other)
    later = identity.credential("ann", session="s3")  # issued after the revocation: valid
    assert identity.authenticator.authenticate(later) is not None
    assert len(identity.revocations) == 2
    identity.revocations.is_revoked({}, now=now + 901)  # entries past their tokens' lives go
    assert len(identity.revocations) == 0


@pytest.mark.parametrize(
    "data",
    [{}, {"sid": "s"}, {"until": "x", "sid": "s"}, {"until": 1.0}, {"sub": "a", "until": 1.0}],
)
def test_a_malformed_revocation_is_ignored(data: dict[str, Any]) -> None:
    assert not Revocations().apply(data)


def test_keys_load_from_a_folder_with_rotation(tmp_path: Any) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    pem = serialization.PrivateFormat.PKCS8
    (tmp_path / "k2.pem").write_bytes(
        new.private_bytes(serialization.Encoding.PEM, pem, serialization.NoEncryption())
    )
    (tmp_path / "k1.pub.pem").write_bytes(
        old.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    settings = AuthSettings(keys_dir=str(tmp_path), signing_key_id="k2")
    keys = TokenKeys.load(settings, production=False)
    assert sorted(keys.verify) == ["k1", "k2"]
    tokens = SessionTokens(keys, issuer="beds", audience=ENV, ttl=60, leeway=0)
    verifier = Authenticator(tokens, Revocations())
    issued, _ = tokens.issue(Principal(id="u", handle="u"))
    assert verifier.authenticate(bearer(issued)) is not None
    by_old = jwt.encode(
        {"iss": "beds", "aud": ENV, "sub": "u", "sid": "s", "iat": 1, "nbf": 1, "exp": 2**40},
        old,
        algorithm="EdDSA",
        headers={"kid": "k1"},
    )
    assert verifier.authenticate(bearer(by_old)) is not None  # an older kid still verifies


def test_production_refuses_missing_or_shared_keys(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match=r"auth\.keys_dir"):
        TokenKeys.load(AuthSettings(), production=True)
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "k.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o644)
    settings = AuthSettings(keys_dir=str(tmp_path), signing_key_id="k")
    with pytest.raises(ConfigError, match="chmod 600"):
        TokenKeys.load(settings, production=True)
    (tmp_path / "bad.pub.pem").write_text("not a key")
    with pytest.raises(ConfigError, match=r"bad\.pub\.pem"):
        TokenKeys.load(settings, production=False)


# -- the dispatcher: spoofed principals, roles, owners -------------------------------------------


def _owned(template: Template) -> Template:
    rules = {Operation.CREATE: frozenset({"member"}), Operation.UPDATE: frozenset({"member"})}
    access = AccessRules(rules=rules, owner="title")
    return attrs.evolve(template, access=access)


async def _send(
    target: Dispatcher, operation: Operation, payload: dict[str, Any], credential: str | None
) -> Response:
    body = encode_request(
        Request(
            operation=operation,
            template="demo_item",
            payload=payload,
            meta=RequestMeta(principal="mallory"),
        )
    )
    request, response = await target.handle(body, "application/json", credential=credential)
    assert request is not None
    assert request.meta.principal != "mallory"  # what the sender wrote never counts
    return response


def _target(template: Template, identity: TestIdentity) -> tuple[Dispatcher, MemoryAdapter]:
    adapter = MemoryAdapter()
    factory = Factory({template.name: template}, {"memory": adapter})
    target = Dispatcher(
        factory, node="n1", env=ENV, max_message_bytes=65536, authenticator=identity.authenticator
    )
    return target, adapter


async def test_a_spoofed_principal_is_anonymous(
    demo_template: Template, identity: TestIdentity
) -> None:
    target, adapter = _target(demo_template, identity)
    refused = await _send(target, Operation.CREATE, RECORD, None)
    assert refused.error is not None
    assert refused.error.code == "BEDS-401"
    guest = await _send(target, Operation.CREATE, RECORD, identity.credential("g", ("guest",)))
    assert guest.error is not None
    assert guest.error.code == "BEDS-403"
    assert not any(adapter.tables.values())
    created = await _send(target, Operation.CREATE, RECORD, identity.credential("ann"))
    assert created.ok, created.error


async def test_owners_bind_on_create_and_only_they_may_change_a_record(
    demo_template: Template, identity: TestIdentity
) -> None:
    target, adapter = _target(_owned(demo_template), identity)
    ann, bob = identity.credential("ann"), identity.credential("bob")
    admin = identity.credential("root", ("member", "admin"))
    created = await _send(target, Operation.CREATE, {**RECORD, "title": "ann"}, ann)
    assert created.ok, created.error
    other = await _send(target, Operation.CREATE, {**RECORD, "title": "ann"}, bob)
    assert other.error is not None
    assert other.error.code == "BEDS-403"
    bound = await _send(target, Operation.CREATE, {**RECORD, "title": "zzz"}, bob)
    assert bound.error is not None  # the owner field is the caller's handle, nothing else
    key = {"id": created.data["id"]}
    stolen = await _send(target, Operation.UPDATE, {**key, "count": 9}, bob)
    assert stolen.error is not None
    assert stolen.error.code == "BEDS-403"
    assert "belongs to another principal" in stolen.error.message
    mine = await _send(target, Operation.UPDATE, {**key, "count": 2}, ann)
    assert mine.ok, mine.error
    by_admin = await _send(target, Operation.UPDATE, {**key, "count": 3}, admin)
    assert by_admin.ok, by_admin.error
    for_bob = await _send(target, Operation.CREATE, {**RECORD, "title": "bob"}, admin)
    assert for_bob.ok, for_bob.error  # an admin may create a record for another owner
    rows = sorted((r["title"], r["count"]) for t in adapter.tables.values() for r in t.values())
    assert rows == [("ann", 3), ("bob", 1)]


async def test_a_credential_to_a_node_without_keys_is_refused(demo_template: Template) -> None:
    adapter = MemoryAdapter()
    target = Dispatcher(
        Factory({demo_template.name: demo_template}, {"memory": adapter}),
        node="n1",
        env=ENV,
        max_message_bytes=65536,
    )
    response = await _send(
        target, Operation.FETCH, {"query": "by_count", "params": {"count": 1}}, "Bearer x"
    )
    assert response.error is not None
    assert response.error.code == "BEDS-401"


# -- an external identity provider (OIDC), with keys the test makes ------------------------------


def _provider(tmp_path: Any) -> tuple[Any, str]:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = orjson.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [{**jwk, "kid": "idp-1", "use": "sig"}]}))
    return key, str(jwks)


def _oidc_token(key: Any, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": "https://idp.example.test/realms/beds",
        "aud": "beds-api",
        "sub": "f81d4fae",
        "preferred_username": "olga",
        "roles": ["member"],
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        **claims,
    }
    return jwt.encode(payload, key, algorithm="ES256", headers={"kid": "idp-1"})


def test_access_tokens_of_an_identity_provider_prove_principals(tmp_path: Any) -> None:
    from beds.auth import OidcVerifier
    from beds.config.model import OidcSettings

    key, jwks = _provider(tmp_path)
    settings = OidcSettings(
        issuer="https://idp.example.test/realms/beds", audience="beds-api", jwks_file=jwks
    )
    identity = TestIdentity(env=ENV)
    authenticator = Authenticator(
        identity.tokens, identity.revocations, oidc=OidcVerifier(settings, leeway=0)
    )
    principal = authenticator.authenticate(bearer(_oidc_token(key)))
    assert principal is not None
    assert (principal.id, principal.handle, principal.roles) == (
        "f81d4fae",
        "olga",
        frozenset({"member"}),
    )
    assert principal.issuer == settings.issuer
    assert authenticator.authenticate(identity.credential("ann")) is not None  # BEDS still works
    other = Ed25519PrivateKey.generate()
    for bad in (
        _oidc_token(key, aud="someone-else"),
        _oidc_token(key, exp=int(time.time()) - 600),
        _oidc_token(key, roles="admin"),
        jwt.encode(
            {
                "iss": settings.issuer,
                "aud": "beds-api",
                "sub": "x",
                "iat": 1,
                "nbf": 1,
                "exp": 2**40,
            },
            other,
            algorithm="EdDSA",
            headers={"kid": "idp-1"},
        ),
    ):
        with pytest.raises(Unauthenticated):
            authenticator.authenticate(bearer(bad))


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"issuer": "i", "jwks_file": "x"}, "auth.oidc.audience"),
        ({"issuer": "i", "audience": "a"}, "auth.oidc.jwks_file"),
        (
            {"issuer": "i", "audience": "a", "jwks_file": "x", "algorithms": ("HS256",)},
            "auth.oidc.algorithms",
        ),
        (
            {"issuer": "i", "audience": "a", "jwks_file": "/nonexistent/jwks.json"},
            "auth.oidc.jwks_file",
        ),
    ],
)
def test_a_bad_oidc_configuration_names_its_key(settings: dict[str, Any], key: str) -> None:
    from beds.auth import OidcVerifier
    from beds.config.model import OidcSettings

    with pytest.raises(ConfigError) as refused:
        OidcVerifier(OidcSettings(**settings), leeway=0)
    assert refused.value.key == key


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    header=st.fixed_dictionaries(
        {
            "alg": st.sampled_from(["none", "HS256", "RS256", "ES256", "EdDSA", "PS256", "x", ""]),
            "kid": st.sampled_from(["test", "idp-1", "nope", ""]) | st.integers(),
        },
        optional={"typ": st.text(max_size=5), "crit": _JSON},
    ),
    claims=st.dictionaries(
        st.sampled_from(["iss", "aud", "sub", "exp", "nbf", "iat", "roles", "sid", "handle"]),
        _JSON,
    ),
    signature=st.binary(max_size=80),
)
def test_any_jwt_shaped_credential_is_a_principal_or_401(
    tmp_path_factory: pytest.TempPathFactory,
    header: dict[str, Any],
    claims: dict[str, Any],
    signature: bytes,
) -> None:
    from beds.auth import OidcVerifier
    from beds.config.model import OidcSettings

    _, jwks = _provider(tmp_path_factory.mktemp("idp"))
    settings = OidcSettings(issuer="https://idp.example.test", audience="beds-api", jwks_file=jwks)
    identity = TestIdentity(env=ENV)
    authenticator = Authenticator(
        identity.tokens, identity.revocations, oidc=OidcVerifier(settings, leeway=0)
    )
    mac = base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    token = f"{_b64(header)}.{_b64(claims)}.{mac}"
    with pytest.raises(Unauthenticated, match=r"^the request's credential is not valid$"):
        authenticator.authenticate(bearer(token))  # nobody signed it: never a principal


def test_a_declared_principal_param_is_bound_and_cannot_be_chosen(
    demo_template: Template, identity: TestIdentity
) -> None:
    from beds.dispatch.access import bind_principal
    from beds.templates.model import QuerySpec

    spec = demo_template.queries["by_title"]
    template = attrs.evolve(
        demo_template,
        queries={
            **demo_template.queries,
            "mine": attrs.evolve(spec, name="mine", principal="title"),
        },
    )
    ann = Principal(id="7", handle="ann")
    fetch = Request(operation=Operation.FETCH, template="demo_item", payload={"query": "mine"})
    assert bind_principal(fetch, template, ann).payload == {
        "query": "mine",
        "params": {"title": "ann"},
    }
    with pytest.raises(Unauthenticated):
        bind_principal(fetch, template, None)
    chosen = attrs.evolve(fetch, payload={"query": "mine", "params": {"title": "bob"}})
    with pytest.raises(Unauthorized):
        bind_principal(chosen, template, ann)
    other = attrs.evolve(fetch, payload={"query": "by_title", "params": {"title": "bob"}})
    assert bind_principal(other, template, None) is other
    assert isinstance(spec, QuerySpec)


class ApiKeys:
    """A plugin authenticator: API keys from a table in memory."""

    KEYS: ClassVar[dict[str, Principal]] = {
        "k-ops": Principal(id="svc-7", handle="ops-bot", roles=frozenset({"member"}))
    }

    @hookimpl
    def beds_authenticate(self, credential: str) -> Principal | None:
        scheme, _, key = credential.partition(" ")
        if scheme != "ApiKey":
            return None  # not ours: the next authenticator is asked
        if key == "junk":
            return "not a principal"  # type: ignore[return-value]
        if key not in self.KEYS:
            raise Unauthenticated("the request's credential is not valid")
        return self.KEYS[key]


def test_a_plugin_authenticator_is_asked_first_and_may_pass(identity: TestIdentity) -> None:
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(ApiKeys(), name="api-keys")
    hooks = Hooks(pm)
    assert hooks.implemented("beds_authenticate")
    authenticator = Authenticator(identity.tokens, identity.revocations, plugins=hooks.authenticate)
    bot = authenticator.authenticate("ApiKey k-ops")
    assert bot is not None
    assert (bot.id, bot.handle) == ("svc-7", "ops-bot")
    member = authenticator.authenticate(identity.credential("ann"))  # passed on to BEDS tokens
    assert member is not None
    assert member.handle == "ann"
    for refused in ("ApiKey nope", "ApiKey junk", "Basic YW5uOnB3"):
        with pytest.raises(Unauthenticated):
            authenticator.authenticate(refused)


@given(now=st.floats(min_value=1e9, max_value=4e9))
def test_a_fresh_token_is_valid_at_once_and_after_a_revocation_made_before_it(now: float) -> None:
    """A node with no leeway takes a token the moment it is issued (PyJWT compares whole
    seconds), and a revocation of the tokens issued before a moment spares one issued after."""
    identity = TestIdentity(env="test")
    token = identity.token("ann", now=now)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert int(claims["nbf"]) <= now
    assert int(claims["iat"]) <= now
    identity.revocations.revoke_subject("ann", before=now, until=now + 60)
    assert not identity.revocations.is_revoked(claims, now=now)
    later = jwt.decode(identity.token("ann", now=now + 1e-4), options={"verify_signature": False})
    assert not identity.revocations.is_revoked(later, now=now)
    earlier = jwt.decode(identity.token("ann", now=now - 1e-4), options={"verify_signature": False})
    assert identity.revocations.is_revoked(earlier, now=now)
