"""Issue 17, items 1-2, sans-I/O: every reproduced attack on the command path, refused.

The dispatcher runs against the pole's own commands over a fake I/O board
(test_dispatcher.FakeLink); the clock is an argument. The end-to-end versions (real
mosquitto, the controller process, the firmware over the pty) are in
hil_tests/test_command_trust.py.
"""

from __future__ import annotations

import base64
import json
import math
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_controller import pole_commands
from edge_controller.uplink.dispatcher import CommandDispatcher
from edge_controller.uplink.trust import ResultCache, TrustPolicy, signed_bytes

from .test_dispatcher import FakeLink, Sent

T0 = datetime(2026, 11, 28, 23, 15, 0, tzinfo=UTC)
NOW = T0.timestamp() + 30
POLE = "pole-0042"
CITY = Ed25519PrivateKey.generate()


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def env(cid: str, body: dict[str, Any], *, issued: datetime = T0,
        life_s: float = 300, pole: str | None = POLE, key: Ed25519PrivateKey | None = CITY,
        **extra: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"id": cid, "issued_at": iso(issued),
                         "expires_at": iso(issued + timedelta(seconds=life_s)), "body": body,
                         **extra}
    if pole is not None:
        e["pole_id"] = pole
    if key is not None:
        e["sig"] = base64.b64encode(key.sign(signed_bytes(e))).decode()
    return e


def raw(e: dict[str, Any]) -> bytes:
    return json.dumps(e).encode()


LAMP = {"type": "lamp.set", "level": 22, "fade_ms": 0}


class Pole:
    """A dispatcher that requires signatures, over a fake board, with a settable clock."""

    def __init__(self, cache: ResultCache | None = None, require: bool = True,
                 synced: bool = True, pole_id: str = POLE) -> None:
        self.now = NOW
        self.link = FakeLink()
        self.sent = Sent()
        self.d = CommandDispatcher(
            TrustPolicy(CITY.public_key(), require, 300.0, 900.0, pole_id),
            ResultCache(None, 100) if cache is None else cache, self.sent, clock=lambda: self.now,
            clock_synced=lambda: synced)
        pole_commands.register(self.d, self.link.command, lambda _: None)

    async def send(self, e: dict[str, Any] | bytes) -> dict[str, Any]:
        await self.d.handle(e if isinstance(e, bytes) else raw(e))
        return self.sent[-1]

    @property
    def lamp_sets(self) -> list[int]:
        return [v[0] for n, v in self.link.sent if n == "lamp_set"]


def outcome(r: dict[str, Any]) -> tuple[str, str]:
    return r["status"], r["reason"]


# ---- item 1: signatures are required ------------------------------------------------------


async def test_unsigned_command_refused_when_signatures_are_required() -> None:
    # Before: an unsigned ping answered ok/done on a pole with a key configured.
    p = Pole()
    r = await p.send(env("u-1", {"type": "ping"}, key=None))
    assert outcome(r) == ("rejected", "signature") and "unsigned" in r["detail"]
    assert p.d.refused["signature"] == 1 and p.d.rejected == 1


def test_birth_mode_says_whether_unsigned_commands_run() -> None:
    key = CITY.public_key()
    assert TrustPolicy().mode == "off"
    assert TrustPolicy(key).mode == "optional"
    assert TrustPolicy(key, require_signature=True).mode == "required"


async def test_a_lab_pole_without_a_key_still_runs_unsigned_commands() -> None:
    sent = Sent()
    d = CommandDispatcher(TrustPolicy(pole_id=POLE), ResultCache(None), sent,
                          clock=lambda: NOW)
    pole_commands.register(d, FakeLink().command, lambda _: None)
    await d.handle(raw({"id": "lab-1", "issued_at": iso(T0), "body": {"type": "ping"}}))
    assert outcome(sent[-1]) == ("ok", "done")


# ---- item 2: replay protection -----------------------------------------------------------


async def test_junk_cannot_push_a_real_id_out_of_the_cache() -> None:
    # Before: 2,000 bad-signature messages evicted a real id; its captured copy ran again.
    p = Pole(ResultCache(None, size=50))
    real = env("real-1", LAMP)
    assert outcome(await p.send(real)) == ("ok", "done")
    rogue = Ed25519PrivateKey.generate()
    for i in range(2000):
        await p.send(env(f"junk-{i}", {"type": "ping"}, key=rogue))
    assert p.d.refused["signature"] == 2000 and len(p.d.results) == 1
    again = await p.send(real)
    assert again["duplicate"] is True and outcome(again) == ("ok", "done")
    assert p.lamp_sets == [22]


async def test_a_bad_signature_presend_of_the_next_id_does_not_block_it() -> None:
    # Before: the real command then answered rejected/signature and never ran.
    p = Pole()
    forged = env("cmd-0002", {"type": "lamp.set", "level": 0, "fade_ms": 0},
                 key=Ed25519PrivateKey.generate())
    assert outcome(await p.send(forged)) == ("rejected", "signature")
    r = await p.send(env("cmd-0002", LAMP))
    assert outcome(r) == ("ok", "done") and r["duplicate"] is False and p.lamp_sets == [22]


async def test_an_old_signed_command_is_refused() -> None:
    # Before: a signed command dated 2020 (no expires_at) was accepted.
    p = Pole()
    old = datetime(2020, 1, 1, tzinfo=UTC)
    r = await p.send(env("old-1", LAMP, issued=old))
    assert outcome(r) == ("rejected", "expired")
    r = await p.send(env("old-2", LAMP, issued=old, life_s=10 * 365 * 86400))
    assert outcome(r) == ("rejected", "lifetime") and "at most 900 s" in r["detail"]
    no_deadline = env("old-3", LAMP, key=None)
    del no_deadline["expires_at"]
    no_deadline["sig"] = base64.b64encode(CITY.sign(signed_bytes(no_deadline))).decode()
    r = await p.send(no_deadline)
    assert outcome(r) == ("rejected", "schema") and "expires_at" in r["detail"]
    assert p.lamp_sets == []


