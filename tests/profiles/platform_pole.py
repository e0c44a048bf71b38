"""The pole side of the issue-20 platform contract tests: mosquitto, the simulated pole
(firmware on the MicroPython unix port, the controller as its own process) with a charger
and an LED screen, and a plain paho client for the platform's side. Nothing here imports
edge_controller.profiles: each platform fixture is written from the platform's docs."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from polesim.broker import Broker, mosquitto_path, start_mosquitto
from polesim.peripherals.demo import DemoPeersThread, start_demo_peers
from polesim.pole import SimPole

from tests.support import build_firmware, need

_ids = itertools.count(1)


@dataclass
class Msg:
    topic: str
    payload: bytes
    t: float


class Platform:
    """An MQTT client playing the platform: subscribes to `filters`, records everything."""

    def __init__(self, port: int, filters: list[str], client_id: str = "",
                 protocol: int = mqtt.MQTTv311,
                 on_connected: Callable[[mqtt.Client], None] | None = None,
                 will: tuple[str, bytes] | None = None) -> None:
        self.msgs: list[Msg] = []
        self.filters = filters
        self._cond = threading.Condition()
        self._sub = threading.Event()
        self._on_connected = on_connected
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=client_id or f"platform-{next(_ids)}-{os.getpid()}",
                             protocol=protocol, clean_session=False)
        self.c.on_message = self._on
        self.c.on_connect = self._connected
        self.c.on_subscribe = lambda *a: self._sub.set()
        if will is not None:
            self.c.will_set(will[0], will[1], qos=1, retain=True)
        self.c.reconnect_delay_set(0.2, 1)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        if not self._sub.wait(5):
            raise TimeoutError("platform could not subscribe")

    def _connected(self, c: mqtt.Client, *_a: Any) -> None:
        # Every (re)connect: subscribe first, then what the platform says on connect.
        self._sub.clear()
        c.subscribe([(f, 1) for f in self.filters])
        if self._on_connected is not None:
            self._on_connected(c)

    def _on(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.msgs.append(Msg(m.topic, bytes(m.payload), time.monotonic()))
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> float:
        t = time.monotonic()
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
        return t

    def wait_for(self, pred: Callable[[Msg], bool], within_s: float = 15.0,
                 after: float = 0.0, what: str = "") -> Msg:
        deadline = time.monotonic() + within_s
        with self._cond:
            while True:
                for m in self.msgs:
                    if m.t >= after and pred(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = [(m.topic, m.payload[:120]) for m in self.msgs[-8:]]
                    raise AssertionError(f"no message {what} in {within_s} s; last: {tail}")
                self._cond.wait(left)

    def since(self, after: float) -> list[Msg]:
        with self._cond:
            return [m for m in self.msgs if m.t >= after]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    # Persistent sessions: a real platform is the broker and misses nothing while it is
    # down; here the platform is a client, so the broker keeps its subscriptions and
    # queues for it across the outage (mosquitto saves them on SIGTERM).
    if mosquitto_path() is None:
        need("mosquitto is not installed (apt-get install mosquitto)")
    b = start_mosquitto(persistence=True)
    yield b
    b.stop()


@pytest.fixture(scope="module")
def firmware() -> Path:
    return build_firmware()


@pytest.fixture(scope="module")
def peers() -> Iterator[DemoPeersThread]:
    p = start_demo_peers(script=False)
    yield p
    p.stop()


def start_pole(tmp: Path, broker: Broker, firmware: Path, peers: DemoPeersThread,
               profile: str, settings: dict[str, Any]) -> SimPole:
    ov: dict[str, Any] = dict(peers.overrides(refresh_s=30.0))
    ov["mqtt"] = {"profiles": ["native", profile], profile: settings}
    pole = SimPole(tmp, broker.url, pole_id=f"p20-{os.getpid()}-{next(_ids)}",
                   overrides=ov, build_dir=firmware)
    return pole.start()


def fail_log(pole: SimPole) -> str:
    return f"\n--- controller log ---\n{pole.controller_log_tail(6000)}"
