"""An independent MQTT observer for the HIL tests (paho-mqtt, its own thread).

It is deliberately not the product's uplink code: it subscribes like a city
backend would and records every message with its arrival time.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from polesim.signing import KEYS


@dataclass
class Msg:
    topic: str
    payload: bytes
    retain: bool
    t: float  # time.monotonic() at arrival

    @property
    def kind(self) -> str:
        # smartpole/v1/<pole>/<kind...>
        return "/".join(self.topic.split("/")[3:])

    def json(self) -> Any:
        return json.loads(self.payload)


class Capture:
    def __init__(self, host: str, port: int, topic: str, protocol: int = mqtt.MQTTv5) -> None:
        self.msgs: list[Msg] = []
        self._cond = threading.Condition()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=protocol)
        self._client.on_message = self._on_message
        self._subscribed = threading.Event()
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.connect(host, port)
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client.subscribe(topic, qos=1)
        self._client.loop_start()
        if not self._subscribed.wait(5):
            raise TimeoutError("observer could not subscribe")

    def _on_message(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.msgs.append(Msg(m.topic, bytes(m.payload), bool(m.retain), time.monotonic()))
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1,
                sign: bool = True) -> float:
        """Publish; a command to a simulated pole that requires signatures is signed with
        its test key (polesim.signing) unless `sign` is False or it is not a command."""
        parts = topic.split("/")
        key = KEYS.get(parts[-2]) if len(parts) >= 2 and parts[-1] == "cmd" else None
        if sign and key is not None:
            payload = key.sign_payload(payload, parts[-2])
        t = time.monotonic()
        self._client.publish(topic, payload, qos=qos).wait_for_publish(5)
        return t

    def wait_for(self, pred: Callable[[Msg], bool], within_s: float = 10.0,
                 after: float = 0.0) -> Msg:
        """First message (arrived after `after`) matching `pred`, waiting up to within_s."""
        end = time.monotonic() + within_s
        with self._cond:
            while True:
                for m in self.msgs:
                    if m.t >= after and pred(m):
                        return m
                left = end - time.monotonic()
                if left <= 0:
                    kinds = [m.kind for m in self.msgs[-20:]]
                    raise TimeoutError(f"no matching message within {within_s} s; "
                                       f"last kinds: {kinds}")
                self._cond.wait(left)

    def of_kind(self, kind: str) -> list[Msg]:
        with self._cond:
            return [m for m in self.msgs if m.kind == kind]

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()
