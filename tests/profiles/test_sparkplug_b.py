"""Sparkplug B 3.0 profile: a primary host application played from the specification
(eclipse-sparkplug/sparkplug, chapters 5-7) against mosquitto and the simulated pole.

The host decodes with tests/profiles/sparkplug_wire.py (the protobuf wire format by hand,
not tahutils, not the protobuf package), and does what a host does: publishes its
retained `spBv1.0/STATE/<host_id>` `{"online": true, "timestamp"}` (will: online false)
on every connect, subscribes to the group, checks bdSeq and seq, and sends NCMD Rebirth
and DCMD writes."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.profiles import sparkplug_wire as spb
from tests.profiles.platform_pole import (  # noqa: F401 - fixtures
    Msg,
    Platform,
    broker,
    fail_log,
    firmware,
    peers,
    start_pole,
)

GROUP, HOST = "smartpole", "scada-1"
STATE = f"spBv1.0/STATE/{HOST}"


def _state(online: bool) -> bytes:
    return json.dumps({"online": online, "timestamp": int(time.time() * 1000)}).encode()


class Host:
    def __init__(self, port: int) -> None:
        self.p = Platform(port, [f"spBv1.0/{GROUP}/#"], client_id=HOST,
                          on_connected=lambda c: c.publish(STATE, _state(True), 1, True),
                          will=(STATE, _state(False)))

    def parts(self, m: Msg) -> list[str]:
        return m.topic.split("/")

    def wait(self, kind: str, node: str, device: str | None = None, after: float = 0.0,
             pred: Any = None, within_s: float = 20.0) -> tuple[Msg, spb.Payload]:
        def ok(m: Msg) -> bool:
            t = self.parts(m)
            if len(t) < 4 or t[2] != kind or t[3] != node:
                return False
            if device is not None and (len(t) < 5 or t[4] != device):
                return False
            return pred is None or pred(spb.decode(m.payload))
        m = self.p.wait_for(ok, within_s, after, f"{kind} {node} {device or ''}")
        return m, spb.decode(m.payload)

    def session(self, node: str, after: float) -> list[tuple[str, spb.Payload]]:
        """Every N*/D* message of `node` since `after`, decoded, in arrival order."""
        out = []
        for m in self.p.since(after):
            t = self.parts(m)
            if len(t) >= 4 and t[3] == node and t[2] not in ("STATE", "NCMD", "DCMD"):
                out.append(("/".join(t[2:3] + t[4:5]), spb.decode(m.payload)))
        return out


def _check_seq(msgs: list[tuple[str, spb.Payload]]) -> None:
    """From each NBIRTH (seq 0) on, seq goes up by one mod 256 on every N/D message except
    NDEATH, which carries none."""
    seq = None
    for kind, p in msgs:
        if kind.startswith("NDEATH"):
            assert p.seq is None, "NDEATH must not carry seq"
            seq = None
            continue
        if kind.startswith("NBIRTH"):
            assert p.seq == 0, "NBIRTH seq must be 0"
            seq = 0
            continue
        if seq is None:
            continue  # data before the first birth of the window
        assert p.seq == (seq + 1) % 256, f"{kind}: seq {p.seq} after {seq}"
        seq = p.seq


def test_sparkplug_host_contract(tmp_path: Path, broker: Any, firmware: Path,  # noqa: F811
                                 peers: Any) -> None:  # noqa: F811
    host = Host(broker.port)
    t0 = time.monotonic()
    pole = start_pole(tmp_path, broker, firmware, peers, "sparkplug_b", {
        "url": broker.url, "primary_host_id": HOST, "accept_unsigned": "limited",
        "screen_seconds": 60.0})
    node = pole.pole_id
    try:
        # Birth: NBIRTH (seq 0, bdSeq, Rebirth false, properties), DBIRTH per device.
        _, nb = host.wait("NBIRTH", node, after=t0, within_s=40)
        v, ty = nb.values(), nb.types()
        assert nb.seq == 0 and ty["bdSeq"] == spb.UINT64 and ty["Node Control/Rebirth"] == \
            spb.BOOLEAN and v["Node Control/Rebirth"] is False
        bd = v["bdSeq"]
        _, lamp = host.wait("DBIRTH", node, "lamp", after=t0)
        assert {"Level", "On", "Failsafe", "Power W", "Last Command/Status"} <= set(
            lamp.values())
        _, ch = host.wait("DBIRTH", node, "charger-1", after=t0)
        assert ch.types()["Connector State"] == spb.STRING
        _, sc = host.wait("DBIRTH", node, "screen-1", after=t0)
        assert "Text" in sc.values() and "Brightness" in sc.values()
        host.wait("NDATA", node, after=t0)  # report by exception: what changed (uptime)

        # DCMD write: lamp Level 40 -> lamp.set; outcome and new level as DDATA.
        t1 = time.monotonic()
        host.p.publish(f"spBv1.0/{GROUP}/DCMD/{node}/lamp",
                       spb.encode(int(time.time() * 1000), [("Level", spb.INT32, 40)]))
        _, r = host.wait("DDATA", node, "lamp", after=t1,
                         pred=lambda p: "Last Command/Status" in p.values())
        assert r.values()["Last Command/Status"] == "ok", r.values()
        host.wait("DDATA", node, "lamp", after=t1, pred=lambda p: p.values().get("Level") == 40)

        # DCMD write: screen Text -> screen.text.
        t2 = time.monotonic()
        host.p.publish(f"spBv1.0/{GROUP}/DCMD/{node}/screen-1",
                       spb.encode(int(time.time() * 1000), [("Text", spb.STRING, "Fog ahead")]))
        _, r = host.wait("DDATA", node, "screen-1", after=t2,
                         pred=lambda p: "Last Command/Status" in p.values())
        assert r.values()["Last Command/Status"] == "ok" and r.values()["Text"] == "Fog ahead"
        assert any(t == "Fog ahead" for t, _ in peers.peers.screen.texts)

        # NCMD Rebirth: the same bdSeq, seq from 0, every device again.
        t3 = time.monotonic()
        host.p.publish(f"spBv1.0/{GROUP}/NCMD/{node}",
                       spb.encode(int(time.time() * 1000),
                                  [("Node Control/Rebirth", spb.BOOLEAN, True)]))
        _, nb2 = host.wait("NBIRTH", node, after=t3)
        assert nb2.values()["bdSeq"] == bd
        host.wait("DBIRTH", node, "screen-1", after=t3)

        # The primary host goes offline: NDEATH (this bdSeq); online again: a new birth.
        t4 = time.monotonic()
        host.p.publish(STATE, _state(False), retain=True)
        _, nd = host.wait("NDEATH", node, after=t4)
        assert nd.values()["bdSeq"] == bd and nd.seq is None
        time.sleep(1.5)
        quiet = [k for k, _ in host.session(node, time.monotonic() - 1.0)]
        assert quiet == [], f"published while the host was offline: {quiet}"
        t5 = time.monotonic()
        host.p.publish(STATE, _state(True), retain=True)
        host.wait("NBIRTH", node, after=t5)
        host.wait("DBIRTH", node, "lamp", after=t5)

        # Broker outage: reconnect with bdSeq + 1 and a complete rebirth.
        t6 = time.monotonic()
        broker.kill()
        time.sleep(2.0)
        broker.start_again()
        _, nb3 = host.wait("NBIRTH", node, after=t6, within_s=40)
        assert nb3.values()["bdSeq"] == (bd + 1) % 256
        host.wait("DBIRTH", node, "charger-1", after=t6)
        host.wait("NDATA", node, after=t6)

        # Pole restart, clean: NDEATH with the bdSeq in use; then a new node session.
        t7 = time.monotonic()
        pole.stop_controller(signal.SIGTERM)
        _, nd2 = host.wait("NDEATH", node, after=t7)
        assert nd2.values()["bdSeq"] == nb3.values()["bdSeq"]
        pole.start_controller()
        _, nb4 = host.wait("NBIRTH", node, after=t7, within_s=40)
        assert nb4.values()["Properties/Boot Id"] != nb.values()["Properties/Boot Id"] or \
            nb4.values()["Properties/Boot Id"] is None
        host.wait("DBIRTH", node, "lamp", after=t7)

        # A crash: the broker publishes the will, an NDEATH with the current bdSeq.
        time.sleep(1.5)
        t8 = time.monotonic()
        pole.stop_controller(signal.SIGKILL)
        _, nd3 = host.wait("NDEATH", node, after=t8)
        assert nd3.values()["bdSeq"] == nb4.values()["bdSeq"]

        _check_seq(host.session(node, t0))
    except BaseException:
        print(fail_log(pole))
        raise
    finally:
        pole.stop()
        host.p.close()


# ---- sans-I/O: the translator, decoded independently ------------------------------------

@pytest.fixture
def prof() -> Any:
    from edge_controller.profiles.sparkplug_b import SparkplugProfile, SparkplugSettings

    return SparkplugProfile("pole-1", SparkplugSettings(url="mqtt://127.0.0.1:1883"))


TELE = {"ts": "2026-11-28T23:10:17.125Z", "seq": 5, "lamp": {"level": 70, "target": 70,
        "duty": 45875, "on": True, "failsafe": False},
        "sensors": {"lux": 2.4, "temp_c": None, "door_open": False, "tilt_deg": 0.8,
                    "power_w": 41.7, "energy_wh": 18234.5, "mains": True},
        "link": {"up": True, "rtt_ms": 4.2}, "process": {}, "camera": None,
        "visibility": None}


def test_bdseq_will_and_births(prof: Any) -> None:
    from edge_controller.profiles.base import Native

    c1 = prof.connection(1e9)
    assert prof.connection(1e9).will.payload == c1.will.payload  # failed attempt: same
    assert spb.decode(c1.will.payload).values() == {"bdSeq": 0}
    assert c1.will.topic == "spBv1.0/smartpole/NDEATH/pole-1"
    prof.translate(Native("telemetry", TELE), 1e9)
    out = prof.on_connect(1e9)
    assert [o.topic.split("/")[2] for o in out] == ["NBIRTH", "DBIRTH"]
    nb = spb.decode(out[0].payload)
    assert nb.seq == 0 and nb.values()["bdSeq"] == 0
    temp = next(m for m in nb.metrics if m.name == "Sensors/Temperature C")
    assert temp.is_null and temp.datatype == spb.DOUBLE
    assert spb.decode(out[1].payload).seq == 1
    c2 = prof.connection(1e9 + 5)
    assert spb.decode(c2.will.payload).values() == {"bdSeq": 1}
    assert prof.translate(Native("telemetry", TELE), 1e9) == []  # not born: nothing


def test_report_by_exception_and_ddeath(prof: Any) -> None:
    from edge_controller.profiles.base import Native

    prof.connection(0)
    prof.translate(Native("telemetry", TELE), 1e9)
    prof.on_connect(1e9)
    assert prof.translate(Native("telemetry", TELE), 1e9) == []  # nothing changed
    moved = {**TELE, "lamp": {**TELE["lamp"], "level": 50}}
    (o,) = prof.translate(Native("telemetry", moved), 1e9)
    assert spb.decode(o.payload).values() == {"Level": 50} and spb.decode(o.payload).seq == 2
    dark = {**moved, "lamp": None}
    (d,) = prof.translate(Native("telemetry", dark), 1e9)
    assert d.topic.endswith("/DDEATH/pole-1/lamp")


def test_rebirth_and_refusals(prof: Any) -> None:
    from edge_controller.profiles.base import Inbound, Native, Refused

    prof.connection(0)
    prof.translate(Native("telemetry", TELE), 1e9)
    prof.on_connect(1e9)
    out = prof.inbound("spBv1.0/smartpole/NCMD/pole-1",
                       spb.encode(1, [("Node Control/Rebirth", spb.BOOLEAN, True)]), 1e9)
    assert isinstance(out, list) and spb.decode(out[0].payload).seq == 0
    r = prof.inbound("spBv1.0/smartpole/DCMD/pole-1/lamp",
                     spb.encode(1, [("Level", spb.INT32, 30)]), 1e9)
    assert isinstance(r, Inbound) and r.body == {"type": "lamp.set", "level": 30,
                                                 "fade_ms": 1000}
    bad = prof.inbound("spBv1.0/smartpole/DCMD/pole-1/lamp",
                       spb.encode(1, [("Level", spb.INT32, 300)]), 1e9)
    assert isinstance(bad, Refused)
    assert spb.decode(bad.replies[0].payload).values()["Last Command/Status"] == "rejected"
    assert isinstance(prof.inbound("spBv1.0/smartpole/DCMD/pole-1/lamp", b"\xff\xff", 1e9),
                      Refused)
    res = prof.result(r.context, {"status": "rejected", "reason": "signature"}, 1e9)
    assert spb.decode(res[0].payload).values() == {"Last Command/Status": "rejected",
                                                   "Last Command/Reason": "signature"}
