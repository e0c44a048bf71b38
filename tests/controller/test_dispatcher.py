"""The command dispatcher: trust and replay rules, the handler table, results.

The pole's own commands run against the sans-I/O link session and a fake I/O
board (fake_firmware.py): `FakeLink.command` is what `LinkClient.command` does,
without a port or a clock.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_controller import pole_commands
from edge_controller.api.commands import COMMAND_TYPES, CommandOutcome, LampOverride, Ping
from edge_controller.link import codec
from edge_controller.link.session import Outcome
from edge_controller.uplink.dispatcher import CommandDispatcher, Rejection, Replay, Run
from edge_controller.uplink.trust import ResultCache, TrustPolicy, signed_bytes
from edge_controller.visibility import commands as dimming_commands

from .fake_firmware import outcomes, up_session

NOW = datetime(2026, 11, 28, 23, 15, 30, tzinfo=UTC).timestamp()
ISSUED = "2026-11-28T23:15:00.000Z"
EXPIRES = "2026-11-28T23:20:00.000Z"
POLE = "pole-0042"


class FakeLink:
    """`LinkClient.command` over a LinkSession whose board acks, or naks with `nak`."""

    def __init__(self, nak: int | None = None, silent: bool = False) -> None:
        self.session, self.fw = up_session(0.0)
        self.nak, self.silent = nak, silent
        self.sent: list[tuple[str, tuple[int, ...]]] = []

    async def command(self, name: str, values: tuple[int, ...]) -> Outcome:
        self.sent.append((name, values))
        token = self.session.command(name, values, 1.0)
        for f in self.fw.read_named(name):
            if self.nak is not None:
                self.fw.nak(f, self.nak, 1.0)
            elif not self.silent:
                self.fw.ack(f, 1.0)
        t = 1.0
        while not (done := [o for o in outcomes(self.session.take_events()) if o.token == token]):
            t += 0.1  # the board stays silent: retries, then a timeout
            self.session.tick(t)
        return done[0]


class Sent(list[dict[str, Any]]):
    def __call__(self, body: dict[str, Any]) -> None:
        self.append(body)


def make(policy: TrustPolicy | None = None, link: FakeLink | None = None,
         ) -> tuple[CommandDispatcher, Sent, list[int]]:
    sent, stops = Sent(), []
    d = CommandDispatcher(policy or TrustPolicy(pole_id=POLE), ResultCache(None, 100), sent,
                          clock=lambda: NOW)
    pole_commands.register(d, (link or FakeLink()).command, stops.append)
    return d, sent, stops


def cmd(body: dict[str, Any], cid: str = "c-1", **extra: Any) -> bytes:
    return json.dumps({"id": cid, "issued_at": ISSUED, "body": body, **extra}).encode()


def result(sent: Sent) -> tuple[str, str]:
    return sent[-1]["status"], sent[-1]["reason"]


# ---- the pole's own commands over the link --------------------------------------------


async def test_ping_lamp_set_and_firmware_reboot_reach_the_board() -> None:
    link = FakeLink()
    d, sent, _ = make(link=link)
    await d.handle(cmd({"type": "ping"}, "a"))
    await d.handle(cmd({"type": "lamp.set", "level": 40, "fade_ms": 500}, "b"))
    await d.handle(cmd({"type": "reboot"}, "c"))
    assert [(s["id"], s["status"], s["reason"]) for s in sent] == [
        ("a", "ok", "done"), ("b", "ok", "done"), ("c", "ok", "done")]
    assert sent[0]["detail"] == "pong"
    assert link.sent == [("lamp_set", (40, 500)), ("reboot", (200,))]


async def test_board_nak_is_firmware_nak_and_silence_is_timeout() -> None:
    d, sent, _ = make(link=FakeLink(nak=codec.NAK_BAD_VALUE))
    await d.handle(cmd({"type": "lamp.set", "level": 40}))
    assert result(sent) == ("failed", "firmware_nak")
    assert "bad_value" in sent[-1]["detail"]
    d, sent, _ = make(link=FakeLink(silent=True))
    await d.handle(cmd({"type": "lamp.set", "level": 40}))
    assert result(sent) == ("failed", "timeout")


async def test_controller_reboot_answers_then_stops_with_the_restart_code() -> None:
    d, sent, stops = make()
    await d.handle(cmd({"type": "reboot", "target": "controller"}))
    assert result(sent) == ("ok", "done") and stops == [pole_commands.EXIT_RESTART]


# ---- parsing and trust ----------------------------------------------------------------


@pytest.mark.parametrize(("payload", "reason", "cid"), [
    (b"{", "invalid_json", None),
    (b"x" * 9000, "too_large", None),
    (cmd({"type": "lamp.toggle"}), "schema", "c-1"),
    (cmd({"type": "ping"}, expires_at="2026-11-28T23:15:10.000Z"), "expired", "c-1"),
    (cmd({"type": "ping"}, issued_at="2026-11-28T23:30:00.000Z"), "not_yet_valid", "c-1"),
])
async def test_rejections(payload: bytes, reason: str, cid: str | None) -> None:
    d, sent, _ = make()
    await d.handle(payload)
    assert (sent[-1]["id"], *result(sent)) == (cid, "rejected", reason)
    assert d.rejected == 1


def signed(body: dict[str, Any], key: Ed25519PrivateKey, cid: str = "s-1",
           **extra: Any) -> bytes:
    env = {"id": cid, "issued_at": ISSUED, "expires_at": EXPIRES, "pole_id": POLE,
           "body": body, **extra}
    env["sig"] = base64.b64encode(key.sign(signed_bytes(env))).decode()
    return json.dumps(env).encode()


async def test_signatures() -> None:
    city, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    d, sent, _ = make(TrustPolicy(city.public_key(), require_signature=True, pole_id=POLE))
    await d.handle(signed({"type": "ping"}, city, "s-1"))
    assert result(sent) == ("ok", "done")
    await d.handle(signed({"type": "ping"}, other, "s-2"))
    assert result(sent) == ("rejected", "signature") and "bad signature" in sent[-1]["detail"]
    await d.handle(cmd({"type": "ping"}, "s-3"))
    assert result(sent) == ("rejected", "signature") and "unsigned" in sent[-1]["detail"]
    # Without require_signature an unsigned command runs; a signed one must still verify.
    d, sent, _ = make(TrustPolicy(city.public_key(), pole_id=POLE))
    await d.handle(cmd({"type": "ping"}, "u-1"))
    assert result(sent) == ("ok", "done")
    await d.handle(signed({"type": "ping"}, other, "u-2"))
    assert result(sent) == ("rejected", "signature")


def test_decide_is_pure_and_takes_the_time() -> None:
    d, _, _ = make()
    payload = cmd({"type": "ping"}, expires_at="2026-11-28T23:16:00.000Z")
    assert isinstance(d.decide(payload, NOW), Run)
    late = d.decide(payload, NOW + 60)
    assert isinstance(late, Rejection) and late.reason == "expired"
    d.results.put("c-1", {"id": "c-1", "status": "ok", "reason": "done", "detail": "x"}, NOW)
    assert isinstance(d.decide(payload, NOW), Replay)


# ---- replays ----------------------------------------------------------------------------


async def test_a_replayed_id_is_answered_from_the_cache_and_not_run_again() -> None:
    link = FakeLink()
    d, sent, _ = make(link=link)
    await d.handle(cmd({"type": "lamp.set", "level": 10}))
    await d.handle(cmd({"type": "lamp.set", "level": 10}))  # e.g. a QoS 1 redelivery
    assert sent[1] == {**sent[0], "duplicate": True} and sent[0]["duplicate"] is False
    assert link.sent == [("lamp_set", (10, 1000))]
    assert d.replays == 1 and d.rejected == 0


async def test_the_same_id_twice_at_once_runs_once() -> None:
    gate = asyncio.Event()
    runs: list[int] = []
    d = CommandDispatcher(TrustPolicy(), ResultCache(None), sent := Sent(), clock=lambda: NOW)

    async def slow(_: Ping) -> CommandOutcome:
        runs.append(1)
        await gate.wait()
        return CommandOutcome("ok", "done", "slow pong")

    d.register("ping", Ping, slow)
    both = asyncio.gather(d.handle(cmd({"type": "ping"})), d.handle(cmd({"type": "ping"})))
    await asyncio.sleep(0)
    gate.set()
    await both
    assert runs == [1] and len(sent) == 2 and d.replays == 1
    assert sent[1] == {**sent[0], "duplicate": True}


async def test_schema_rejections_are_not_cached() -> None:
    d, sent, _ = make()
    await d.handle(cmd({"type": "lamp.toggle"}))
    await d.handle(cmd({"type": "ping"}))  # the id was never answered: runs
    assert result(sent) == ("ok", "done")


# ---- the handler table ------------------------------------------------------------------


async def test_features_register_their_commands_or_say_why_not() -> None:
    d, sent, _ = make()
    dimming_commands.register(d, None)
    await d.handle(cmd({"type": "lamp.override", "level": 80, "duration_s": 60}))
    assert result(sent) == ("rejected", "unsupported")
    assert sent[-1]["detail"] == "dimming is not enabled"
    await d.handle(cmd({"type": "screen.text", "text": "hi", "seconds": 3}, "c-2"))
    assert result(sent) == ("rejected", "unsupported")
    assert d.commands == [t for t in COMMAND_TYPES if t in ("lamp.set", "reboot", "ping")]


def test_register_checks_the_type_against_the_api() -> None:
    d, _, _ = make()

    async def h(_: LampOverride) -> CommandOutcome:
        return CommandOutcome("ok", "done", "")

    with pytest.raises(ValueError, match="not a command"):
        d.register("lamp.toggle", LampOverride, h)
    with pytest.raises(ValueError, match="not a command"):
        d.register("dimming.schedule", LampOverride, h)
    with pytest.raises(ValueError, match="twice"):
        d.register("ping", Ping, h)  # type: ignore[arg-type]
    d.register("lamp.override", LampOverride, h)
    assert d.commands == ["lamp.set", "lamp.override", "reboot", "ping"]
