"""The runner across connections, against real mosquitto, with the controller in this
process (no board): what a profile hears and sends when its connection is lost and
comes back, when the pole stops cleanly, and which broker it uses with no url.

- Sparkplug: records queued between losing the connection and noticing it are of the
  old session (old seq, old values) and must not follow the new NBIRTH.
- The native `state` reaches profiles: ThingsBoard on the shared connection says
  online at connect, and on a clean stop says offline and disconnects its devices
  before the native connection says offline.
- Sparkplug with no url connects to the native broker ([mqtt] url), with the native
  TLS files and credentials.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
import pytest
from polesim.broker import Broker, mosquitto_path, start_mosquitto

from edge_controller.app import Controller
from edge_controller.config import parse
from edge_controller.profiles import runner as runner_mod
from edge_controller.uplink.mqtt import Record
from tests.profiles import sparkplug_wire as spb
from tests.support import need

POLE = "session-pole"


class Recorder:
    """A persistent-session paho subscriber (QoS 1) that keeps every message in order."""

    def __init__(self, port: int, filters: list[str]) -> None:
        self.msgs: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"rec-{os.getpid()}-{port}", clean_session=False,
                             protocol=mqtt.MQTTv311)
        self.c.reconnect_delay_set(0.1, 0.5)
        subscribed = threading.Event()
        self.c.on_message = self._on
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.connect("127.0.0.1", port)
        self.c.subscribe([(f, 1) for f in filters])
        self.c.loop_start()
        assert subscribed.wait(5), "recorder could not subscribe"

    def _on(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.msgs.append((m.topic, bytes(m.payload)))
            self._cond.notify_all()

    def snapshot(self) -> list[tuple[str, bytes]]:
        with self._cond:
            return list(self.msgs)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def brokers() -> Iterator[tuple[Broker, Broker]]:
    if mosquitto_path() is None:
        need("mosquitto is not installed (apt-get install mosquitto)")
    a = start_mosquitto(persistence=True)
    b = start_mosquitto(persistence=True)
    yield a, b
    a.stop()
    b.stop()


def config(tmp: Path, native_url: str, profile: str, settings: dict[str, Any]) -> Any:
    return parse({
        "pole": {"id": POLE},
        "link": {"port": str(tmp / "no-board")},
        "mqtt": {"url": native_url, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5,
                 "profiles": ["native", profile], profile: settings},
        "queue": {"path": str(tmp / "queue.sqlite3")},
        "camera": {"enabled": False},
        "telemetry": {"interval_s": 3600},
    })


async def until(pred: Any, within_s: float = 15, what: str = "") -> None:
    end = time.monotonic() + within_s
    while not pred():
        assert time.monotonic() < end, f"not in {within_s} s: {what}"
        await asyncio.sleep(0.05)


def spark(msgs: list[tuple[str, bytes]], kind: str) -> list[tuple[int, spb.Payload]]:
    """(index, decoded) of every `kind` message of the node, in arrival order."""
    out = []
    for i, (t, p) in enumerate(msgs):
        parts = t.split("/")
        if len(parts) >= 4 and parts[0] == "spBv1.0" and parts[2] == kind and parts[3] == POLE:
            out.append((i, spb.decode(p)))
    return out


def test_sparkplug_drops_the_old_sessions_backlog(brokers: tuple[Broker, Broker],
                                                  tmp_path: Path) -> None:
    a, b = brokers
    cfg = config(tmp_path, a.url, "sparkplug_b", {"url": b.url})
    host = Recorder(b.port, ["spBv1.0/#"])
    counts: dict[str, int] = {}

    async def scenario() -> None:
        ctl = Controller(cfg)
        sp = ctl.profiles[0]
        task = asyncio.create_task(ctl.run())
        try:
            await until(lambda: sp.connected and len(spark(host.snapshot(), "NBIRTH")) == 1,
                        what="first NBIRTH")
            for n in (1, 2, 3):
                ctl.uplink.event("violation", {"n": n})
            await until(lambda: len(spark(host.snapshot(), "NDATA")) >= 3, what="NDATA 1-3")
            # The broker goes away; before the runner can notice (nothing here yields to
            # the loop), three more events are translated as the live session's NDATA.
            b.kill()
            for n in (4, 5, 6):
                ctl.uplink.event("violation", {"n": n})
            assert sp.queued >= 3
            b.start_again()
            await until(lambda: len(spark(host.snapshot(), "NBIRTH")) == 2, 30,
                        what="NBIRTH of the new session")
            await until(lambda: sp.queued == 0, what="queue empty")
            await asyncio.sleep(1.0)  # anything still coming would arrive now
            counts["stale_dropped"] = sp.stats().get("stale_dropped", 0)
        finally:
            ctl.stop(0)
            await asyncio.wait_for(task, 15)

    try:
        asyncio.run(scenario())
        msgs = host.snapshot()
        births = spark(msgs, "NBIRTH")
        first, second = births[0][1], births[1][1]
        assert second.values()["bdSeq"] == (first.values()["bdSeq"] + 1) % 256
        start = births[1][0]
        after = [(t, spb.decode(p)) for t, p in msgs[start + 1:]
                 if t.split("/")[2] in ("NDATA", "DDATA", "DBIRTH", "DDEATH")]
        # Nothing of the old session after the new birth: seq goes on from 0, and no
        # old NDATA (events 4-6, their old seq) arrives after it.
        old = [p.values().get("Event/Detail") for _, p in after]
        assert all(d is None or json.loads(d).get("n") not in (4, 5, 6) for d in old), old
        seqs = [p.seq for _, p in after]
        assert seqs == list(range(1, len(seqs) + 1)), f"seq after NBIRTH(0): {seqs}"
        # The new NBIRTH carries the current values: the last event (6), declared there.
        assert json.loads(second.values()["Event/Detail"]) == {"n": 6}
        assert counts["stale_dropped"] >= 3
    finally:
        host.close()


def test_native_state_reaches_a_shared_profile(brokers: tuple[Broker, Broker],
                                               tmp_path: Path) -> None:
    a, _b = brokers
    cfg = config(tmp_path, a.url, "thingsboard", {})  # no url: the native connection
    state_topic = f"smartpole/v1/{POLE}/state"
    rec = Recorder(a.port, ["v1/#", state_topic])

    def attrs(msgs: list[tuple[str, bytes]]) -> list[tuple[int, dict[str, Any]]]:
        return [(i, json.loads(p)) for i, (t, p) in enumerate(msgs)
                if t == "v1/devices/me/attributes" and b"state" in p]

    async def scenario() -> None:
        ctl = Controller(cfg)
        tb = ctl.profiles[0]
        task = asyncio.create_task(ctl.run())
        try:
            await until(lambda: tb.connected, what="connected")
            await until(lambda: any(d.get("state") == "online" for _, d in
                                    attrs(rec.snapshot())), what="state online attribute")
            # A charger behind the gateway: ThingsBoard announces it as a device.
            ctl.uplink.publish(Record(ctl.topics.periph_status("charger-1"), {
                "v": 1, "pole_id": POLE, "ts": "2026-01-01T00:00:00.000Z",
                "device_id": "charger-1", "kind": "ocpp_charger", "health": "ok",
                "reasons": [], "seen_at": "2026-01-01T00:00:00.000Z",
                "charger": {"connector_state": "Available"}}, retain=True))
            await until(lambda: any(t == "v1/gateway/connect" for t, _ in rec.snapshot()),
                        what="gateway connect")
        finally:
            ctl.stop(0)
            await asyncio.wait_for(task, 15)

    try:
        asyncio.run(scenario())
        time.sleep(0.5)
        msgs = rec.snapshot()
        offline_native = [i for i, (t, p) in enumerate(msgs)
                          if t == state_topic and json.loads(p)["state"] == "offline"]
        offline_attr = [i for i, d in attrs(msgs) if d == {"state": "offline",
                                                         "state_reason": "shutdown"}]
        disconnect = [i for i, (t, p) in enumerate(msgs) if t == "v1/gateway/disconnect"
                      and json.loads(p) == {"device": f"{POLE} charger-1"}]
        assert offline_native, "the native state never said offline"
        assert offline_attr, f"no offline state attribute: {attrs(msgs)}"
        assert disconnect, "the charger was not disconnected on a clean stop"
        # The profile says it before the native connection says offline and closes.
        assert offline_attr[0] < disconnect[0] < offline_native[-1]
    finally:
        rec.close()


def test_sparkplug_without_url_uses_the_native_broker(brokers: tuple[Broker, Broker],
                                                      tmp_path: Path) -> None:
    a, _b = brokers  # a random port: never the 127.0.0.1:1883 fallback
    cfg = config(tmp_path, a.url, "sparkplug_b", {})
    host = Recorder(a.port, ["spBv1.0/#"])

    async def scenario() -> None:
        ctl = Controller(cfg)
        task = asyncio.create_task(ctl.run())
        try:
            await until(lambda: len(spark(host.snapshot(), "NBIRTH")) == 1, 20,
                        what=f"NBIRTH on the native broker {a.url}")
        finally:
            ctl.stop(0)
            await asyncio.wait_for(task, 15)

    try:
        asyncio.run(scenario())
        time.sleep(0.5)
        # The clean stop's NDEATH, with the NBIRTH's bdSeq, on the same broker.
        deaths = spark(host.snapshot(), "NDEATH")
        assert deaths and deaths[-1][1].values()["bdSeq"] == \
            spark(host.snapshot(), "NBIRTH")[0][1].values()["bdSeq"]
    finally:
        host.close()


def test_native_tls_and_credentials_carry_over(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """No url: the client gets the native host, port, TLS files, user name and the
    password as read at connect (password_file), with its own client id and will."""
    from edge_controller.profiles.sparkplug_b import SparkplugProfile, SparkplugSettings
    from edge_controller.uplink.config import MqttConfig

    pw = tmp_path / "pw"
    pw.write_text("first\n")
    native = MqttConfig(url="mqtts://broker.city:8884", username="pole-7",
                        password_file=pw)
    made: dict[str, Any] = {}
    monkeypatch.setattr(runner_mod, "client_context",
                        lambda ca, cert, key: ("tls", ca, cert, key))
    monkeypatch.setattr(aiomqtt, "Client",
                        lambda host, port, **kw: made.update(host=host, port=port, **kw))

    class Up:
        cfg = native

        def add_tap(self, _tap: Any) -> None: ...

    prof = SparkplugProfile("p7", SparkplugSettings())
    r = runner_mod.ProfileRunner(prof, prof.s, Up(), None, None)  # type: ignore[arg-type]
    assert r.own
    conn = prof.connection(0.0)
    assert conn is not None and conn.url is None
    r._client(conn)
    assert (made["host"], made["port"]) == ("broker.city", 8884)
    assert made["tls_context"] == ("tls", None, None, None)
    assert (made["username"], made["password"]) == ("pole-7", "first")
    assert made["identifier"] == "smartpole-p7-sparkplug_b"
    assert made["will"].topic == "spBv1.0/smartpole/NDEATH/p7"
    pw.write_text("rotated\n")  # read again at the next connect, like the uplink
    r._client(conn)
    assert made["password"] == "rotated"
