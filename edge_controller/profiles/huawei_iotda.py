"""Huawei Cloud IoTDA profile (`profiles = ["huawei_iotda"]`, settings `[mqtt.huawei_iotda]`).

The pole is an IoTDA gateway device with the services `Pole`, `Lamp`, `Info` and `Event`;
each charging pile and LED screen is a sub-device (services `Charger`, `Screen`). The
product model to import is `edge_controller/profiles/data/huawei_iotda_product_model.json`.

- Properties: `$oc/devices/{device_id}/sys/properties/report`
  `{"services": [{"service_id", "properties", "event_time"}]}`; sub-devices through the
  gateway: `$oc/devices/{device_id}/sys/gateway/sub_devices/properties/report`
  `{"devices": [{"device_id", "services": [...]}]}`.
- Commands: `$oc/devices/{device_id}/sys/commands/request_id={id}`
  `{"object_device_id", "service_id", "command_name", "paras"}`, answered on
  `$oc/devices/{device_id}/sys/commands/response/request_id={id}`
  `{"result_code", "response_name", "paras"}`.
- Connecting: client id `{device_id}_0_{0|1}_{YYYYMMDDHH}` (1: the platform checks the
  timestamp), user name the device id, password the hex HMAC-SHA256 of the device secret
  keyed with that `YYYYMMDDHH` (UTC).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from edge_controller.profiles.base import Connection, Inbound, Native, Out, Profile, Refused
from edge_controller.profiles.registry import ProfileSpec, register
from edge_controller.profiles.settings import ProfileSettings


class IotdaSettings(ProfileSettings):
    """`[mqtt.huawei_iotda]`: the IoTDA instance and the gateway device's credentials. The
    client id, user name and password are IoTDA's (computed from `device_id` and `secret`);
    `client_id`, `username` and `password` are not used."""

    url: str | None = Field("mqtts://iot-mqtts.cn-north-4.myhuaweicloud.com:8883",
                            description="The IoTDA instance's MQTT access address (mqtts:// "
                            "port 8883, or mqtt:// port 1883 where the instance allows it).")
    device_id: str | None = Field(None, description="The gateway device's IoTDA device id "
                                  "(usually <product_id>_<node_id>); the pole id when unset.")
    secret: str = Field("", description="The device secret registered on IoTDA.")
    check_timestamp: bool = Field(True, description="Ask the platform to check the connect "
                                  "timestamp (client id field 3 = 1); false sends 0.")
    sub_device_id: str = Field("{device_id}_{device}", description="IoTDA device id of a "
                               "charger or screen ({device_id}: the gateway's, {device}: the "
                               "peripheral's device_id); register sub-devices with that id.")
    screen_seconds: float = Field(300.0, gt=0, le=86400, description="How long ShowText text "
                                  "stays without 'seconds'.")
    fade_ms: int = Field(1000, ge=0, le=65535, description="Fade for SetLevel without fade_ms.")


def timestamp(now: float) -> str:
    """`YYYYMMDDHH`, UTC."""
    return time.strftime("%Y%m%d%H", time.gmtime(now))


def password(secret: str, stamp: str) -> str:
    return hmac.new(stamp.encode(), secret.encode(), hashlib.sha256).hexdigest()


def event_time(ts: str | None, now: float) -> str:
    """IoTDA's `yyyyMMdd'T'HHmmss'Z'` (UTC) from a native RFC 3339 `ts`."""
    t = datetime.fromisoformat(ts.replace("Z", "+00:00")) if ts else \
        datetime.fromtimestamp(now, UTC)
    return t.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _j(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    # An IoTDA property with a null value fails the product model's type check.
    return {k: v for k, v in d.items() if v is not None}


def pole_props(t: dict[str, Any]) -> dict[str, Any]:
    s = t.get("sensors") or {}
    link, proc, cam = t.get("link") or {}, t.get("process") or {}, t.get("camera")
    vis = t.get("visibility")
    return _drop_none({
        "lux": s.get("lux"), "temp_c": s.get("temp_c"), "door_open": s.get("door_open"),
        "tilt_deg": s.get("tilt_deg"), "mains": s.get("mains"),
        "link_up": link.get("up"), "camera_healthy": cam["healthy"] if cam else None,
        "uptime_s": proc.get("uptime_s"), "cpu_percent": proc.get("cpu_percent"),
        "visibility_mor_m": vis["mor_m"] if vis else None,
        "visibility_band": vis["band"] if vis else None, "seq": t.get("seq"),
    })


def lamp_props(t: dict[str, Any]) -> dict[str, Any] | None:
    lamp, s = t.get("lamp"), t.get("sensors") or {}
    if lamp is None:
        return None
    return _drop_none({"level": lamp["level"], "target": lamp["target"], "duty": lamp["duty"],
                       "on": lamp["on"], "failsafe": lamp["failsafe"],
                       "power_w": s.get("power_w"), "energy_wh": s.get("energy_wh")})


def periph_service(p: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {"health": p["health"], "reasons": ",".join(p["reasons"])}
    if p["kind"] == "led_screen":
        props.update(p.get("screen") or {})
        sid = "Screen"
    else:
        props.update(p.get("charger") or {})
        sid = "Charger"
    return {"service_id": sid, "properties": _drop_none(props)}


class IotdaProfile(Profile):
    name = "huawei_iotda"

    def __init__(self, pole_id: str, settings: IotdaSettings | None = None) -> None:
        self.pole_id = pole_id
        self.s = settings or IotdaSettings()
        self.device_id = self.s.device_id or pole_id
        self.birth: dict[str, Any] | None = None
        self.subs: dict[str, str] = {}  # IoTDA sub-device id -> native device_id
        self.kinds: dict[str, str] = {}  # native device_id -> kind

    def topic(self, rest: str) -> str:
        return f"$oc/devices/{self.device_id}/sys/{rest}"

    def sub_id(self, device: str) -> str:
        return self.s.sub_device_id.format(device_id=self.device_id, device=device)

    def _report(self, services: list[dict[str, Any]]) -> Out:
        return Out(self.topic("properties/report"), _j({"services": services}))

    def connection(self, now: float) -> Connection | None:
        if self.s.url is None:
            return None  # shares the native connection (a bridge to IoTDA, say)
        stamp = timestamp(now)
        sign = 1 if self.s.check_timestamp else 0
        return Connection(url=self.s.url, client_id=f"{self.device_id}_0_{sign}_{stamp}",
                          username=self.device_id, password=password(self.s.secret, stamp),
                          clean_start=True)

    def subscriptions(self) -> list[str]:
        return [self.topic("commands/#")]

    def on_connect(self, now: float) -> list[Out]:
        return self._info(self.birth, now) if self.birth else []

    def _info(self, b: dict[str, Any], now: float) -> list[Out]:
        fw = b.get("firmware") or {}
        props = _drop_none({"controller_version": b["controller_version"],
                            "boot_id": b["boot_id"], "config_version": b["config_version"],
                            "firmware_version": fw.get("version"),
                            "api_version": b.get("api_version"),
                            "capabilities": ",".join(b["capabilities"])})
        return [self._report([{"service_id": "Info", "properties": props,
                               "event_time": event_time(b.get("ts"), now)}])]

    def translate(self, msg: Native, now: float) -> list[Out]:
        p = msg.payload
        if msg.kind == "birth":
            self.birth = p
            return self._info(p, now)
        if msg.kind == "telemetry":
            et = event_time(p.get("ts"), now)
            services = [{"service_id": "Pole", "properties": pole_props(p), "event_time": et}]
            lamp = lamp_props(p)
            if lamp is not None:
                services.append({"service_id": "Lamp", "properties": lamp, "event_time": et})
            return [self._report(services)]
        if msg.kind == "periph_status":
            sub = self.sub_id(p["device_id"])
            self.subs[sub], self.kinds[p["device_id"]] = p["device_id"], p["kind"]
            svc = {**periph_service(p), "event_time": event_time(p.get("ts"), now)}
            return [Out(self.topic("gateway/sub_devices/properties/report"),
                        _j({"devices": [{"device_id": sub, "services": [svc]}]}))]
        if msg.kind == "events":
            return [self._report([{"service_id": "Event", "properties": {
                "name": p["event"], "detail": json.dumps(p["detail"], ensure_ascii=False)},
                "event_time": event_time(p.get("ts"), now)}])]
        return []  # state is the connection itself on IoTDA; results come via result()

    def inbound(self, topic: str, payload: bytes, now: float) -> Inbound | Refused | list[Out]:
        prefix = self.topic("commands/request_id=")
        if not topic.startswith(prefix):
            return []  # our own responses (commands/response/...) if the broker echoes them
        rid = topic[len(prefix):]
        resp_topic = self.topic(f"commands/response/request_id={rid}")

        def refuse(reason: str, detail: str, name: str = "") -> Refused:
            body = {"result_code": 1, "response_name": name or "CommandResponse",
                    "paras": {"status": "rejected", "reason": reason, "detail": detail}}
            return Refused(f"huawei_iotda: {reason}", [Out(resp_topic, _j(body))])

        try:
            cmd = json.loads(payload)
            target = cmd.get("object_device_id") or self.device_id
            service, name = cmd["service_id"], cmd["command_name"]
            paras = cmd.get("paras") or {}
            if not isinstance(paras, dict):
                raise TypeError
        except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError):
            return refuse("schema", "not an IoTDA command")
        rname = f"{name}Response"
        body: dict[str, Any] | None = None
        if target == self.device_id and service == "Lamp" and name == "SetLevel":
            level, fade = paras.get("level"), paras.get("fade_ms", self.s.fade_ms)
            if isinstance(level, float) and level.is_integer():
                level = int(level)
            if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 100 \
                    or not isinstance(fade, int) or not 0 <= fade <= 65535:
                return refuse("bad_value", "level 0-100, fade_ms 0-65535", rname)
            body = {"type": "lamp.set", "level": level, "fade_ms": fade}
        elif target in self.subs and service == "Screen" and name == "ShowText" \
                and self.kinds.get(self.subs[target]) == "led_screen":
            text, secs = paras.get("text"), paras.get("seconds", self.s.screen_seconds)
            if not isinstance(text, str) or not 1 <= len(text) <= 512 \
                    or not isinstance(secs, int | float) or not 0 < secs <= 86400:
                return refuse("bad_value", "text 1-512 characters, seconds 0-86400", rname)
            body = {"type": "screen.text", "device_id": self.subs[target], "text": text,
                    "seconds": float(secs)}
        if body is None:
            return refuse("unsupported", f"{service}.{name} on {target} is not supported",
                          rname)
        return Inbound(body, (resp_topic, rname))

    def result(self, context: Any, result: dict[str, Any], now: float) -> list[Out]:
        topic, rname = context
        body = {"result_code": 0 if result["status"] == "ok" else 1, "response_name": rname,
                "paras": {"status": result["status"], "reason": result["reason"],
                          "detail": result.get("detail")}}
        return [Out(topic, _j(body))]


register(ProfileSpec("huawei_iotda", IotdaSettings,
                     lambda ctx, s: IotdaProfile(ctx.pole_id, s)))
