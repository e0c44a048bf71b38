"""Store-and-forward: the durable queue behind the single publish path.

Every record (telemetry, events, command results) is written to SQLite (WAL,
synchronous=FULL: a power cut loses nothing that was committed) with the
pole's next sequence number before anything is sent, and deleted only after
the broker acknowledged it (QoS 1 PUBACK). Sequence numbers are per pole,
persisted, contiguous: a backend sees a gap as loss and a repeat as a duplicate.

Bounds and drop policy: at most `max_records` records and `max_bytes` of
payload; when over, the oldest telemetry goes first, then the oldest of
anything; records older than `max_age_s` are dropped. Every drop is counted
(`dropped`), so the backend can tell loss by policy from loss by fault.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    kind TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('next_seq', 1);
INSERT OR IGNORE INTO meta VALUES ('dropped', 0);
"""


@dataclass(frozen=True)
class Stored:
    seq: int
    topic: str
    payload: bytes
    qos: int
    created: float


class RecordStore:
    def __init__(self, path: Path | str, max_records: int = 100_000,
                 max_bytes: int = 64 * 2**20, max_age_s: float = 7 * 86400) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._count, self._bytes = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM records").fetchone()

    def _meta(self, key: str) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0])

    @property
    def next_seq(self) -> int:
        return self._meta("next_seq")

    @property
    def dropped(self) -> int:
        return self._meta("dropped")

    def __len__(self) -> int:
        return int(self._count)

    def append(self, topic: str, payload: dict[str, Any], qos: int = 1,
               kind: str = "event", now: float | None = None) -> int:
        """Give the record its sequence number, make it durable, return the number."""
        return self._insert(topic, lambda seq: json.dumps(
            {**payload, "seq": seq}, separators=(",", ":")).encode(), qos, kind, now)

    def append_raw(self, topic: str, body: bytes, qos: int = 1, kind: str = "event",
                   now: float | None = None) -> int:
        """A record whose bytes are final (a backend profile's payload, which carries no
        `seq` of ours); same durability, order and bounds as `append`."""
        return self._insert(topic, lambda _seq: body, qos, kind, now)

    def _insert(self, topic: str, body_for: Callable[[int], bytes], qos: int, kind: str,
                now: float | None) -> int:
        now = time.time() if now is None else now
        self.db.execute("BEGIN IMMEDIATE")
        try:
            seq = self._meta("next_seq")
            body = body_for(seq)
            self.db.execute("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?)",
                            (seq, topic, body, qos, kind, now))
            self.db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (seq + 1,))
            self._count += 1
            self._bytes += len(body)
            self._enforce(now)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            self._count, self._bytes = self.db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM records").fetchone()
            raise
        return seq

    def _drop(self, where: str, args: tuple[Any, ...] = ()) -> None:
        cur = self.db.execute(f"DELETE FROM records WHERE {where} RETURNING LENGTH(payload)",
                              args)
        sizes = [r[0] for r in cur.fetchall()]
        if sizes:
            self._count -= len(sizes)
            self._bytes -= sum(sizes)
            self.db.execute("UPDATE meta SET value=value+? WHERE key='dropped'", (len(sizes),))

    def _enforce(self, now: float) -> None:
        self._drop("created < ?", (now - self.max_age_s,))
        while self._count > self.max_records or self._bytes > self.max_bytes:
            over = max(1, self._count - self.max_records)
            # Telemetry is superseded by the next report; events and results are not.
            self._drop("seq IN (SELECT seq FROM records WHERE kind='telemetry' "
                       "ORDER BY seq LIMIT ?)", (over,))
            if self._count > self.max_records or self._bytes > self.max_bytes:
                self._drop("seq IN (SELECT seq FROM records ORDER BY seq LIMIT ?)", (over,))

    def peek(self, limit: int = 100, min_seq: int = 0) -> list[Stored]:
        rows = self.db.execute(
            "SELECT seq, topic, payload, qos, created FROM records WHERE seq >= ? "
            "ORDER BY seq LIMIT ?", (min_seq, limit)).fetchall()
        return [Stored(int(r[0]), str(r[1]), bytes(r[2]), int(r[3]), float(r[4])) for r in rows]

    def discard(self, min_seq: int = 0) -> int:
        """Drop every record from `min_seq` on (counted in `dropped`): records that no
        longer mean anything, e.g. a backend profile's previous session. Their number."""
        before = self._count
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self._drop("seq >= ?", (min_seq,))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            self._count, self._bytes = self.db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM records").fetchone()
            raise
        return int(before - self._count)

    def ack(self, seq: int) -> None:
        self._drop_acked(seq)

    def _drop_acked(self, seq: int) -> None:
        cur = self.db.execute("DELETE FROM records WHERE seq=? RETURNING LENGTH(payload)",
                              (seq,))
        row = cur.fetchone()
        if row is not None:
            self._count -= 1
            self._bytes -= int(row[0])

    def close(self) -> None:
        self.db.close()
