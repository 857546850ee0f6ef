"""The Ed25519 keys of BEDS session tokens, by key id (``kid``), for signing and verifying.

``auth.keys_dir`` holds ``{kid}.pub.pem`` files (every node reads them all, so a token signed
with an older key still verifies after a rotation) and, on the nodes that issue tokens, the
private ``{signing_key_id}.pem``. In development with no ``keys_dir``, the user's
``$XDG_DATA_HOME/beds/auth`` (``~/.local/share/beds/auth``) is used, and a key pair is made on
first use, so every development node, test and command of one user shares it whatever its
working folder; production requires the folder and its files.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from beds.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from beds.config.model import AuthSettings

__all__ = ("TokenKeys", "development_keys_dir")
_KID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@attrs.frozen(kw_only=True)
class TokenKeys:
    """Verification keys by ``kid``, and the signing key when this node has it."""

    verify: dict[str, Ed25519PublicKey]
    signing_kid: str
    signing: Ed25519PrivateKey | None = attrs.field(default=None, repr=False)

    @classmethod
    def load(
        cls, settings: AuthSettings, *, production: bool, base: Path | None = None
    ) -> TokenKeys:
        """Read the keys of ``settings`` (making a development pair when there is none).

        Raises:
            ConfigError: the folder, a key file or the signing kid is not usable; the message
                names the key (``auth.keys_dir``, ``auth.signing_key_id``) and the file.
        """
        if not _KID.fullmatch(settings.signing_key_id):
            raise ConfigError("must be 1-64 letters, digits, '-' or '_'", key="auth.signing_key_id")
        if settings.keys_dir:
            folder = Path(settings.keys_dir)
            if base is not None and not folder.is_absolute():
                folder = base / folder
        elif production:
            raise ConfigError(
                "production needs a folder of token keys (docs/security.md)", key="auth.keys_dir"
            )
        else:
            folder = development_keys_dir()
            _ensure_pair(folder, settings.signing_key_id)
        if not folder.is_dir():
            raise ConfigError(f"{folder} is not a folder", key="auth.keys_dir")
        verify = {}
        for path in sorted(folder.glob("*.pub.pem")):
            kid = path.name.removesuffix(".pub.pem")
            if _KID.fullmatch(kid):
                verify[kid] = _read_public(path)
        signing = None
        private = folder / f"{settings.signing_key_id}.pem"
        if private.exists():
            if production and private.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(
                    f"{private} may be read by other users than its owner (chmod 600 it)",
                    key="auth.keys_dir",
                )
            signing = _read_private(private)
            verify.setdefault(settings.signing_key_id, signing.public_key())
        if not verify:
            raise ConfigError(f"{folder} holds no {{kid}}.pub.pem key", key="auth.keys_dir")
        return cls(verify=verify, signing_kid=settings.signing_key_id, signing=signing)


def development_keys_dir() -> Path:
    """Where development nodes keep their token keys when ``auth.keys_dir`` is not set."""
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "beds" / "auth"


def _read_public(path: Path) -> Ed25519PublicKey:
    key = _read(path, "PEM public key", serialization.load_pem_public_key)
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key", key="auth.keys_dir")
    return key


def _read_private(path: Path) -> Ed25519PrivateKey:
    key = _read(
        path,
        "unencrypted PEM private key",
        lambda data: serialization.load_pem_private_key(data, password=None),
    )
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key", key="auth.keys_dir")
    return key


def _read(path: Path, what: str, load: Callable[[bytes], object]) -> object:
    try:
        return load(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        # The exception's class only, never its text: it may quote the file.
        raise ConfigError(
            f"{path} is not a readable {what} ({exc.__class__.__name__})", key="auth.keys_dir"
        ) from None


def _ensure_pair(folder: Path, kid: str) -> None:
    """Make ``{kid}.pem`` and ``{kid}.pub.pem`` in ``folder`` unless they exist (development).

    Several processes may start at once (two nodes, a test run): each writes to a file of its
    own and links it into place, so exactly one pair wins and nobody reads half a file.
    """
    private = folder / f"{kid}.pem"
    if private.exists():
        return
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    temporary = folder / f".{kid}.{os.getpid()}.pem"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    try:
        os.link(temporary, private)
    except FileExistsError:
        return  # another process made the pair first
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
    (folder / f"{kid}.pub.pem").write_bytes(public)
