"""ThingsBoard gateway profile: ThingsBoard's side played from its Gateway MQTT API
documentation (thingsboard.github.io, reference/gateway-mqtt-api) against mosquitto and
the simulated pole. ThingsBoard is the broker there; here the fixture receives what a
gateway publishes (`v1/gateway/{connect,disconnect,telemetry,attributes,rpc}`,
`v1/devices/me/{telemetry,attributes}`) and sends server-side RPC on `v1/gateway/rpc`
as `{"device", "data": {"id", "method", "params"}}`, expecting `{"device", "id", "data"}`
back on the same topic."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

from tests.profiles.platform_pole import (  # noqa: F401 - fixtures
    Msg,
    Platform,
    broker,
    fail_log,
    firmware,
    peers,
    start_pole,
)

TOKEN = "A1_TEST_TOKEN"
DATA = Path(__file__).resolve().parents[2] / "edge_controller" / "profiles" / "data"


def _j(m: Msg) -> Any:
    return json.loads(m.payload)


def _is(topic: str, pred: Any = None) -> Any:
    return lambda m: m.topic == topic and (pred is None or pred(_j(m)))


def _telemetry_of(name: str) -> Any:
    return _is("v1/gateway/telemetry", lambda p: name in p)


def _check_gateway_telemetry(p: dict[str, Any]) -> None:
    # {"Device A": [{"ts": ms, "values": {...}}]}
    for name, recs in p.items():
        assert isinstance(name, str) and isinstance(recs, list) and recs
        for r in recs:
            assert set(r) == {"ts", "values"} and isinstance(r["ts"], int)
            assert r["ts"] > 1_600_000_000_000 and isinstance(r["values"], dict)


def test_thingsboard_gateway_contract(tmp_path: Path, broker: Any, firmware: Path,  # noqa: F811
                                      peers: Any) -> None:  # noqa: F811
    tb = Platform(broker.port, ["v1/gateway/#", "v1/devices/me/#"], client_id="thingsboard")
    t0 = time.monotonic()
    pole = start_pole(tmp_path, broker, firmware, peers, "thingsboard", {
        "url": broker.url, "username": TOKEN, "accept_unsigned": "limited"})
    pid = pole.pole_id
    lamp, ch, sc = f"{pid} lamp", f"{pid} charger-1", f"{pid} screen-1"
    try:
        # Every device announced with its device profile, before its data.
        for name, typ in [(lamp, "smartpole-lamp"), (ch, "smartpole-charger"),
                          (sc, "smartpole-screen")]:
            c = tb.wait_for(_is("v1/gateway/connect", lambda p, n=name: p.get("device") == n),
                            40, t0, f"connect {name}")
            assert _j(c) == {"device": name, "type": typ}
            tel = tb.wait_for(_telemetry_of(name), 20, t0, f"telemetry {name}")
            assert tel.t >= c.t
            _check_gateway_telemetry(_j(tel))
        vals = _j(tb.wait_for(_telemetry_of(lamp), 20, t0))[lamp][0]["values"]
        assert {"level", "target", "duty", "on", "failsafe", "power_w", "energy_wh"} <= set(vals)
        chv = _j(tb.wait_for(_telemetry_of(ch), 20, t0))[ch][0]["values"]
        assert {"connector_state", "health", "power_w", "meter_total_wh"} <= set(chv)
        attrs = tb.wait_for(_is("v1/gateway/attributes", lambda p: ch in p), 20, t0)
        assert _j(attrs)[ch] == {"pole_id": pid, "device_id": "charger-1", "kind": "charger"}
        me = _j(tb.wait_for(_is("v1/devices/me/attributes",
                                lambda p: "controller_version" in p), 20, t0))
        assert me["capabilities"] and len(me["boot_id"]) == 32
        pole_tel = _j(tb.wait_for(_is("v1/devices/me/telemetry",
                                      lambda p: "door_open" in p["values"]), 20, t0))
        assert {"ts", "values"} == set(pole_tel) and "lux" in pole_tel["values"]
        # The device profiles to import name every key the alarms use.
        for f in DATA.glob("thingsboard_*.json"):
            prof = json.loads(f.read_text())
            assert prof["profileData"]["configuration"]["type"] == "DEFAULT"

        # Server-side RPC: set the lamp to 40 %, answered with the same id.
        t1 = tb.publish("v1/gateway/rpc", json.dumps(
            {"device": lamp, "data": {"id": 7, "method": "setValue", "params": 40}}))
        r = tb.wait_for(_is("v1/gateway/rpc", lambda p: p.get("id") == 7), 15, t1, "rpc 7")
        assert _j(r) == {"device": lamp, "id": 7, "data": {"success": True, "status": "ok",
                         "reason": "done", "detail": _j(r)["data"]["detail"]}}
        tb.wait_for(_telemetry_of(lamp), 15, t1) and tb.wait_for(
            _is("v1/gateway/telemetry", lambda p: lamp in p
                and p[lamp][0]["values"]["level"] == 40), 15, t1, "level 40")
        # Reads answered from the last telemetry; text to the screen; an unknown method.
        t2 = tb.publish("v1/gateway/rpc", json.dumps(
            {"device": lamp, "data": {"id": 8, "method": "getValue", "params": None}}))
        assert _j(tb.wait_for(_is("v1/gateway/rpc", lambda p: p.get("id") == 8), 10, t2))[
            "data"] == {"success": True, "value": 40}
        t3 = tb.publish("v1/gateway/rpc", json.dumps(
            {"device": sc, "data": {"id": 9, "method": "showText",
                                    "params": {"text": "Road works", "seconds": 30}}}))
        assert _j(tb.wait_for(_is("v1/gateway/rpc", lambda p: p.get("id") == 9), 15, t3))[
            "data"]["success"] is True
        assert any(t == "Road works" for t, _ in peers.peers.screen.texts)
        t4 = tb.publish("v1/gateway/rpc", json.dumps(
            {"device": lamp, "data": {"id": 10, "method": "reboot", "params": {}}}))
        assert _j(tb.wait_for(_is("v1/gateway/rpc", lambda p: p.get("id") == 10), 10, t4))[
            "data"]["success"] is False

        # Broker outage: devices announced again, telemetry flows again.
        t5 = time.monotonic()
        broker.kill()
        time.sleep(2.0)
        broker.start_again()
        tb.wait_for(_is("v1/gateway/connect", lambda p: p.get("device") == lamp), 40, t5)
        tb.wait_for(_telemetry_of(lamp), 20, t5)

        # Pole restart: devices disconnected on the clean stop, then announced again.
        t6 = time.monotonic()
        pole.stop_controller(signal.SIGTERM)
        tb.wait_for(_is("v1/gateway/disconnect", lambda p: p == {"device": lamp}), 10, t6)
        pole.start_controller()
        tb.wait_for(_is("v1/gateway/connect", lambda p: p.get("device") == lamp), 40, t6)
        # A new boot id: the gateway's attributes say the controller restarted.
        tb.wait_for(_is("v1/devices/me/attributes",
                        lambda p: p.get("boot_id") not in (None, me["boot_id"])), 20, t6)
        for m in tb.since(t0):
            if m.topic == "v1/gateway/telemetry":
                _check_gateway_telemetry(_j(m))
    except BaseException:
        print(fail_log(pole))
        raise
    finally:
        pole.stop()
        tb.close()


def test_rpc_refused_without_accept_unsigned() -> None:
    from edge_controller.profiles.base import Inbound, Native, Refused
    from edge_controller.profiles.thingsboard import ThingsBoardProfile, ThingsBoardSettings

    p = ThingsBoardProfile("p1", ThingsBoardSettings())
    assert p.translate(Native("telemetry", {"ts": "2026-11-28T23:10:17.125Z", "lamp": {
        "level": 5, "target": 5, "duty": 1, "on": True, "failsafe": False}}), 0)
    # The profile translates; the runner applies accept_unsigned (default none).
    r = p.inbound("v1/gateway/rpc", json.dumps({"device": "p1 lamp", "data": {
        "id": 1, "method": "setLevel", "params": {"level": 20, "fade_ms": 0}}}).encode(), 0)
    assert isinstance(r, Inbound) and r.body == {"type": "lamp.set", "level": 20, "fade_ms": 0}
    out = p.result(r.context, {"status": "rejected", "reason": "signature", "detail": "x"}, 0)
    assert json.loads(out[0].payload) == {"device": "p1 lamp", "id": 1, "data": {
        "success": False, "status": "rejected", "reason": "signature", "detail": "x"}}
    assert isinstance(p.inbound("v1/gateway/rpc", json.dumps({"device": "nope", "data": {
        "id": 2, "method": "setValue", "params": 1}}).encode(), 0), Refused)
    # Our own reply echoed by a broker is not a command.
    assert p.inbound("v1/gateway/rpc", out[0].payload, 0) == []
    assert p.connection(0) is None  # no url: shares the native connection
    c = ThingsBoardProfile("p1", ThingsBoardSettings(url="mqtts://tb:8883", username=TOKEN))
    conn = c.connection(0)
    assert conn is not None and conn.username == TOKEN and conn.password is None