async def test_a_command_signed_for_another_pole_does_not_run_here() -> None:
    # Before: a command signed for pole-a ran on every pole.
    p = Pole()
    r = await p.send(env("x-1", LAMP, pole="pole-0001"))
    assert outcome(r) == ("rejected", "wrong_pole") and "pole-0001" in r["detail"]
    retarget = env("x-2", LAMP, pole="pole-0001")
    retarget["pole_id"] = POLE  # rebinding breaks the signature
    assert outcome(await p.send(retarget)) == ("rejected", "signature")
    unbound = env("x-3", LAMP, pole=None)
    assert outcome(await p.send(unbound)) == ("rejected", "schema")
    assert p.lamp_sets == [] and p.d.refused["wrong_pole"] == 1


async def test_same_id_other_body_is_a_conflict_and_the_original_result_stands() -> None:
    # Before: "lamp to 44 %" was answered ok/done with the old result; the lamp stayed at 22.
    p = Pole()
    first = await p.send(env("c-1", LAMP))
    r = await p.send(env("c-1", {"type": "lamp.set", "level": 44, "fade_ms": 0}))
    assert outcome(r) == ("rejected", "conflict") and r["duplicate"] is False
    assert p.lamp_sets == [22]
    again = await p.send(env("c-1", LAMP))  # the conflict did not replace the entry
    assert again == {**first, "duplicate": True} and p.d.replays == 1


async def test_a_redelivered_command_gets_its_original_result_marked_duplicate() -> None:
    p = Pole()
    e = env("d-1", LAMP)
    first = await p.send(e)
    p.now += 60
    second = await p.send(e)
    assert first["duplicate"] is False and second == {**first, "duplicate": True}
    assert p.lamp_sets == [22]


async def test_forgotten_ids_raise_a_floor_so_they_can_never_run_again() -> None:
    # More commands than the cache holds within their lifetime: the oldest is forgotten,
    # and everything expiring no later than it is refused from then on.
    p = Pole(ResultCache(None, size=10))
    cmds = [env(f"f-{i}", {"type": "lamp.set", "level": i, "fade_ms": 0},
                issued=T0 + timedelta(seconds=i)) for i in range(11)]
    for e in cmds:
        assert outcome(await p.send(e)) == ("ok", "done")
    assert len(p.d.results) == 10 and p.d.results.get("f-0") is None
    r = await p.send(cmds[0])
    assert outcome(r) == ("rejected", "expired") and "replay window" in r["detail"]
    assert outcome(await p.send(cmds[5])) == ("ok", "done")  # still cached: a duplicate
    assert p.sent[-1]["duplicate"] is True
    assert p.lamp_sets == list(range(11))


async def test_a_clock_set_back_cannot_revive_an_expired_command() -> None:
    # The pole's clock loses sync and jumps back an hour (RTC reset). A command captured
    # before it expired, never delivered, is refused: the newest signed command that ran
    # is a lower bound on the time.
    p = Pole(synced=False)
    stale = env("st-1", LAMP, issued=T0 - timedelta(seconds=900), life_s=400)
    assert outcome(await p.send(env("fresh", {"type": "ping"}))) == ("ok", "done")
    p.now = NOW - 3600
    r = await p.send(stale)
    assert outcome(r) == ("rejected", "expired")
    assert "the pole's clock is not synchronised" in r["detail"]
    assert p.lamp_sets == []


async def test_unsigned_commands_on_a_permissive_pole_keep_the_1x_rules() -> None:
    # No signature, no key required: expires_at and pole_id stay optional, no lifetime.
    p = Pole(require=False)
    e = {"id": "p-1", "issued_at": iso(T0), "expires_at": iso(T0 + timedelta(days=30)),
         "body": LAMP}
    assert outcome(await p.send(raw(e))) == ("ok", "done")
    other = {**e, "id": "p-2", "pole_id": "pole-0001"}
    assert outcome(await p.send(raw(other))) == ("rejected", "wrong_pole")


# ---- persistence -------------------------------------------------------------------------


def test_the_cache_its_floor_and_time_floor_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "queue.sqlite3"
    c = ResultCache(db, size=2)
    for i, exp in enumerate((100.0, 200.0, 300.0)):
        c.put(f"id-{i}", {"id": f"id-{i}", "status": "ok"}, 1.0 + i, f"b{i}", exp)
    c.saw_trusted(500.0, 300.0)
    assert c.floor == 100.0
    c2 = ResultCache(db, size=2)
    assert (c2.floor, c2.time_floor) == (100.0, 200.0)
    cached = c2.get("id-2")
    assert cached is not None and (cached.body, cached.expires) == ("b2", 300.0)
    assert c2.get("id-0") is None
    c3 = ResultCache(db, size=1)  # made smaller: the extra one is forgotten, floor raised
    assert c3.floor == 200.0 and len(c3) == 1


def test_a_cache_written_before_1_8_is_read(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite3"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE results (id TEXT PRIMARY KEY, result TEXT NOT NULL, "
                "at REAL NOT NULL)")
    con.execute("INSERT INTO results VALUES ('old', '{\"id\": \"old\"}', 1.0)")
    con.commit()
    con.close()
    c = ResultCache(db)
    cached = c.get("old")
    assert cached is not None and cached.body is None and c.floor == -math.inf


@pytest.mark.parametrize("reason", ["wrong_pole", "lifetime", "conflict"])
def test_new_reasons_are_in_the_api(reason: str) -> None:
    from edge_controller.api import REASONS

    assert reason in REASONS
