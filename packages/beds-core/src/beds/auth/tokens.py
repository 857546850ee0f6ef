"""Session tokens BEDS issues (JWT signed with EdDSA), and access tokens of an OIDC provider.

Verification pins the algorithm (a token cannot choose ``none`` or an HMAC algorithm keyed with a
public key), requires ``exp``, ``iat``, ``nbf``, ``sub`` and the issuer and audience, and tolerates
``leeway`` seconds of clock difference. Every failure is :class:`~beds.errors.Unauthenticated`
with one message; the reason goes to the node log at debug level, never the token itself.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import orjson
from loguru import logger

from beds.auth.principal import Principal
from beds.errors import ConfigError, Unauthenticated

if TYPE_CHECKING:
    from collections.abc import Callable

    from beds.auth.keys import TokenKeys
    from beds.config.model import OidcSettings

__all__ = ("INVALID_CREDENTIAL", "OidcVerifier", "SessionTokens", "refuse")

INVALID_CREDENTIAL = "the request's credential is not valid"
_REQUIRED = ["exp", "iat", "nbf", "sub"]
_REFUSED = (jwt.PyJWTError, ValueError, TypeError)
"""What verifying a hostile token may raise: every PyJWT error (an ``alg`` that does not fit
the key raises ``InvalidKeyError``, not an ``InvalidTokenError``) and bad base64 or JSON."""
_ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def refuse(reason: str) -> Unauthenticated:
    """The one error every refused credential gets; ``reason`` goes to the debug log only."""
    logger.debug("credential refused: {}", reason)
    return Unauthenticated(INVALID_CREDENTIAL)


class SessionTokens:
    """Issue (where the signing key is) and verify BEDS session tokens.

    Args:
        keys: the verification keys, and the signing key on issuing nodes.
        issuer: the ``iss`` claim.
        audience: the ``aud`` claim: the environment, so a token of ``staging`` is refused in
            ``prod``.
        ttl: seconds a token is valid.
        leeway: seconds of clock difference tolerated.
    """

    def __init__(
        self, keys: TokenKeys, *, issuer: str, audience: str, ttl: float, leeway: float
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self.leeway = leeway

    @property
    def can_issue(self) -> bool:
        """Whether this node has the signing key."""
        return self.keys.signing is not None

    def issue(
        self, principal: Principal, *, session: str = "", now: float | None = None
    ) -> tuple[str, float]:
        """Sign a token for ``principal``; return it and its expiry (Unix time).

        Raises:
            ConfigError: this node has no signing key (``auth.keys_dir``).
        """
        if self.keys.signing is None:
            raise ConfigError(
                f"this node cannot issue tokens: no {self.keys.signing_kid}.pem",
                key="auth.keys_dir",
            )
        # The exact time, not rounded: rounded to milliseconds it could cross into the next
        # second, which a node with no leeway refused as not yet valid (PyJWT compares whole
        # seconds), or fall before a revocation made just before it, which then caught it.
        issued = now if now is not None else time.time()
        expires = int(issued + self.ttl)
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": principal.id,
            "handle": principal.handle,
            "roles": sorted(principal.roles),
            "sid": session or uuid.uuid4().hex,
            "jti": uuid.uuid4().hex,
            "iat": issued,
            "nbf": issued,
            "exp": expires,
        }
        token = jwt.encode(
            claims, self.keys.signing, algorithm="EdDSA", headers={"kid": self.keys.signing_kid}
        )
        return token, float(expires)

    def verify(self, token: str) -> tuple[Principal, dict[str, Any]]:
        """Check ``token``'s signature and claims; return its principal and claims.

        Raises:
            Unauthenticated: anything about the token is not right.
        """
        claims = _decode(
            token,
            self.keys.verify.get,
            algorithms=["EdDSA"],
            audience=self.audience,
            issuer=self.issuer,
            leeway=self.leeway,
            required=[*_REQUIRED, "iss", "aud", "sid"],
        )
        return _principal(claims, issuer=self.issuer, handle_claim="handle"), claims


class OidcVerifier:
    """Verify access tokens of an external OpenID Connect provider, keys from a JWKS file.

    Raises:
        ConfigError: the settings are incomplete or the JWKS file is not usable.
    """

    def __init__(self, settings: OidcSettings, *, leeway: float, base: Path | None = None) -> None:
        if not settings.audience or not settings.jwks_file:
            missing = "auth.oidc.audience" if not settings.audience else "auth.oidc.jwks_file"
            raise ConfigError("is required with auth.oidc.issuer", key=missing)
        unsafe = [name for name in settings.algorithms if name not in _ASYMMETRIC]
        if unsafe:
            raise ConfigError(
                f"only asymmetric algorithms may verify tokens, not {', '.join(unsafe)}",
                key="auth.oidc.algorithms",
            )
        path = Path(settings.jwks_file)
        if base is not None and not path.is_absolute():
            path = base / path
        try:
            self.keys = jwt.PyJWKSet.from_dict(orjson.loads(path.read_bytes()))
        except (OSError, ValueError, jwt.PyJWKSetError) as exc:
            raise ConfigError(
                f"{path} is not a readable JSON Web Key Set ({exc.__class__.__name__})",
                key="auth.oidc.jwks_file",
            ) from None
        self.settings = settings
        self.leeway = leeway

    @property
    def issuer(self) -> str:
        """The provider's ``iss``."""
        return self.settings.issuer

    def _key(self, kid: str) -> Any:
        try:
            return self.keys[kid].key
        except KeyError:
            return None

    def verify(self, token: str) -> tuple[Principal, dict[str, Any]]:
        """Check ``token``; return its principal (roles from ``roles_claim``) and claims.

        Raises:
            Unauthenticated: anything about the token is not right.
        """
        claims = _decode(
            token,
            self._key,
            algorithms=list(self.settings.algorithms),
            audience=self.settings.audience,
            issuer=self.settings.issuer,
            leeway=self.leeway,
            required=[*_REQUIRED, "iss", "aud"],
        )
        return _principal(
            claims,
            issuer=self.settings.issuer,
            handle_claim=self.settings.handle_claim,
            roles_claim=self.settings.roles_claim,
        ), claims


