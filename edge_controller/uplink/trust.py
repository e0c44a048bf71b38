"""Commands you can trust: Ed25519 signatures by the city's key, and replay protection.

The signature covers the command envelope without its `sig` key, serialised
canonically: JSON with sorted keys, no whitespace, UTF-8 (`signed_bytes`). A
backend signs exactly those bytes and puts the base64 signature in `sig`.
Replays: every answered id is remembered (bounded, persisted with the queue), and
a command whose id was seen is answered from that cache, never executed twice.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from edge_controller.api.commands import Envelope, parse_ts


def signed_bytes(envelope: dict[str, Any]) -> bytes:
    body = {k: v for k, v in envelope.items() if k != "sig"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key


def verify(envelope: dict[str, Any], key: Ed25519PublicKey) -> str | None:
    """None when the signature is valid, else the reason it is not."""
    sig = envelope.get("sig")
    if not isinstance(sig, str):
        return "unsigned"
    try:
        key.verify(base64.b64decode(sig, validate=True), signed_bytes(envelope))
    except (InvalidSignature, ValueError):
        return "bad signature"
    return None


@dataclass(frozen=True)
class TrustPolicy:
    """Which parsed commands the pole believes (sans-I/O: the time is an argument)."""

    key: Ed25519PublicKey | None = None
    require_signature: bool = False
    max_clock_skew_s: float = 300.0

    def check(self, envelope: dict[str, Any], cmd: Envelope, now: float,
              allow_unsigned: frozenset[str] = frozenset()) -> tuple[str, str] | None:
        """None to run `cmd` (`envelope` is its JSON object), else (reason, detail).

        `allow_unsigned`: command types run without a signature even when one is
        required, for a backend profile whose platform cannot sign and whose operator
        said so explicitly (`accept_unsigned`, docs/backends.md). A signature that is
        present is still verified."""
        issued = parse_ts(cmd.issued_at)
        if issued - now > self.max_clock_skew_s:
            return "not_yet_valid", f"issued_at is {issued - now:.0f} s in the future"
        if self.key is None or (cmd.sig is None and not self.require_signature):
            return None
        if cmd.sig is None and cmd.body.type in allow_unsigned:
            return None
        problem = verify(envelope, self.key)
        if problem is not None:
            return "signature", f"{problem} (commands must be signed with the city's key)"
        return None


class ResultCache:
    """Answered command ids and their results: bounded LRU, persisted in SQLite.

    `path` is the queue's database file (its own connection, its own table);
    None keeps the cache in memory.
    """

    def __init__(self, path: str | Path | None, size: int = 2000) -> None:
        self.size = size
        self.db = None if path is None else sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False)
        self._mem: OrderedDict[str, dict[str, Any]] = OrderedDict()
        db = self.db
        if db is not None:
            db.execute("PRAGMA synchronous=FULL")
            db.execute("CREATE TABLE IF NOT EXISTS results (id TEXT PRIMARY KEY, "
                       "result TEXT NOT NULL, at REAL NOT NULL)")
            for cid, res in db.execute(
                    "SELECT id, result FROM results ORDER BY at DESC LIMIT ?", (size,)):
                self._mem[cid] = json.loads(res)
                self._mem.move_to_end(cid, last=False)

    def get(self, cid: str) -> dict[str, Any] | None:
        return self._mem.get(cid)

    def put(self, cid: str, result: dict[str, Any], at: float) -> None:
        self._mem[cid] = result
        self._mem.move_to_end(cid)
        while len(self._mem) > self.size:
            old, _ = self._mem.popitem(last=False)
            if self.db is not None:
                self.db.execute("DELETE FROM results WHERE id=?", (old,))
        if self.db is not None:
            self.db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?)",
                            (cid, json.dumps(result), at))
