"""What the controller knows about its pole, and the events its changes raise.

Sans-I/O: `apply()` takes a link event and returns upstream events
(name, detail); the caller stamps and publishes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edge_controller.link.session import LinkEvent, as_int

TILT_ALARM_DEG = 10.0  # a pole leaning this far was probably hit
TILT_CLEAR_DEG = 8.0  # hysteresis: clear only once clearly back
FAULT_NAMES = {
    1: "lamp_open_circuit",
    2: "lamp_overcurrent",
    3: "sensor_failure",
    4: "mains_lost",
    5: "watchdog_reset",
    6: "over_temperature",
    7: "link_lost",
    8: "lamp_failure",
    9: "lamp_power_high",
    10: "day_burning",
    11: "lamp_cycling",
}

FAULT_LINK_LOST = 7  # the firmware's fail-safe: controller silent too long

Event = tuple[str, dict[str, object]]


def _num(v: object) -> float | None:
    """Sensor floats: NaN (sensor absent or failed) becomes null upstream."""
    if not isinstance(v, (int, float)) or math.isnan(v) or math.isinf(v):
        return None
    return round(float(v), 3)


@dataclass
class PoleState:
    lamp: dict[str, object] | None = None
    sensors: dict[str, object] | None = None
    digital_inputs: int | None = None
    firmware_stats: dict[str, int] | None = None
    faults: dict[int, str] = field(default_factory=dict)
    failsafe: bool | None = None  # None until the board has told us
    link_up: bool = False
    link_was_up: bool = False
    tilt_alarm: bool = False

    def apply(self, ev: LinkEvent) -> list[Event]:
        if ev.kind == "up":
            self.link_up = True
            if self.link_was_up:
                return [("link_restored", {"detail": ev.detail})]
            self.link_was_up = True
            return []
        if ev.kind == "lost":
            self.link_up = False
            return [("link_lost", {"detail": ev.detail})]
        if ev.kind == "incompatible":
            self.link_up = False
            return [("fault_raised", {"fault": "link_incompatible", "detail": ev.detail})]
        if ev.kind != "frame" or ev.frame is None:
            return []
        name = ev.frame.name
        f = ev.fields
        if name == "lamp_state":
            return self._lamp(f)
        if name == "sensor_report":
            return self._sensors(f)
        if name == "digital_inputs":
            self.digital_inputs = as_int(f["levels"])
        elif name == "fault_report":
            return self._fault(f)
        elif name == "stats":
            self.firmware_stats = {k: as_int(v) for k, v in f.items()}
        return []

    def _lamp(self, f: dict[str, object]) -> list[Event]:
        new: dict[str, object] = {
            "level": as_int(f["level"]),
            "target": as_int(f["target"]),
            "duty": as_int(f["duty"]),
            "on": bool(f["on"]),
            "failsafe": bool(f["failsafe"]),
        }
        self.lamp = new
        on = bool(new["failsafe"])
        if self.failsafe == on or (self.failsafe is None and not on):
            self.failsafe = on
            return []
        self.failsafe = on
        return [("failsafe_entered" if on else "failsafe_exited", {"level": new["level"]})]

    def _sensors(self, f: dict[str, object]) -> list[Event]:
        new: dict[str, object] = {
            "lux": _num(f["lux"]),
            "temp_c": _num(f["temp_c"]),
            "door_open": bool(f["door"]),
            "tilt_deg": _num(f["tilt_deg"]),
            "power_w": _num(f["power_w"]),
            "energy_wh": _num(f["energy_wh"]),
            "mains": bool(f["mains"]),
        }
        old = self.sensors
        self.sensors = new
        out: list[Event] = []
        if old is None:
            # First report: only alarming states are news.
            if new["door_open"]:
                out.append(("door_opened", {}))
            if not new["mains"]:
                out.append(("mains_lost", {}))
        else:
            if new["door_open"] != old["door_open"]:
                out.append(("door_opened" if new["door_open"] else "door_closed", {}))
            if new["mains"] != old["mains"]:
                out.append(("mains_restored" if new["mains"] else "mains_lost", {}))
        tilt = new["tilt_deg"]
        if isinstance(tilt, float):
            if not self.tilt_alarm and tilt >= TILT_ALARM_DEG:
                self.tilt_alarm = True
                out.append(("tilt_alarm", {"tilt_deg": tilt}))
            elif self.tilt_alarm and tilt <= TILT_CLEAR_DEG:
                self.tilt_alarm = False
                out.append(("tilt_cleared", {"tilt_deg": tilt}))
        return out

    def _fault(self, f: dict[str, object]) -> list[Event]:
        code = as_int(f["code"])
        name = FAULT_NAMES.get(code, f"fault_{code}")
        detail: dict[str, object] = {"code": code, "fault": name, "detail": str(f["detail"])}
        if code == FAULT_LINK_LOST:
            # The board's fail-safe. Its start is usually sent while the cable is
            # down and lost; its end proves it happened, so it is always reported.
            if f["active"]:
                if self.failsafe:
                    return []
                self.failsafe = True
                return [("failsafe_entered", detail)]
            self.failsafe = False
            return [("failsafe_exited", detail)]
        if f["active"]:
            if code in self.faults:
                return []
            self.faults[code] = name
            return [("fault_raised", detail)]
        if self.faults.pop(code, None) is None:
            return []
        return [("fault_cleared", detail)]
