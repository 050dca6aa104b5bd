"""Ed25519 signing keys: query envelopes (analysts) and audit entries (sites).

Signing keys are separate from TLS keys: a TLS key proves who is on the other end of a
connection, a signing key makes a statement (a query, an audit entry) verifiable later by anyone
holding the public key, independently of any connection.

Private keys are PKCS#8 PEM files written with mode 0600; public keys are SubjectPublicKeyInfo
PEM, which is what ``consortium.toml`` carries inline.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from site_agent.errors import BadSignature, ConfigError

_LOWER_HEX = re.compile("[0-9a-f]*")

__all__ = [
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "generate_signing_key",
    "is_lower_hex",
    "load_private_key",
    "load_public_key",
    "private_key_pem",
    "public_key_pem",
    "save_private_key",
    "sign",
    "verify",
    "write_secret_file",
]


def generate_signing_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM (protect the file by permissions)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as SubjectPublicKeyInfo PEM text."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def write_secret_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file readable by its owner only (mode 0600 from creation on)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def save_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Save the private key as PEM to a new file with mode 0600."""
    write_secret_file(path, private_key_pem(key))


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load an Ed25519 private key from a PEM file; ``ConfigError`` if missing or not Ed25519."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: cannot load signing key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """Parse an Ed25519 public key from PEM text; ``ConfigError`` if it is not one."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ConfigError(f"cannot parse public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError("not an Ed25519 public key")
    return key


def sign(key: Ed25519PrivateKey, message: bytes) -> bytes:
    """The 64-byte Ed25519 signature of ``message``."""
    return key.sign(message)


def verify(public_key: Ed25519PublicKey, message: bytes, signature: bytes) -> None:
    """Return if ``signature`` is valid for ``message``; raise ``BadSignature`` otherwise."""
    try:
        public_key.verify(signature, message)
    except InvalidSignature as exc:
        raise BadSignature("signature does not verify") from exc


def is_lower_hex(text: str, nbytes: int) -> bool:
    """Whether ``text`` is exactly ``nbytes`` bytes in lowercase hex.

    Signatures, digests and fingerprints travel as hex; accepting one spelling only means a
    changed character can never decode to the same bytes unnoticed.
    """
    return len(text) == 2 * nbytes and _LOWER_HEX.fullmatch(text) is not None
