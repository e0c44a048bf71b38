"""Commands you can trust: Ed25519 signatures by the city's key, and replay protection.

The signature covers the command envelope without its `sig` key, serialised
canonically: JSON with sorted keys, no whitespace, UTF-8 (`signed_bytes`). A
backend signs exactly those bytes and puts the base64 signature in `sig`. Since
API 1.8.0 a signed envelope also carries `pole_id` (the pole it is for) and
`expires_at` (at most `max_lifetime_s` after `issued_at`), so the signature binds
the pole, a deadline and the body (docs/security.md, "Commands").

Replays: every command that ran is remembered with a hash of its body and its
deadline (bounded, persisted with the queue). A repeated id with the same body is
answered with the original result (marked duplicate), with another body it is a
conflict; rejected commands are never remembered, so junk cannot push a real id
out. An id is forgotten only once its deadline has passed, or, when the cache is
full, with its deadline raising a floor below which every command is refused: a
forgotten signed command can never run again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
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
    max_lifetime_s: float = 900.0
    pole_id: str | None = None  # this pole: a command naming another is wrong_pole

    @property
    def mode(self) -> str:
        """Birth's `command_signatures`: required, optional (verified when present) or off."""
        if self.key is None:
            return "off"
        return "required" if self.require_signature else "optional"

    def check(self, envelope: dict[str, Any], cmd: Envelope, now: float,
              allow_unsigned: frozenset[str] = frozenset()) -> tuple[str, str] | None:
        """None to run `cmd` (`envelope` is its JSON object), else (reason, detail).

        `now` is the pole's clock. `allow_unsigned`: command types run without a
        signature even when one is required, for a backend profile whose platform
        cannot sign and whose operator said so explicitly (`accept_unsigned`,
        docs/backends.md). A signature that is present is still verified."""
        issued = parse_ts(cmd.issued_at)
        if issued - now > self.max_clock_skew_s:
            return "not_yet_valid", f"issued_at is {issued - now:.0f} s in the future"
        if self.pole_id is not None and cmd.pole_id is not None and cmd.pole_id != self.pole_id:
            return "wrong_pole", f"the command is for {cmd.pole_id}, this is {self.pole_id}"
        if cmd.sig is not None and cmd.expires_at is not None:
            life = parse_ts(cmd.expires_at) - issued
            if life > self.max_lifetime_s:
                return "lifetime", (f"expires_at is {life:.0f} s after issued_at; this pole "
                                    f"accepts at most {self.max_lifetime_s:.0f} s")
        if self.key is None:
            return None  # mode off: nothing to verify with (a lab pole; warned at start)
        if cmd.sig is None:
            if not self.require_signature or cmd.body.type in allow_unsigned:
                return None
            return "signature", "unsigned (commands must be signed with the city's key)"
        problem = verify(envelope, self.key)
        if problem is not None:
            return "signature", f"{problem} (commands must be signed with the city's key)"
        return None


def body_hash(envelope: dict[str, Any]) -> str:
    """What makes two commands with one id the same command: their body."""
    canon = json.dumps(envelope.get("body"), sort_keys=True, separators=(",", ":"),
                       ensure_ascii=False).encode()
    return hashlib.sha256(canon).hexdigest()[:32]


@dataclass(frozen=True)
class Cached:
    result: dict[str, Any]
    body: str | None  # body_hash; None for an entry written before 1.8.0
    expires: float | None  # the deadline of a signed command, else None


class ResultCache:
    """The commands that ran: id -> original result, body hash and deadline.

    Bounded (`size`), persisted in SQLite (`path` is the queue's database file, its
    own connection and tables; None keeps it in memory). Only commands that passed
    the trust rules are put here.

    `floor`: every id forgotten so far had a deadline at or below it; a command whose
    `expires_at` is not above the floor is refused, so forgetting never reopens a
    replay. `time_floor`: a lower bound on the real time, from the newest signed
    command that ran (its issued_at less the allowed skew); the pole judges expiry by
    max(its clock, time_floor), so a clock set back cannot revive old commands.
    """

    def __init__(self, path: str | Path | None, size: int = 10_000) -> None:
        self.size = size
        self.floor = -math.inf
        self.time_floor = -math.inf
        self.db = None if path is None else sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False)
        self._mem: OrderedDict[str, Cached] = OrderedDict()
        db = self.db
        if db is not None:
            db.execute("PRAGMA synchronous=FULL")
            db.execute("CREATE TABLE IF NOT EXISTS results (id TEXT PRIMARY KEY, "
                       "result TEXT NOT NULL, at REAL NOT NULL)")
            cols = {r[1] for r in db.execute("PRAGMA table_info(results)")}
            for col, kind in (("body", "TEXT"), ("expires", "REAL")):
                if col not in cols:  # a database from before 1.8.0
                    db.execute(f"ALTER TABLE results ADD COLUMN {col} {kind}")
            db.execute("CREATE TABLE IF NOT EXISTS replay_meta (k TEXT PRIMARY KEY, "
                       "v REAL NOT NULL)")
            meta = dict(db.execute("SELECT k, v FROM replay_meta"))
            self.floor = meta.get("floor", -math.inf)
            self.time_floor = meta.get("time_floor", -math.inf)
            rows = list(db.execute("SELECT id, result, body, expires FROM results "
                                   "ORDER BY at DESC"))
            for cid, res, body, exp in rows[:size]:
                self._mem[cid] = Cached(json.loads(res), body, exp)
                self._mem.move_to_end(cid, last=False)
            for cid, _, _, exp in rows[size:]:  # the cache was made smaller
                self._forget(cid, exp)

    def __len__(self) -> int:
        return len(self._mem)

    def get(self, cid: str) -> Cached | None:
        return self._mem.get(cid)

    def put(self, cid: str, result: dict[str, Any], at: float, body: str | None = None,
            expires: float | None = None) -> None:
        self._mem[cid] = Cached(result, body, expires)
        self._mem.move_to_end(cid)
        if self.db is not None:
            self.db.execute("INSERT OR REPLACE INTO results (id, result, at, body, expires) "
                            "VALUES (?, ?, ?, ?, ?)", (cid, json.dumps(result), at, body, expires))
        if len(self._mem) > self.size:
            # Expired first (the expiry check refuses those anyway), then the oldest.
            for old in [k for k, c in self._mem.items() if c.expires is not None
                        and c.expires < max(at, self.time_floor)]:
                self._forget(old, self._mem.pop(old).expires)
            while len(self._mem) > self.size:
                old, c = self._mem.popitem(last=False)
                self._forget(old, c.expires)

    def _forget(self, cid: str, expires: float | None) -> None:
        if expires is not None and expires > self.floor:
            self.floor = expires
            self._meta("floor", expires)
        if self.db is not None:
            self.db.execute("DELETE FROM results WHERE id=?", (cid,))

    def saw_trusted(self, issued: float, skew: float) -> None:
        """A signed command issued at `issued` ran: the real time is past issued - skew."""
        if issued - skew > self.time_floor:
            self.time_floor = issued - skew
            self._meta("time_floor", self.time_floor)

    def _meta(self, k: str, v: float) -> None:
        if self.db is not None:
            self.db.execute("INSERT OR REPLACE INTO replay_meta VALUES (?, ?)", (k, v))
