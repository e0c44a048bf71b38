"""Sans-I/O checks of the Home Assistant translator and the runner's trust gate."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from edge_controller.api.commands import CommandOutcome, LampSet, Reboot
from edge_controller.config import parse
from edge_controller.profiles.base import Inbound, Native, Out, Profile, Refused
from edge_controller.profiles.homeassistant import MAX_DEVICES, HomeAssistant, HomeAssistantSettings
from edge_controller.profiles.registry import ProfileContext, known, spec
from edge_controller.profiles.runner import ProfileRunner
from edge_controller.profiles.settings import ProfileSettings
from edge_controller.uplink.config import MqttConfig
from edge_controller.uplink.dispatcher import CommandDispatcher
from edge_controller.uplink.mqtt import Uplink
from edge_controller.uplink.store import RecordStore
from edge_controller.uplink.topics import Topics
from edge_controller.uplink.trust import ResultCache, TrustPolicy

T = Topics("smartpole/v1", "p1")


def ha(**kw: Any) -> HomeAssistant:
    return HomeAssistant(ProfileContext("p1", T), HomeAssistantSettings(**kw))


def configs(outs: list[Out]) -> dict[str, dict[str, Any]]:
    return {o.topic: json.loads(o.payload) for o in outs if o.topic.endswith("/config")}


def test_config_key_and_registry() -> None:
    assert parse({}).mqtt.profiles == ["native"]
    cfg = parse({"mqtt": {"profiles": ["native", "homeassistant"],
                          "homeassistant": {"accept_unsigned": "limited"}}})
    assert cfg.mqtt.homeassistant.accept_unsigned == "limited"
    assert parse({}).mqtt.homeassistant.accept_unsigned == "none"  # off by default
    for bad in (["nope"], [], ["native", "native"]):
        try:
            parse({"mqtt": {"profiles": bad}})
        except Exception as e:
            assert "profiles" in str(e)
        else:
            raise AssertionError(bad)
    assert {"native", "homeassistant", "thingsboard"} <= set(known())
    assert spec("homeassistant").settings is HomeAssistantSettings


def test_discovery_device_and_entities() -> None:
    p = ha()
    p.translate(Native("telemetry", {"sensors": {"lux": 3.5}, "camera": {"healthy": True},
                                     "visibility": {"mor_m": 800, "band": "200-1000"},
                                     "crossing": {}, "lamp": {"level": 40, "on": True}}), 0)
    p.translate(Native("periph_status", {"kind": "ocpp_charger", "health": "ok",
                                         "charger": {"connector_state": "Charging",
                                                     "power_w": 7000}}, "ev1"), 0)
    p.translate(Native("periph_status", {"kind": "led_screen", "health": "ok"}, "scr"), 0)
    c = configs(p.on_connect(0))
    comps = sorted(t.split("/")[1] + ":" + t.split("/")[3] for t in c)
    assert comps == sorted([
        "light:lamp", "sensor:lux", "sensor:power", "sensor:energy", "sensor:temperature",
        "sensor:visibility_mor", "sensor:visibility_band", "binary_sensor:door",
        "binary_sensor:mains", "binary_sensor:link", "binary_sensor:camera", "event:violation",
        "sensor:ev1_state", "sensor:ev1_power", "text:scr_text"])
    assert c["homeassistant/sensor/p1/energy/config"]["state_class"] == "total_increasing"
    assert c["homeassistant/text/p1/scr_text/config"]["device"]["via_device"] == "smartpole_p1"
    assert c["homeassistant/light/p1/lamp/config"]["schema"] == "json"
    assert all(cfg["availability"][0]["topic"] == "smartpole/v1/p1/state"
               for cfg in c.values())
    # HA's birth asks for discovery again; anything else on the status topic does not.
    assert configs(p.inbound("homeassistant/status", b"online", 0)) == c
    assert p.inbound("homeassistant/status", b"offline", 0) == []


def test_light_commands_and_bad_input() -> None:
    p = ha()
    r = p.inbound("smartpole/ha/p1/lamp/set", b'{"state":"ON","brightness":128}', 0)
    assert isinstance(r, Inbound) and r.body == {"type": "lamp.set", "level": 50,
                                                 "fade_ms": 1000}
    r = p.inbound("smartpole/ha/p1/lamp/set", b'{"state":"OFF","transition":2}', 0)
    assert isinstance(r, Inbound) and r.body["level"] == 0 and r.body["fade_ms"] == 2000
    r = p.inbound("smartpole/ha/p1/lamp/set", b'{"state":"ON","brightness":1}', 0)
    assert isinstance(r, Inbound) and r.body["level"] == 1  # on stays on
    for bad in (b"\xff", b"[]", b'{"state":"DIM"}', b'{"state":"ON","brightness":300}',
                b'{"state":"ON","brightness":true}', b'{"state":"ON","transition":-1}'):
        r = p.inbound("smartpole/ha/p1/lamp/set", bad, 0)
        # Refused, with the lamp's state as the reply HA expects on the state topic.
        assert isinstance(r, Refused) and r.replies[0].topic == "smartpole/ha/p1/lamp", bad
    ok = p.result(("lamp", 50), {"status": "ok"}, 0)
    assert json.loads(ok[0].payload) == {"state": "ON", "color_mode": "brightness",
                                         "brightness": 128}


def test_screen_text_and_device_bound() -> None:
    p = ha()
    assert isinstance(p.inbound("smartpole/ha/p1/scr/text/set", b"hi", 0), Refused)
    p.translate(Native("periph_status", {"kind": "led_screen", "health": "ok"}, "scr"), 0)
    r = p.inbound("smartpole/ha/p1/scr/text/set", "慢行 slow".encode(), 0)
    assert isinstance(r, Inbound) and r.body["text"] == "慢行 slow"
    assert isinstance(p.inbound("smartpole/ha/p1/scr/text/set", b"", 0), Refused)
    assert isinstance(p.inbound("smartpole/ha/p1/scr/text/set", b"\xc3", 0), Refused)
    for i in range(MAX_DEVICES + 10):
        p.translate(Native("periph_status", {"kind": "modbus_charger"}, f"c{i}"), 0)
    assert len(p.devices) == MAX_DEVICES


class Cmds(Profile):
    """Hands out whatever command body the test puts on topic `cmd`."""

    name = "cmds"

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []

    def subscriptions(self) -> list[str]:
        return ["cmd"]

    def on_connect(self, now: float) -> list[Out]:
        return []

    def translate(self, msg: Native, now: float) -> list[Out]:
        raise RuntimeError("a translator bug")

    def inbound(self, topic: str, payload: bytes, now: float) -> Inbound | Refused | list[Out]:
        return Inbound(json.loads(payload), None)

    def result(self, context: Any, result: dict[str, Any], now: float) -> list[Out]:
        self.results.append(result)
        return []


def run_commands(accept: str, require_signature: bool, bodies: list[dict[str, Any]],
                 ) -> tuple[list[dict[str, Any]], list[str]]:
    ran: list[str] = []

    async def go() -> list[dict[str, Any]]:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        key = Ed25519PrivateKey.generate().public_key()
        d = CommandDispatcher(TrustPolicy(key, require_signature), ResultCache(None),
                              lambda r: None)

        async def lamp(b: LampSet) -> CommandOutcome:
            ran.append(f"lamp {b.level}")
            return CommandOutcome("ok", "done", "")

        async def reboot(b: Reboot) -> CommandOutcome:
            ran.append("reboot")
            return CommandOutcome("ok", "done", "")

        d.register("lamp.set", LampSet, lamp)
        d.register("reboot", Reboot, reboot)
        up = Uplink(MqttConfig(), T, dict, lambda p: asyncio.sleep(0))
        prof = Cmds()
        r = ProfileRunner(prof, ProfileSettings(accept_unsigned=accept),
                          up, d, RecordStore(":memory:"))
        up.event("door_opened", {})  # the translator raises: counted, nothing breaks
        assert r.translate_errors == 1
        for b in bodies:
            r.on_message("cmd", json.dumps(b).encode())
        await asyncio.sleep(0.05)
        return prof.results

    return asyncio.run(go()), ran


def test_unsigned_commands_are_off_by_default() -> None:
    results, ran = run_commands("none", False, [{"type": "lamp.set", "level": 10}])
    assert ran == [] and results[0]["reason"] == "signature"


def test_limited_allows_lamp_even_where_signatures_are_required() -> None:
    results, ran = run_commands("limited", True, [{"type": "lamp.set", "level": 10},
                                                  {"type": "reboot"}])
    assert ran == ["lamp 10"]
    assert sorted(r["status"] for r in results) == ["ok", "rejected"]
