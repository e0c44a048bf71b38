"""A test city key for the simulated pole, `make run`, the HIL tests and fleet-sim.

Generated at start, never written anywhere but a workdir: the simulated pole runs
with `[commands] require_signature = true` like a provisioned one, and whoever sends
it commands signs them with this key (docs/mqtt.md, "Commands"; docs/security.md).
The signed form is written from the contract in docs/mqtt.md: the envelope without
`sig`, JSON with sorted keys, no whitespace, UTF-8.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

# pole id -> the key its commands are signed with, for the pole(s) of this process
# (hil_tests/capture.py signs what a test publishes to a pole's cmd topic).
KEYS: dict[str, TestCityKey] = {}


def _iso(t: float) -> str:
    dt = datetime.fromtimestamp(t, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class TestCityKey:
    """An Ed25519 key pair standing in for the city's command key."""

    __test__ = False  # not a pytest test class

    def __init__(self, private: Ed25519PrivateKey | None = None) -> None:
        self.private = private or Ed25519PrivateKey.generate()

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(Encoding.PEM,
                                                      PublicFormat.SubjectPublicKeyInfo)

    def write_public(self, path: Path) -> Path:
        path.write_bytes(self.public_pem())
        return path

    def sign(self, envelope: dict[str, Any], pole_id: str,
             lifetime_s: float = 300.0) -> dict[str, Any]:
        """`envelope` bound to `pole_id`, with expires_at (issued_at + lifetime_s) unless it
        has one, and signed; issued_at is now unless it has one."""
        env = {k: v for k, v in envelope.items() if k != "sig"}
        env.setdefault("issued_at", _iso(time.time()))
        if "expires_at" not in env:
            issued = datetime.fromisoformat(env["issued_at"].replace("Z", "+00:00"))
            env["expires_at"] = _iso(issued.timestamp() + lifetime_s)
        env.setdefault("pole_id", pole_id)
        canon = json.dumps(env, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False).encode()
        env["sig"] = base64.b64encode(self.private.sign(canon)).decode()
        return env

    def sign_payload(self, payload: bytes | str, pole_id: str) -> bytes | str:
        """`payload` signed when it is a command object without `sig`; anything else (a
        malformed message a test sends on purpose, one already signed) unchanged."""
        try:
            env = json.loads(payload)
        except (ValueError, TypeError):
            return payload
        if not isinstance(env, dict) or "sig" in env or not isinstance(env.get("body"), dict) \
                or not isinstance(env.get("id"), str) or not isinstance(env.get("issued_at"), str):
            return payload
        try:
            return json.dumps(self.sign(env, pole_id))
        except ValueError:  # a malformed issued_at: the pole says schema
            return payload
