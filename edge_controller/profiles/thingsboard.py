"""ThingsBoard gateway profile (`profiles = ["thingsboard"]`, settings `[mqtt.thingsboard]`).

The pole is a ThingsBoard *gateway* device; the lamp, each charging pile and each LED
screen are devices behind it (ThingsBoard's Gateway MQTT API):

- `v1/gateway/connect` `{"device", "type"}` once per device and connection;
- `v1/gateway/telemetry` `{"<device>": [{"ts": ms, "values": {...}}]}`;
- `v1/gateway/attributes` `{"<device>": {...}}` (client attributes, published);
- `v1/gateway/rpc` `{"device", "data": {"id", "method", "params"}}` (server-side RPC,
  received) answered on the same topic as `{"device", "id", "data"}`;
- the pole's own telemetry and attributes go to the gateway's device API
  (`v1/devices/me/telemetry`, `v1/devices/me/attributes`).

Authentication is ThingsBoard's: the gateway's access token as the MQTT user name
(`username`, no password), or X.509 (`mqtts://` with `cert_file`/`key_file`). Commands are
run as the runner's trust rules say (`accept_unsigned`: off by default). The device
profiles to import are `edge_controller/profiles/data/thingsboard_*.json`. Mapping tables:
docs/backends.md.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import Field

from edge_controller.profiles.base import Connection, Inbound, Native, Out, Profile, Refused
from edge_controller.profiles.registry import ProfileSpec, register
from edge_controller.profiles.settings import ProfileSettings

GW_CONNECT = "v1/gateway/connect"
GW_DISCONNECT = "v1/gateway/disconnect"
GW_TELEMETRY = "v1/gateway/telemetry"
GW_ATTRIBUTES = "v1/gateway/attributes"
GW_RPC = "v1/gateway/rpc"
ME_TELEMETRY = "v1/devices/me/telemetry"
ME_ATTRIBUTES = "v1/devices/me/attributes"

DEVICE_TYPES = {"lamp": "smartpole-lamp", "charger": "smartpole-charger",
                "screen": "smartpole-screen"}


class ThingsBoardSettings(ProfileSettings):
    """`[mqtt.thingsboard]`: ThingsBoard's MQTT transport (`url`, e.g. mqtt://tb:1883 or
    mqtts://tb:8883), the gateway's access token as `username` (no password), or X.509
    (`cert_file`/`key_file` over mqtts://), and how the devices are named."""

    device_name: str = Field("{pole_id} {device}", description="Name of each device behind "
                             "the gateway in ThingsBoard ({pole_id}, {device}: 'lamp' or the "
                             "peripheral's device_id); names are unique per tenant.")
    screen_seconds: float = Field(300.0, gt=0, le=86400, description="How long text sent "
                                  "without 'seconds' stays on a screen.")
    fade_ms: int = Field(1000, ge=0, le=65535, description="Fade for a level set without "
                         "'fade_ms'.")


def ms(ts: str | None, now: float) -> int:
    """Native RFC 3339 `ts` as Unix milliseconds (`now` when absent)."""
    if not ts:
        return int(now * 1000)
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def _j(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def lamp_values(t: dict[str, Any]) -> dict[str, Any] | None:
    lamp, s = t.get("lamp"), t.get("sensors") or {}
    if lamp is None:
        return None
    return {"level": lamp["level"], "target": lamp["target"], "duty": lamp["duty"],
            "on": lamp["on"], "failsafe": lamp["failsafe"],
            "power_w": s.get("power_w"), "energy_wh": s.get("energy_wh")}


def pole_values(t: dict[str, Any]) -> dict[str, Any]:
    s = t.get("sensors") or {}
    link, proc, cam = t.get("link") or {}, t.get("process") or {}, t.get("camera")
    vis, dim, mq = t.get("visibility"), t.get("dimming"), t.get("mqtt") or {}
    return {
        "lux": s.get("lux"), "temp_c": s.get("temp_c"), "door_open": s.get("door_open"),
        "tilt_deg": s.get("tilt_deg"), "mains": s.get("mains"),
        "digital_inputs": t.get("digital_inputs"),
        "link_up": link.get("up"), "link_rtt_ms": link.get("rtt_ms"),
        "camera_healthy": cam["healthy"] if cam else None,
        "uptime_s": proc.get("uptime_s"), "cpu_percent": proc.get("cpu_percent"),
        "rss_mb": proc.get("rss_mb"), "clock_synced": (t.get("clock") or {}).get("synced"),
        "mqtt_reconnects": mq.get("reconnects"),
        "visibility_mor_m": vis["mor_m"] if vis else None,
        "visibility_band": vis["band"] if vis else None,
        "dimming_reason": dim["reason"] if dim else None,
        "seq": t.get("seq"),
    }


def periph_values(p: dict[str, Any]) -> dict[str, Any]:
    v: dict[str, Any] = {"health": p["health"], "reasons": ",".join(p["reasons"]),
                         "seen_at": p["seen_at"]}
    if p.get("charger"):
        v.update(p["charger"])
    if p.get("screen"):
        v.update(p["screen"])
    return v


class ThingsBoardProfile(Profile):
    name = "thingsboard"

    def __init__(self, pole_id: str, settings: ThingsBoardSettings | None = None) -> None:
        self.pole_id = pole_id
        self.s = settings or ThingsBoardSettings()
        self.birth: dict[str, Any] | None = None
        self.devices: dict[str, str] = {}  # ThingsBoard name -> kind (lamp/charger/screen)
        self.local: dict[str, str] = {}  # ThingsBoard name -> native device id ('lamp')
        self.connected: set[str] = set()  # names announced on this connection
        self.lamp_level: int | None = None
        self.screen_text: dict[str, str] = {}

    # --- names -----------------------------------------------------------------
    def device_name(self, device: str) -> str:
        return self.s.device_name.format(pole_id=self.pole_id, device=device)

    def _ensure(self, device: str, kind: str) -> tuple[str, list[Out]]:
        name = self.device_name(device)
        self.devices[name], self.local[name] = kind, device
        if name in self.connected:
            return name, []
        self.connected.add(name)
        return name, [Out(GW_CONNECT, _j({"device": name, "type": DEVICE_TYPES[kind]})),
                      Out(GW_ATTRIBUTES, _j({name: {"pole_id": self.pole_id,
                                                    "device_id": device, "kind": kind}}))]

    # --- the contract ------------------------------------------------------------
    def subscriptions(self) -> list[str]:
        return [GW_RPC, GW_ATTRIBUTES]

    def on_connect(self, now: float) -> list[Out]:
        self.connected.clear()
        out: list[Out] = []
        for name, kind in list(self.devices.items()):
            out += self._ensure(self.local[name], kind)[1]
        if self.birth is not None:
            out += self._birth(self.birth)
        return out

    def _birth(self, b: dict[str, Any]) -> list[Out]:
        fw = b.get("firmware") or {}
        attrs = {"controller_version": b["controller_version"], "boot_id": b["boot_id"],
                 "started_at": b["started_at"], "config_version": b["config_version"],
                 "firmware_version": fw.get("version"), "board_id": fw.get("board_id"),
                 "api_version": b.get("api_version"),
                 "capabilities": ",".join(b["capabilities"]),
                 "commands": ",".join(b.get("commands") or [])}
        out = [Out(ME_ATTRIBUTES, _j(attrs))]
        if "lamp" in b["capabilities"]:
            out += self._ensure("lamp", "lamp")[1]
        return out

    def translate(self, msg: Native, now: float) -> list[Out]:
        p = msg.payload
        if msg.kind == "birth":
            self.birth = p
            return self._birth(p)
        if msg.kind == "state":
            # The pole's native state as gateway attributes (online at each native connect,
            # offline/shutdown on a clean stop; the devices' disconnects are on_shutdown's).
            return [Out(ME_ATTRIBUTES, _j({"state": p["state"], "state_reason": p["reason"]}))]
        if msg.kind == "telemetry":
            ts = ms(p.get("ts"), now)
            out = [Out(ME_TELEMETRY, _j({"ts": ts, "values": pole_values(p)}))]
            lv = lamp_values(p)
            if lv is not None:
                self.lamp_level = lv["level"]
                name, pre = self._ensure("lamp", "lamp")
                out += [*pre, Out(GW_TELEMETRY, _j({name: [{"ts": ts, "values": lv}]}))]
            return out
        if msg.kind == "periph_status":
            kind = "screen" if p["kind"] == "led_screen" else "charger"
            name, out = self._ensure(p["device_id"], kind)
            values = periph_values(p)
            rec = {"ts": ms(p.get("ts"), now), "values": values}
            return [*out, Out(GW_TELEMETRY, _j({name: [rec]}))]
        if msg.kind == "events":
            ts = ms(p.get("ts"), now)
            values = {"event": p["event"], "event_detail": json.dumps(p["detail"])}
            dev = (p.get("detail") or {}).get("device_id")
            if isinstance(dev, str) and self.device_name(dev) in self.devices:
                return [Out(GW_TELEMETRY, _j({self.device_name(dev):
                                              [{"ts": ts, "values": values}]}))]
            return [Out(ME_TELEMETRY, _j({"ts": ts, "values": values}))]
        return []  # native results: our replies are made in result()

    def inbound(self, topic: str, payload: bytes, now: float) -> Inbound | Refused | list[Out]:
        try:
            msg = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return Refused("thingsboard: not JSON")
        if topic == GW_ATTRIBUTES:
            # Shared attribute updates ({"device", "data"}) are not mapped to commands;
            # our own client-attribute publishes ({"<name>": {...}}) echo here on a broker
            # that delivers them back.
            if isinstance(msg, dict) and "device" in msg and "data" in msg:
                return Refused("thingsboard: shared attribute updates are not mapped")
            return []
        if topic != GW_RPC or not isinstance(msg, dict):
            return []
        data = msg.get("data")
        if not isinstance(data, dict) or "method" not in data:
            return []  # our own reply {"device", "id", "data"} echoed back
        name, rid, method = msg.get("device"), data.get("id"), data.get("method")
        params = data.get("params")

        def reply(result: dict[str, Any]) -> Out:
            return Out(GW_RPC, _j({"device": name, "id": rid, "data": result}))

        def refuse(reason: str, error: str) -> Refused:
            return Refused(f"thingsboard: {reason}",
                           [reply({"success": False, "error": error})])

        if not isinstance(name, str) or name not in self.devices:
            return refuse("unknown_device", f"no device {name!r} on this gateway")
        kind = self.devices[name]
        if method in ("getValue", "getLevel") and kind == "lamp":
            return [reply({"success": True, "value": self.lamp_level})]
        if method == "getText" and kind == "screen":
            return [reply({"success": True, "value": self.screen_text.get(name)})]
        body = self._command(kind, self.local[name], method, params)
        if isinstance(body, str):
            return refuse("unsupported", body)
        if body["type"] == "screen.text":
            self.screen_text[name] = body["text"]
        return Inbound(body, (name, rid))

    def _command(self, kind: str, device: str, method: Any, params: Any) -> dict[str, Any] | str:
        if kind == "lamp" and method in ("setValue", "setLevel"):
            fade = self.s.fade_ms
            if isinstance(params, dict):
                level, fade = params.get("level", params.get("value")), \
                    params.get("fade_ms", fade)
            else:
                level = params
            if isinstance(level, bool):  # a switch widget: on = 100 %, off = 0 %
                level = 100 if level else 0
            if isinstance(level, float) and level.is_integer():
                level = int(level)
            if not isinstance(level, int) or not 0 <= level <= 100 \
                    or not isinstance(fade, int) or not 0 <= fade <= 65535:
                return "level must be an integer 0-100 (fade_ms 0-65535)"
            return {"type": "lamp.set", "level": level, "fade_ms": fade}
        if kind == "screen" and method in ("showText", "setText", "setValue"):
            secs: Any = self.s.screen_seconds
            text = params.get("text") if isinstance(params, dict) else params
            if isinstance(params, dict):
                secs = params.get("seconds", secs)
            if not isinstance(text, str) or not 1 <= len(text) <= 512 \
                    or not isinstance(secs, int | float) or not 0 < secs <= 86400:
                return "text must be 1-512 characters (seconds 0-86400)"
            return {"type": "screen.text", "device_id": device, "text": text,
                    "seconds": float(secs)}
        return f"method {method!r} is not supported for a {kind}"

    def result(self, context: Any, result: dict[str, Any], now: float) -> list[Out]:
        name, rid = context
        data = {"success": result["status"] == "ok", "status": result["status"],
                "reason": result["reason"], "detail": result.get("detail")}
        return [Out(GW_RPC, _j({"device": name, "id": rid, "data": data}))]

    def on_shutdown(self, now: float) -> list[Out]:
        # A clean stop (own connection or shared): the devices behind the gateway go
        # offline with it.
        out = [Out(GW_DISCONNECT, _j({"device": n})) for n in sorted(self.connected)]
        self.connected.clear()
        return out

    def connection(self, now: float) -> Connection | None:
        if self.s.url is None:
            return None  # shares the native connection
        return Connection(url=self.s.url, client_id=self.s.client_id or
                          f"smartpole-{self.pole_id}-thingsboard", username=self.s.username,
                          password=self.s.password)


register(ProfileSpec("thingsboard", ThingsBoardSettings,
                     lambda ctx, s: ThingsBoardProfile(ctx.pole_id, s)))
