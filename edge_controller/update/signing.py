"""Ed25519 signatures on bundles (the city's key; `cryptography` package).

The signature is detached (`bundle.spb.sig`, 64 raw bytes) and covers the
52-byte statement ``DOMAIN + sha256(bundle)``. Signing the digest rather
than the bytes lets a verifier that streams the image (the board, if it
ever verifies) reuse the SHA-256 it already computes, and the domain tag
keeps a firmware signature from ever passing as a signature on anything
else the same key signs (commands, config bundles).

Keys are PEM files: PKCS#8 private keys (written 0600) and
SubjectPublicKeyInfo public keys; a public key may also be given as 64 hex
characters (the raw 32-byte key), which fits in a config value.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_controller.update.bundle import Bundle, parse

DOMAIN = b"smartpole firmware bundle v1\n"  # 29 bytes; + 32-byte digest
SIG_LEN = 64


class SignatureError(ValueError):
    """The bundle's signature is missing, malformed or not the city's."""


class KeyFileError(ValueError):
    """A key file cannot be read as an Ed25519 key."""


def statement(data: bytes) -> bytes:
    return DOMAIN + hashlib.sha256(data).digest()


def generate(private_path: Path, public_path: Path | None = None, *, force: bool = False) -> (
        Ed25519PublicKey):
    """Create a key pair; refuses to overwrite unless `force`."""
    public_path = public_path or private_path.with_suffix(".pub")
    for p in (private_path, public_path):
        if p.exists() and not force:
            raise FileExistsError(f"{p} exists; pass --force to replace it")
    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = key.public_key()
    public_path.write_bytes(pub.public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo))
    return pub


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key")
    return key


def load_public(path_or_hex: Path | str) -> Ed25519PublicKey:
    text = str(path_or_hex).strip()
    if len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
    raw = Path(text).read_bytes()
    try:
        if raw.startswith(b"-----BEGIN PRIVATE KEY"):
            return load_private(Path(text)).public_key()
        key = serialization.load_pem_public_key(raw)
    except ValueError as e:
        raise KeyFileError(f"{text}: not a PEM public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{text}: not an Ed25519 key")
    return key


def key_id(key: Ed25519PublicKey) -> str:
    """Short fingerprint for messages: first 8 bytes of sha256(raw key), hex."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(data: bytes, key: Ed25519PrivateKey) -> bytes:
    return key.sign(statement(data))


def verify(data: bytes, signature: bytes, key: Ed25519PublicKey) -> Bundle:
    """The parsed bundle if `signature` is the key's; raises SignatureError."""
    if len(signature) != SIG_LEN:
        raise SignatureError(f"signature is {len(signature)} bytes, not {SIG_LEN}")
    try:
        key.verify(signature, statement(data))
    except InvalidSignature:
        raise SignatureError(
            f"bundle signature does not verify with key {key_id(key)}: the bundle was "
            "changed after signing or signed with another key") from None
    return parse(data)


def sig_path(bundle_path: Path) -> Path:
    return bundle_path.with_name(bundle_path.name + ".sig")


def read_signed(bundle_path: Path, key: Ed25519PublicKey) -> Bundle:
    """Read `X.spb` and `X.spb.sig` and verify them."""
    sp = sig_path(bundle_path)
    if not sp.exists():
        raise SignatureError(f"{sp} is missing: every bundle needs its detached signature")
    return verify(bundle_path.read_bytes(), sp.read_bytes(), key)
