"""Contract test of the profile mechanism against real mosquitto brokers.

Three profiles at once: native (broker A), homeassistant on its own broker (B),
and a test profile that shares the native connection (A). Broker B goes down:
native and the shared profile keep going live; Home Assistant's records queue
(durably: the controller is even restarted meanwhile) and arrive in order when B
is back. Then A goes down and Home Assistant on B keeps going.

The observers are plain paho clients with persistent sessions on brokers with
persistence, so nothing the pole sends while an observer reconnects is missed.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from polesim.broker import Broker, mosquitto_path, start_mosquitto

from edge_controller.app import Controller
from edge_controller.config import parse
from edge_controller.profiles.base import Inbound, Native, Out, Profile, Refused
from edge_controller.profiles.runner import ProfileRunner
from edge_controller.profiles.settings import ProfileSettings
from edge_controller.uplink.store import RecordStore
from tests.support import need

POLE = "contract-pole"


class Observer:
    """Persistent-session subscriber (clean_session false, QoS 1): survives restarts."""

    def __init__(self, port: int, topic: str, client_id: str) -> None:
        self.msgs: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=False, protocol=mqtt.MQTTv311)
        self.c.reconnect_delay_set(0.1, 0.5)
        subscribed = threading.Event()
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.connect("127.0.0.1", port)
        self.c.subscribe(topic, qos=1)
        self.c.loop_start()
        assert subscribed.wait(5), "observer could not subscribe"

    def _on_message(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.msgs.append((m.topic, bytes(m.payload)))
            self._cond.notify_all()

    def numbers(self, topic: str) -> list[int]:
        out = []
        with self._cond:
            for t, p in self.msgs:
                if t == topic:
                    doc = json.loads(p)
                    n = doc.get("n", (doc.get("detail") or {}).get("n"))
                    if isinstance(n, int):
                        out.append(n)
        return out

    def wait_numbers(self, topic: str, want: list[int], within_s: float = 15) -> None:
        end = time.monotonic() + within_s
        while time.monotonic() < end:
            got = self.numbers(topic)
            if got[-len(want):] == want or set(want) <= set(got):
                break
            time.sleep(0.05)
        got = self.numbers(topic)
        assert [n for n in got if n in want] == want, f"{topic}: got {got}, want {want}"

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


class Mirror(Profile):
    """A test profile: every native event again on mirror/<pole>/events, in order."""

    name = "mirror"

    def subscriptions(self) -> list[str]:
        return []

    def on_connect(self, now: float) -> list[Out]:
        return []

    def translate(self, msg: Native, now: float) -> list[Out]:
        if msg.kind != "events":
            return []
        return [Out(f"mirror/{POLE}/events", json.dumps(msg.payload["detail"]).encode())]

    def inbound(self, topic: str, payload: bytes, now: float) -> Inbound | Refused | list[Out]:
        return Refused("mirror takes no commands")

    def result(self, context: Any, result: dict[str, Any], now: float) -> list[Out]:
        return []


@pytest.fixture
def brokers() -> Iterator[tuple[Broker, Broker]]:
    if mosquitto_path() is None:
        need("mosquitto is not installed (apt-get install mosquitto)")
    a = start_mosquitto(persistence=True)
    b = start_mosquitto(persistence=True)
    yield a, b
    a.stop()
    b.stop()


class Pole:
    """The controller in this process (its link has no board: not needed here), plus
    the shared-connection mirror profile."""

    def __init__(self, cfg: Any, queue_dir: Path) -> None:
        self.ctl = Controller(cfg)
        self.mirror = ProfileRunner(Mirror(), ProfileSettings(), self.ctl.uplink,
                                    self.ctl.dispatcher,
                                    RecordStore(queue_dir / "queue.mirror.sqlite3"))
        self.ha = self.ctl.profiles[0]

    async def __aenter__(self) -> Pole:
        self.tasks = [asyncio.create_task(self.ctl.run()), asyncio.create_task(self.mirror.run())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.ctl.stop(0)
        await asyncio.wait_for(self.tasks[0], 15)
        self.tasks[1].cancel()

    def emit(self, numbers: range) -> None:
        for n in numbers:
            self.ctl.uplink.event("violation", {"n": n, "zone": "mid-road"})


async def until(pred: Any, within_s: float = 15) -> None:
    end = time.monotonic() + within_s
    while not pred():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.05)


def test_two_profiles_one_broker_down(brokers: tuple[Broker, Broker], tmp_path: Path) -> None:
    a, b = brokers
    cfg = parse({
        "pole": {"id": POLE},
        "link": {"port": str(tmp_path / "no-board")},
        "mqtt": {"url": a.url, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5,
                 "profiles": ["native", "homeassistant"],
                 "homeassistant": {"url": b.url}},
        "queue": {"path": str(tmp_path / "queue.sqlite3")},
        "camera": {"enabled": False},
        "telemetry": {"interval_s": 3600},
    })
    native_events = f"smartpole/v1/{POLE}/events"
    ha_events = f"smartpole/ha/{POLE}/violation"
    mirror_events = f"mirror/{POLE}/events"
    obs_a = Observer(a.port, "#", "obs-a")
    obs_b = Observer(b.port, "#", "obs-b")

    async def scenario() -> None:
        async with Pole(cfg, tmp_path) as pole:
            await until(lambda: pole.ctl.uplink.connected and pole.ha.connected
                        and pole.mirror.connected)
            pole.emit(range(1, 6))
            for obs, topic in ((obs_a, native_events), (obs_b, ha_events),
                               (obs_a, mirror_events)):
                await asyncio.to_thread(obs.wait_numbers, topic, [1, 2, 3, 4, 5])

            b.kill()  # Home Assistant's broker goes down
            await until(lambda: not pole.ha.connected)
            pole.emit(range(6, 16))
            # Native and the shared profile keep going, live.
            await asyncio.to_thread(obs_a.wait_numbers, native_events, list(range(1, 16)))
            await asyncio.to_thread(obs_a.wait_numbers, mirror_events, list(range(1, 16)))
            await until(lambda: pole.ha.queued == 10)
        # The controller stops with B still down; its HA queue is on disk.
        async with Pole(cfg, tmp_path) as pole:
            await until(lambda: pole.ctl.uplink.connected)
            assert pole.ha.queued == 10
            pole.emit(range(16, 18))
            b.start_again()
            # Back: the backlog first, in order, then what came since.
            await asyncio.to_thread(obs_b.wait_numbers, ha_events, list(range(1, 18)), 20)
            await until(lambda: pole.ha.queued == 0)

            a.kill()  # now the native broker goes down: Home Assistant keeps going
            await until(lambda: not pole.ctl.uplink.connected)
            pole.emit(range(18, 21))
            await asyncio.to_thread(obs_b.wait_numbers, ha_events, list(range(1, 21)))
            a.start_again()
            await asyncio.to_thread(obs_a.wait_numbers, native_events, list(range(1, 21)), 20)
            await asyncio.to_thread(obs_a.wait_numbers, mirror_events, list(range(1, 21)), 20)

    try:
        asyncio.run(scenario())
    finally:
        obs_a.close()
        obs_b.close()
    got_b = obs_b.numbers(ha_events)
    assert got_b == sorted(got_b), f"Home Assistant got events out of order: {got_b}"
    # Discovery was there for every (re)connect of the HA profile.
    assert any(t == f"homeassistant/light/{POLE}/lamp/config" for t, _ in obs_b.msgs)
    # The HA availability topic on B is the native state topic with the same last will.
    states = [json.loads(p)["state"] for t, p in obs_b.msgs if t == f"smartpole/v1/{POLE}/state"]
    assert states[0] == "online" and "offline" in states