def _decode(
    token: str,
    key_of: Callable[[str], Any],
    *,
    algorithms: list[str],
    audience: str,
    issuer: str,
    leeway: float,
    required: list[str],
) -> dict[str, Any]:
    """Check ``token``'s signature with the key its ``kid`` names, and its claims.

    Raises:
        Unauthenticated: malformed, unknown key id, bad signature, or a claim not right.
    """
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except _REFUSED as exc:
        raise refuse(f"malformed token ({exc.__class__.__name__})") from None
    key = key_of(kid) if isinstance(kid, str) else None
    if key is None:
        raise refuse(f"unknown key id {str(kid)[:64]!r}")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={"require": required},
        )
    except _REFUSED as exc:
        raise refuse(f"{exc.__class__.__name__}: {exc}") from None
    return claims


def _principal(
    claims: dict[str, Any], *, issuer: str, handle_claim: str, roles_claim: str = "roles"
) -> Principal:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not 0 < len(subject.encode()) <= 255:
        raise refuse("sub is not a text of 1-255 bytes")
    if not subject.isprintable():
        raise refuse("sub is not printable")  # it becomes meta.principal (wire limits)
    handle = claims.get(handle_claim)
    roles = claims.get(roles_claim, [])
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise refuse(f"{roles_claim} is not a list of names")
    session = claims.get("sid", "")
    return Principal(
        id=subject,
        handle=handle if isinstance(handle, str) and handle else subject,
        roles=frozenset(roles),
        issuer=issuer,
        session=session if isinstance(session, str) else "",
    )
