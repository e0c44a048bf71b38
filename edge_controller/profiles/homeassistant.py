"""Home Assistant: MQTT discovery, entity state, light and text commands (docs/backends.md).

One HA device per pole (`smartpole_<pole>`), one sub-device per charger and
screen linked with `via_device`. Discovery is retained
`<discovery_prefix>/<component>/<pole>/<object>/config`, sent on every connect,
again when `<discovery_prefix>/status` says `online` (HA restarted), and when a
new part appears (a charger's first status, the first telemetry with a camera,
visibility or crossing section). Entity state lives under `<base_topic>/<pole>/`:

    state            retained  sensors and binary sensors of the pole (one JSON)
    lamp             retained  the light, HA's JSON schema: {"state", "brightness"}
    lamp/set                   HA -> pole: {"state":"ON","brightness":128,"transition":2}
    violation                  event entity: {"event_type":"violation", ...detail}
    <device>/state   retained  a charger's or screen's state (and the screen's text)
    <device>/text/set          HA -> pole: the screen text, plain UTF-8

Availability is the native `state` topic (online / offline, the last will); on an
own broker this profile publishes that topic there with the same will.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from pydantic import Field, field_validator

from edge_controller.profiles.base import (
    Connection,
    Inbound,
    Native,
    Out,
    Profile,
    Refused,
)
from edge_controller.profiles.registry import ProfileContext, ProfileSpec, register
from edge_controller.profiles.settings import ProfileSettings

log = logging.getLogger(__name__)

NAME = "homeassistant"
MAX_DEVICES = 32  # chargers and screens per pole; more are not discovered (bounded state)
BANDS = [">=1000", "200-1000", "50-200", "<50", "unknown"]
# Native events that change a binary sensor at once (telemetry would, a period later).
EVENT_FLAGS = {"door_opened": ("door", True), "door_closed": ("door", False),
               "mains_lost": ("mains", False), "mains_restored": ("mains", True),
               "link_lost": ("link", False), "link_restored": ("link", True),
               "camera_lost": ("camera", False), "camera_restored": ("camera", True)}


class HomeAssistantSettings(ProfileSettings):
    discovery_prefix: str = Field(
        "homeassistant", description="HA's MQTT discovery prefix (its MQTT integration "
        "setting); HA's birth is <prefix>/status.",
    )
    base_topic: str = Field(
        "smartpole/ha", description="Root of the entity state and command topics "
        "(<base_topic>/<pole id>/...).",
    )
    screen_text_s: float = Field(
        300.0, gt=0, le=86400, description="How long a screen text set from HA is shown "
        "(the screen.text command's seconds; at most the screen's max_text_s).",
    )

    @field_validator("discovery_prefix", "base_topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        if not v or any(c in v for c in "+#") or v.startswith("/") or v.endswith("/"):
            raise ValueError("must be plain topic levels without wildcards or a trailing '/'")
        return v


def _j(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _brightness(level: int) -> int:
    return round(max(0, min(100, level)) * 255 / 100)


class HomeAssistant(Profile):
    name = NAME

    def __init__(self, ctx: ProfileContext, s: HomeAssistantSettings) -> None:
        self.ctx, self.s = ctx, s
        self.pole = ctx.pole_id
        self.base = f"{s.base_topic}/{self.pole}"
        self.status_topic = f"{s.discovery_prefix}/status"
        self.uid = f"smartpole_{self.pole}"
        self.sw_version: str | None = None
        self.features: set[str] = set()  # camera, visibility, crossing: seen in telemetry
        self.devices: dict[str, str] = {}  # device_id -> kind (chargers, screens)
        self.state: dict[str, Any] = {k: None for k in (
            "lux", "power_w", "energy_wh", "temp_c", "door", "mains", "link", "camera",
            "mor_m", "band")}
        self.level: int | None = None  # the lamp, as last known
        self.last_on_level = 100  # for ON without a brightness
        self.dev_state: dict[str, dict[str, Any]] = {}
        self.texts: dict[str, str] = {}
        self._sent_state: bytes | None = None
        self._sent_dev: dict[str, bytes] = {}

    # ---- the contract ----------------------------------------------------------------

    def subscriptions(self) -> list[str]:
        return [self.status_topic, f"{self.base}/lamp/set", f"{self.base}/+/text/set"]

    def connection(self, now: float) -> Connection | None:
        if self.s.url is None:
            return None
        offline = {"v": 1, "pole_id": self.pole, "state": "offline", "ts": None,
                   "reason": "connection_lost"}
        return Connection(self.s.url, self.s.client_id or f"smartpole-{self.pole}-{NAME}",
                          self.s.username, self.s.password,
                          will=Out(self.ctx.topics.state, _j(offline), 1, True))

    def on_shutdown(self, now: float) -> list[Out]:
        if self.s.url is None:
            return []  # the native connection says offline itself
        off = {"v": 1, "pole_id": self.pole, "state": "offline", "ts": _iso(now),
               "reason": "shutdown"}
        return [Out(self.ctx.topics.state, _j(off), 1, True)]

    def on_connect(self, now: float) -> list[Out]:
        outs = []
        if self.s.url is not None:
            # On its own broker, HA's availability topic is ours to keep: online now,
            # the will says offline.
            on = {"v": 1, "pole_id": self.pole, "state": "online", "ts": _iso(now),
                  "reason": "connected"}
            outs.append(Out(self.ctx.topics.state, _j(on), 1, True))
        return outs + self.discovery()

    def translate(self, msg: Native, now: float) -> list[Out]:
        p = msg.payload
        if msg.kind == "telemetry":
            return self._telemetry(p)
        if msg.kind == "events":
            return self._event(p)
        if msg.kind == "periph_status" and msg.device_id is not None:
            return self._periph(msg.device_id, p)
        if msg.kind == "birth":
            fw = p.get("firmware") or {}
            sw = f"{p.get('controller_version')} (firmware {fw.get('version', '-')})"
            if sw != self.sw_version:
                self.sw_version = sw
                return self.discovery()
        return []

    def inbound(self, topic: str, payload: bytes, now: float) -> Inbound | Refused | list[Out]:
        if topic == self.status_topic:
            # HA's birth: it lost its discovered entities if it ran without persistence.
            return self.discovery() if payload.strip() == b"online" else []
        if topic == f"{self.base}/lamp/set":
            return self._light_command(payload)
        dev = topic[len(self.base) + 1:].split("/")[0] if topic.startswith(self.base) else ""
        if topic == f"{self.base}/{dev}/text/set":
            return self._text_command(dev, payload)
        return Refused(f"not a topic of this profile: {topic}")

    def result(self, context: Any, result: dict[str, Any], now: float) -> list[Out]:
        kind, arg = context
        ok = result.get("status") == "ok"
        if not ok:
            log.warning("homeassistant: %s not carried out: %s (%s)", kind,
                        result.get("reason"), result.get("detail"))
        if kind == "lamp":
            if ok:
                self.level = int(arg)
                if arg > 0:
                    self.last_on_level = int(arg)
            return [self._lamp_out()]  # HA shows what the lamp does, done or not
        if ok:
            self.texts[kind] = str(arg)
        return self._dev_out(kind, force=True)

    # ---- native -> HA ----------------------------------------------------------------

    def _telemetry(self, t: dict[str, Any]) -> list[Out]:
        outs: list[Out] = []
        sens = t.get("sensors") or {}
        link = t.get("link") or {}
        vis = t.get("visibility")
        cam = t.get("camera")
        self.state.update(
            lux=sens.get("lux"), power_w=sens.get("power_w"), energy_wh=sens.get("energy_wh"),
            temp_c=sens.get("temp_c"), door=sens.get("door_open"), mains=sens.get("mains"),
            link=link.get("up"), camera=None if cam is None else bool(cam.get("healthy")),
            mor_m=None if vis is None else vis.get("mor_m"),
            band=None if vis is None else vis.get("band"))
        new = {f for f, sec in (("camera", cam), ("visibility", vis),
                                ("crossing", t.get("crossing"))) if sec is not None}
        if new - self.features:
            self.features |= new
            outs += self.discovery()
        lamp = t.get("lamp")
        if lamp is not None and isinstance(lamp.get("level"), int):
            level = lamp["level"] if lamp.get("on", True) else 0
            if level != self.level:
                self.level = level
                if level > 0:
                    self.last_on_level = level
                outs.append(self._lamp_out())
        return outs + self._state_out()

    def _event(self, e: dict[str, Any]) -> list[Out]:
        name = e.get("event")
        if name == "violation":
            outs = []
            if "crossing" not in self.features:
                self.features.add("crossing")
                outs = self.discovery()
            detail = e.get("detail") or {}
            body = {k: v for k, v in detail.items() if k != "event_type"}
            return [*outs, Out(f"{self.base}/violation",
                               _j({"event_type": "violation", **body, "ts": e.get("ts")}))]
        if isinstance(name, str) and name in EVENT_FLAGS:
            key, value = EVENT_FLAGS[name]
            self.state[key] = value
            return self._state_out()
        return []

    def _periph(self, dev: str, p: dict[str, Any]) -> list[Out]:
        kind = str(p.get("kind", ""))
        outs: list[Out] = []
        if dev not in self.devices:
            if len(self.devices) >= MAX_DEVICES:
                return []
            self.devices[dev] = kind
            outs += self.discovery()
        ch = p.get("charger") or {}
        self.dev_state[dev] = {"health": p.get("health"),
                               "state": ch.get("connector_state"),
                               "power_w": ch.get("power_w"),
                               "energy_wh": ch.get("session_energy_wh")}
        return outs + self._dev_out(dev)

    def _state_out(self) -> list[Out]:
        body = _j(self.state)
        if body == self._sent_state:
            return []
        self._sent_state = body
        return [Out(f"{self.base}/state", body, 1, True)]

    def _lamp_out(self) -> Out:
        level = self.level or 0
        body = {"state": "ON" if level > 0 else "OFF", "color_mode": "brightness",
                "brightness": _brightness(level if level > 0 else self.last_on_level)}
        return Out(f"{self.base}/lamp", _j(body), 1, True)

    def _dev_out(self, dev: str, force: bool = False) -> list[Out]:
        if dev not in self.devices:
            return []
        st = {**self.dev_state.get(dev, {}), "text": self.texts.get(dev, "")}
        body = _j(st)
        if body == self._sent_dev.get(dev) and not force:
            return []
        self._sent_dev[dev] = body
        return [Out(f"{self.base}/{dev}/state", body, 1, True)]

    # ---- HA -> native ----------------------------------------------------------------

    def _light_command(self, payload: bytes) -> Inbound | Refused:
        try:
            cmd = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            return Refused(f"light command is not JSON: {e}", [self._lamp_out()])
        if not isinstance(cmd, dict) or cmd.get("state") not in ("ON", "OFF"):
            return Refused("light command needs state ON or OFF", [self._lamp_out()])
        fade_ms = 1000
        tr = cmd.get("transition")
        if tr is not None:
            if isinstance(tr, bool) or not isinstance(tr, (int, float)) or not 0 <= tr <= 65:
                return Refused(f"bad transition {tr!r}", [self._lamp_out()])
            fade_ms = int(tr * 1000)
        if cmd["state"] == "OFF":
            level = 0
        elif "brightness" in cmd:
            b = cmd["brightness"]
            if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b <= 255:
                return Refused(f"bad brightness {b!r}", [self._lamp_out()])
            # HA's 1..255 onto 1..100 %: a lamp HA calls on is never switched off.
            level = max(1, round(b * 100 / 255)) if b > 0 else 0
        else:
            level = self.last_on_level
        return Inbound({"type": "lamp.set", "level": level, "fade_ms": fade_ms},
                       ("lamp", level))

    def _text_command(self, dev: str, payload: bytes) -> Inbound | Refused:
        if dev not in self.devices or self.devices[dev] != "led_screen":
            return Refused(f"no screen {dev!r} on this pole")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            return Refused("screen text is not UTF-8", self._dev_out(dev, force=True))
        if not 1 <= len(text) <= 512:
            return Refused("screen text must be 1 to 512 characters",
                           self._dev_out(dev, force=True))
        return Inbound({"type": "screen.text", "device_id": dev, "text": text,
                        "seconds": self.s.screen_text_s}, (dev, text))

    # ---- discovery -------------------------------------------------------------------

    def _device(self) -> dict[str, Any]:
        d = {"identifiers": [self.uid], "name": f"Pole {self.pole}",
             "manufacturer": "smartpole", "model": "smart street-light pole"}
        if self.sw_version:
            d["sw_version"] = self.sw_version
        return d

    def _avail(self) -> dict[str, Any]:
        return {"availability": [{"topic": self.ctx.topics.state,
                                  "value_template": "{{ value_json.state }}"}]}

    def _config(self, component: str, obj: str, name: str, extra: dict[str, Any],
                device: dict[str, Any] | None = None, avail: dict[str, Any] | None = None,
                ) -> Out:
        cfg = {"name": name, "unique_id": f"{self.uid}_{obj}",
               "object_id": f"{self.pole}_{obj}".replace("-", "_"),
               "device": device or self._device(),
               "origin": {"name": "smartpole", "support_url":
                          "https://github.com/smartpole/smartpole/blob/main/docs/backends.md"},
               **(avail or self._avail()), **extra}
        topic = f"{self.s.discovery_prefix}/{component}/{self.pole}/{obj}/config"
        return Out(topic, _j(cfg), 1, True)

    def discovery(self) -> list[Out]:
        st = f"{self.base}/state"
        outs = [self._config("light", "lamp", "Lamp", {
            "schema": "json", "state_topic": f"{self.base}/lamp",
            "command_topic": f"{self.base}/lamp/set", "brightness": True,
            "brightness_scale": 255, "color_mode": True,
            "supported_color_modes": ["brightness"]})]

        def sensor(obj: str, name: str, key: str, **extra: Any) -> None:
            outs.append(self._config("sensor", obj, name, {
                "state_topic": st, "value_template": f"{{{{ value_json.{key} }}}}", **extra}))

        def binary(obj: str, name: str, key: str, device_class: str) -> None:
            outs.append(self._config("binary_sensor", obj, name, {
                "state_topic": st, "value_template": f"{{{{ value_json.{key} }}}}",
                "payload_on": "True", "payload_off": "False", "device_class": device_class}))

        sensor("lux", "Illuminance", "lux", device_class="illuminance",
               unit_of_measurement="lx", state_class="measurement")
        sensor("power", "Power", "power_w", device_class="power",
               unit_of_measurement="W", state_class="measurement")
        sensor("energy", "Energy", "energy_wh", device_class="energy",
               unit_of_measurement="Wh", state_class="total_increasing")
        sensor("temperature", "Temperature", "temp_c", device_class="temperature",
               unit_of_measurement="°C", state_class="measurement")
        binary("door", "Door", "door", "door")
        binary("mains", "Mains", "mains", "power")
        binary("link", "I/O board link", "link", "connectivity")
        if "camera" in self.features:
            binary("camera", "Camera", "camera", "connectivity")
        if "visibility" in self.features:
            sensor("visibility_mor", "Visibility (MOR)", "mor_m", device_class="distance",
                   unit_of_measurement="m", state_class="measurement")
            sensor("visibility_band", "Visibility band", "band", device_class="enum",
                   options=BANDS)
        if "crossing" in self.features:
            outs.append(self._config("event", "violation", "Red-light crossing", {
                "state_topic": f"{self.base}/violation", "event_types": ["violation"]}))
        for dev, kind in self.devices.items():
            outs += self._device_configs(dev, kind)
        return outs

    def _device_configs(self, dev: str, kind: str) -> list[Out]:
        sub = {"identifiers": [f"{self.uid}_{dev}"], "name": f"{self.pole} {dev}",
               "manufacturer": "smartpole", "model": kind, "via_device": self.uid}
        st = f"{self.base}/{dev}/state"
        avail = {"availability_mode": "all", "availability": [
            *self._avail()["availability"],
            {"topic": st, "value_template":
             "{{ 'offline' if value_json.health == 'lost' else 'online' }}"}]}
        if kind == "led_screen":
            return [self._config("text", f"{dev}_text", "Screen text", {
                "state_topic": st, "value_template": "{{ value_json.text }}",
                "command_topic": f"{self.base}/{dev}/text/set", "min": 0, "max": 255,
                "mode": "text"}, sub, avail)]
        return [
            self._config("sensor", f"{dev}_state", "Charger state", {
                "state_topic": st, "value_template": "{{ value_json.state }}"}, sub, avail),
            self._config("sensor", f"{dev}_power", "Charger power", {
                "state_topic": st, "value_template": "{{ value_json.power_w }}",
                "device_class": "power", "unit_of_measurement": "W",
                "state_class": "measurement"}, sub, avail),
        ]


def _iso(now: float) -> str:
    ms = int(now * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{ms:03d}Z"


register(ProfileSpec(NAME, HomeAssistantSettings, HomeAssistant))
