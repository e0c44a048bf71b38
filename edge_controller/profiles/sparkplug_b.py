"""Sparkplug B 3.0 profile (`profiles = ["sparkplug_b"]`, settings `[mqtt.sparkplug_b]`).

The pole is an edge node (`spBv1.0/<group_id>/N*/<edge_node_id>`); the lamp, each
charging pile and each LED screen are devices (`.../D*/<edge_node_id>/<device_id>`).
Payloads are the Tahu protobuf (`tahutils.tahu.sparkplug_b_pb2`).

- Every connection carries a will: NDEATH with `bdSeq`, which goes up by one (mod 256) on
  every CONNECT; the NBIRTH that follows carries the same `bdSeq`.
- NBIRTH (`seq` 0) then one DBIRTH per device; DDATA by exception (only changed metrics);
  DDEATH when a device is lost (lamp unknown, peripheral health `lost`), DBIRTH when back.
  `seq` runs 0-255 over every N/D message after NBIRTH; NDEATH has none.
- NCMD `Node Control/Rebirth` = true: NBIRTH + DBIRTHs again (same bdSeq, seq from 0).
- DCMD `Level` (lamp) becomes `lamp.set`, DCMD `Text` (a screen) `screen.text`, run as the
  trust rules say (`accept_unsigned`); the outcome is a DDATA of `Last Command/*`.
- With `primary_host_id` set, nothing is born until that host's retained
  `spBv1.0/STATE/<host_id>` says `{"online": true}`; when it goes offline the node
  publishes its NDEATH and waits for it to come back (then a fresh birth).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import Field
from tahutils.tahu import sparkplug_b_pb2 as pb  # type: ignore[import-untyped]

from edge_controller.profiles.base import Connection, Inbound, Native, Out, Profile, Refused
from edge_controller.profiles.registry import ProfileContext, ProfileSpec, register
from edge_controller.profiles.settings import ProfileSettings

NS = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
BDSEQ = "bdSeq"

# Sparkplug DataType codes (spec 3.0, section 6.4.16)
INT32, INT64, UINT64, DOUBLE, BOOLEAN, STRING = 3, 4, 8, 10, 11, 12


class SparkplugSettings(ProfileSettings):
    """`[mqtt.sparkplug_b]`: the edge node's identity and its primary host. Sparkplug needs
    a connection of its own (its will is the NDEATH): with `url` unset it opens one to the
    native [mqtt] broker with the native credentials."""

    group_id: str = Field("smartpole", pattern=r"^[^/+#]+$",
                          description="Sparkplug group id.")
    edge_node_id: str | None = Field(None, pattern=r"^[^/+#]+$",
                                     description="Edge node id; the pole id when unset.")
    primary_host_id: str | None = Field(None, pattern=r"^[^/+#]+$", description="Primary host "
                                        "application id: birth only while its STATE is online. "
                                        "Unset: no primary host.")
    screen_seconds: float = Field(300.0, gt=0, le=86400, description="How long a Text written "
                                  "by DCMD stays on a screen.")
    fade_ms: int = Field(1000, ge=0, le=65535, description="Fade for a lamp Level write.")


Metrics = dict[str, tuple[int, Any]]  # name -> (datatype, value or None)


def ms(ts: str | None, now: float) -> int:
    if not ts:
        return int(now * 1000)
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def _num(v: Any) -> tuple[int, Any]:
    return DOUBLE, (None if v is None else float(v))


def node_metrics(t: dict[str, Any] | None, b: dict[str, Any] | None) -> Metrics:
    t = t or {}
    s = t.get("sensors") or {}
    link, proc, cam = t.get("link") or {}, t.get("process") or {}, t.get("camera")
    vis = t.get("visibility")
    m: Metrics = {
        "Sensors/Lux": _num(s.get("lux")), "Sensors/Temperature C": _num(s.get("temp_c")),
        "Sensors/Door Open": (BOOLEAN, s.get("door_open")),
        "Sensors/Tilt Deg": _num(s.get("tilt_deg")), "Sensors/Mains": (BOOLEAN, s.get("mains")),
        "Link/Up": (BOOLEAN, link.get("up")), "Link/RTT ms": _num(link.get("rtt_ms")),
        "Camera/Healthy": (BOOLEAN, cam["healthy"] if cam else None),
        "Process/Uptime s": _num(proc.get("uptime_s")),
        "Process/CPU Percent": _num(proc.get("cpu_percent")),
        "Visibility/MOR m": _num(vis["mor_m"] if vis else None),
        "Visibility/Band": (STRING, vis["band"] if vis else None),
    }
    if b is not None:
        fw = b.get("firmware") or {}
        m.update({
            "Properties/Controller Version": (STRING, b["controller_version"]),
            "Properties/Boot Id": (STRING, b["boot_id"]),
            "Properties/Config Version": (STRING, b["config_version"]),
            "Properties/Firmware Version": (STRING, fw.get("version")),
            "Properties/API Version": (STRING, b.get("api_version")),
            "Properties/Capabilities": (STRING, ",".join(b["capabilities"])),
        })
    return m


def lamp_metrics(t: dict[str, Any]) -> Metrics | None:
    lamp, s = t.get("lamp"), t.get("sensors") or {}
    if lamp is None:
        return None
    return {"Level": (INT32, lamp["level"]), "Target": (INT32, lamp["target"]),
            "Duty": (INT32, lamp["duty"]), "On": (BOOLEAN, lamp["on"]),
            "Failsafe": (BOOLEAN, lamp["failsafe"]), "Power W": _num(s.get("power_w")),
            "Energy Wh": _num(s.get("energy_wh"))}


def periph_metrics(p: dict[str, Any]) -> Metrics:
    m: Metrics = {"Health": (STRING, p["health"]), "Reasons": (STRING, ",".join(p["reasons"]))}
    if p["kind"] == "led_screen":
        sc = p.get("screen") or {}
        m.update({"On": (BOOLEAN, sc.get("on")), "Brightness": (INT32, sc.get("brightness")),
                  "Content Id": (STRING, sc.get("content_id")),
                  "Temperature C": _num(sc.get("temperature_c")),
                  "Fault": (STRING, sc.get("fault"))})
    else:
        c = p.get("charger") or {}
        m.update({"Connector State": (STRING, c.get("connector_state")),
                  "Error Code": (STRING, c.get("error_code")),
                  "Voltage V": _num(c.get("voltage_v")), "Current A": _num(c.get("current_a")),
                  "Power W": _num(c.get("power_w")),
                  "Session Energy Wh": _num(c.get("session_energy_wh")),
                  "Meter Total Wh": _num(c.get("meter_total_wh")),
                  "Transaction Id": (INT64, c.get("transaction_id"))})
    return m


def _set(metric: Any, dtype: int, value: Any) -> None:
    metric.datatype = dtype
    if value is None:
        metric.is_null = True
    elif dtype == BOOLEAN:
        metric.boolean_value = bool(value)
    elif dtype == STRING:
        metric.string_value = str(value)
    elif dtype == DOUBLE:
        metric.double_value = float(value)
    elif dtype == INT32:
        metric.int_value = int(value) & 0xFFFFFFFF
    else:  # INT64, UINT64
        metric.long_value = int(value) & 0xFFFFFFFFFFFFFFFF


def encode(ts: int, metrics: Metrics, seq: int | None) -> bytes:
    p = pb.Payload()
    p.timestamp = ts
    if seq is not None:
        p.seq = seq
    for name, (dtype, value) in metrics.items():
        m = p.metrics.add()
        m.name, m.timestamp = name, ts
        _set(m, dtype, value)
    return bytes(p.SerializeToString())


def _value(m: Any) -> Any:
    if m.is_null:
        return None
    kind = m.WhichOneof("value")
    return getattr(m, kind) if kind else None


class SparkplugProfile(Profile):
    name = "sparkplug_b"
    # A new MQTT session is a new Sparkplug session: NBIRTH/DBIRTH with current values and
    # seq from 0; DDATA/NDATA queued in the last one (old seq, old values) must not follow.
    session_scoped = True

    def __init__(self, pole_id: str, settings: SparkplugSettings | None = None) -> None:
        self.pole_id = pole_id
        self.s = settings or SparkplugSettings()
        self.node = self.s.edge_node_id or pole_id
        self.bdseq = 0  # of the connection in use
        self.next_bdseq = 0  # of the next CONNECT's will
        self.seq = 0
        self.born = False  # NBIRTH published on this connection (and the host is online)
        self.host_online = self.s.primary_host_id is None
        self.host_ts = -1
        self.telemetry: dict[str, Any] | None = None
        self.birth: dict[str, Any] | None = None
        self.node_last: Metrics = {}
        self.devices: dict[str, Metrics] = {}  # live devices -> last metrics sent
        self.periph: dict[str, dict[str, Any]] = {}  # last status per peripheral
        self.screen_text: dict[str, str] = {}
        self.last_cmd: dict[str, Metrics] = {}
        self.last_event: Metrics = {"Event/Last": (STRING, None), "Event/Detail": (STRING, None)}

    # --- topics and counters -----------------------------------------------------
    def topic(self, kind: str, device: str | None = None) -> str:
        t = f"{NS}/{self.s.group_id}/{kind}/{self.node}"
        return t if device is None else f"{t}/{device}"

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    def _ndeath(self, now: float) -> Out:
        return Out(self.topic("NDEATH"), encode(int(now * 1000),
                                                {BDSEQ: (UINT64, self.bdseq)}, None))

    # --- the contract --------------------------------------------------------------
    def connection(self, now: float) -> Connection | None:
        # The will of the next CONNECT: bdSeq one above the last connection's. Asked again
        # after a failed attempt it is the same (no session was born with it).
        self.born = False
        # url None: the runner connects to the native broker with its TLS and credentials.
        url, user, pw = self.s.url, self.s.username, self.s.password
        will = Out(self.topic("NDEATH"), encode(int(now * 1000),
                                                {BDSEQ: (UINT64, self.next_bdseq)}, None))
        return Connection(url=url, client_id=self.s.client_id or
                          f"smartpole-{self.pole_id}-sparkplug_b", username=user, password=pw,
                          will=will, clean_start=True)

    def on_disconnect(self, now: float) -> None:
        # Nothing more is reported until the next NBIRTH (values are kept for it).
        self.born = False

    def on_shutdown(self, now: float) -> list[Out]:
        # A clean stop: the NDEATH of this connection's bdSeq (its will is discarded).
        if not self.born:
            return []
        self.born = False
        return [self._ndeath(now)]

    def subscriptions(self) -> list[str]:
        subs = [self.topic("NCMD"), self.topic("DCMD") + "/+"]
        if self.s.primary_host_id:  # first, so its retained STATE comes before we birth
            subs.insert(0, f"{NS}/STATE/{self.s.primary_host_id}")
        return subs

    def on_connect(self, now: float) -> list[Out]:
        self.born = False
        self.bdseq, self.next_bdseq = self.next_bdseq, (self.next_bdseq + 1) % 256
        if self.s.primary_host_id is not None:
            self.host_online = False  # wait for its STATE on this connection
            return []
        return self._births(now)

    def _device_metrics(self, device: str) -> Metrics | None:
        if device == "lamp":
            return lamp_metrics(self.telemetry) if self.telemetry else None
        p = self.periph.get(device)
        if p is None or p["health"] == "lost":
            return None
        m = periph_metrics(p)
        if p["kind"] == "led_screen":
            m["Text"] = (STRING, self.screen_text.get(device))
        return m

    def _dbirth(self, device: str, metrics: Metrics, ts: int) -> Out:
        metrics = {**metrics, **self.last_cmd.get(device, {
            "Last Command/Status": (STRING, None), "Last Command/Reason": (STRING, None)})}
        self.devices[device] = metrics
        return Out(self.topic("DBIRTH", device), encode(ts, metrics, self._next_seq()))

    def _births(self, now: float) -> list[Out]:
        ts = int(now * 1000)
        self.seq = 0
        node = {BDSEQ: (UINT64, self.bdseq), REBIRTH: (BOOLEAN, False),
                **node_metrics(self.telemetry, self.birth), **self.last_event}
        self.node_last = node
        out = [Out(self.topic("NBIRTH"), encode(ts, node, 0))]
        self.born = True
        self.devices = {}
        for dev in ["lamp", *sorted(self.periph)]:
            m = self._device_metrics(dev)
            if m is not None:
                out.append(self._dbirth(dev, m, ts))
        return out

    def _data(self, kind: str, device: str | None, last: Metrics, new: Metrics,
              ts: int) -> list[Out]:
        changed = {k: v for k, v in new.items() if last.get(k) != v}
        if not changed:
            return []
        last.update(changed)
        return [Out(self.topic(kind, device), encode(ts, changed, self._next_seq()))]

    def _device_update(self, device: str, ts: int) -> list[Out]:
        m = self._device_metrics(device)
        if m is None:
            if device in self.devices:
                del self.devices[device]
                return [Out(self.topic("DDEATH", device), encode(ts, {}, self._next_seq()))]
            return []
        if device not in self.devices:
            return [self._dbirth(device, m, ts)]
        return self._data("DDATA", device, self.devices[device], m, ts)

    def translate(self, msg: Native, now: float) -> list[Out]:
        p = msg.payload
        ts = ms(p.get("ts"), now)
        if msg.kind == "birth":
            self.birth = p
            if not self.born:
                return []
            # New properties (e.g. firmware known): a node cannot add metrics after
            # NBIRTH, so properties that changed value go as NDATA.
            return self._data("NDATA", None, self.node_last, node_metrics(self.telemetry, p),
                              ts)
        if msg.kind == "state":
            # The node's own state is NBIRTH/NDEATH: on a clean stop the NDEATH is
            # on_shutdown's (published even when the last drain runs out of time), on a
            # lost connection the will's.
            return []
        if msg.kind == "telemetry":
            self.telemetry = p
            if not self.born:
                return []
            out = self._data("NDATA", None, self.node_last,
                             node_metrics(p, self.birth), ts)
            return out + self._device_update("lamp", ts)
        if msg.kind == "periph_status":
            self.periph[p["device_id"]] = p
            return self._device_update(p["device_id"], ts) if self.born else []
        if msg.kind == "events":
            # Declared in NBIRTH (a metric must be, before any NDATA carries it); the
            # latest event is also what the next NBIRTH says.
            ev = {"Event/Last": (STRING, p["event"]),
                  "Event/Detail": (STRING, json.dumps(p["detail"], separators=(",", ":")))}
            self.last_event = ev
            if not self.born:
                return []
            self.node_last.update(ev)
            return [Out(self.topic("NDATA"), encode(ts, ev, self._next_seq()))]
        return []

    def inbound(self, topic: str, payload: bytes, now: float) -> Inbound | Refused | list[Out]:
        if self.s.primary_host_id and topic == f"{NS}/STATE/{self.s.primary_host_id}":
            return self._state(payload, now)
        try:
            msg = pb.Payload.FromString(payload)
        except Exception:  # protobuf raises DecodeError, or others on garbage
            return Refused("sparkplug_b: payload is not a Sparkplug B protobuf")
        values = {m.name: _value(m) for m in msg.metrics}
        if topic == self.topic("NCMD"):
            if values.get(REBIRTH) is True:
                return self._births(now) if self.host_online else []
            return Refused(f"sparkplug_b: NCMD metrics not supported: {sorted(values)}")
        prefix = self.topic("DCMD") + "/"
        if not topic.startswith(prefix):
            return []
        device = topic[len(prefix):]
        if device not in self.devices:
            return Refused(f"sparkplug_b: DCMD for unknown device {device!r}")
        body: dict[str, Any] | None = None
        if device == "lamp" and "Level" in values:
            lv = values["Level"]
            if isinstance(lv, int) and not isinstance(lv, bool) and lv >= 2**31:
                lv -= 2**32  # Int32 travels as uint32
            if isinstance(lv, float) and lv.is_integer():
                lv = int(lv)
            if isinstance(lv, int) and not isinstance(lv, bool) and 0 <= lv <= 100:
                body = {"type": "lamp.set", "level": lv, "fade_ms": self.s.fade_ms}
        elif device in self.periph and self.periph[device]["kind"] == "led_screen" \
                and "Text" in values:
            text = values["Text"]
            if isinstance(text, str) and 1 <= len(text) <= 512:
                body = {"type": "screen.text", "device_id": device, "text": text,
                        "seconds": self.s.screen_seconds}
        if body is None:
            return Refused(f"sparkplug_b: DCMD not writable or bad value: {sorted(values)}",
                           self._cmd_outcome(device, "rejected", "bad_value", now))
        return Inbound(body, (device, body))

    def _state(self, payload: bytes, now: float) -> list[Out]:
        try:
            st = json.loads(payload)
            online, ts = bool(st["online"]), int(st.get("timestamp", 0))
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            return []  # an empty retained message (cleared STATE) or garbage
        if ts < self.host_ts:
            return []  # an older STATE than one seen: ignore (spec 3.0, 7.6)
        self.host_ts = ts
        if online and not self.host_online:
            self.host_online = True
            return self._births(now)
        if not online and self.host_online:
            self.host_online = False
            if self.born:
                self.born = False
                return [self._ndeath(now)]
        return []

    def _cmd_outcome(self, device: str, status: str, reason: str, now: float,
                     extra: Metrics | None = None) -> list[Out]:
        m: Metrics = {"Last Command/Status": (STRING, status),
                      "Last Command/Reason": (STRING, reason), **(extra or {})}
        self.last_cmd[device] = {k: v for k, v in m.items() if k.startswith("Last Command/")}
        if not self.born or device not in self.devices:
            return []
        self.devices[device].update(m)  # always sent: the same outcome twice is two answers
        return [Out(self.topic("DDATA", device), encode(int(now * 1000), m, self._next_seq()))]

    def result(self, context: Any, result: dict[str, Any], now: float) -> list[Out]:
        device, body = context
        extra: Metrics = {}
        if body["type"] == "screen.text" and result["status"] == "ok":
            self.screen_text[device] = body["text"]
            extra["Text"] = (STRING, body["text"])
        return self._cmd_outcome(device, result["status"], result["reason"], now, extra)


def _create(ctx: ProfileContext, s: SparkplugSettings) -> SparkplugProfile:
    return SparkplugProfile(ctx.pole_id, s)


register(ProfileSpec("sparkplug_b", SparkplugSettings, _create))
