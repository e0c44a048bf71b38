"""Normalised peripheral status: what every adapter produces, whatever its protocol.

Chargers are normalised to the OCPP 1.6 connector states plus power, energy and
the charger's own error code; screens to on/off, brightness, content, temperature
and fault. `payload()` is the body of `periph/<device_id>/status` (the uplink adds
`v`, `pole_id` and `ts`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from edge_controller.peripherals.config import CONNECTOR_STATES, ConnectorState, DeviceKind

Health = Literal["ok", "degraded", "lost"]
HEALTH_STATES: tuple[str, ...] = ("ok", "degraded", "lost")

# Absolute floors of the change-of-value deadband, per measured value.
_FLOORS = {"voltage_v": 1.0, "current_a": 0.1, "power_w": 50.0, "session_energy_wh": 10.0,
           "meter_total_wh": 10.0, "temperature_c": 0.5}


@dataclass(frozen=True)
class ChargerStatus:
    connector_state: ConnectorState
    error_code: str | None = None  # the charger's own code; None: no error
    voltage_v: float | None = None
    current_a: float | None = None
    power_w: float | None = None
    session_energy_wh: float | None = None
    meter_total_wh: float | None = None
    transaction_id: int | None = None  # OCPP transaction in progress (None over Modbus)

    def __post_init__(self) -> None:
        if self.connector_state not in CONNECTOR_STATES:
            raise ValueError(f"not an OCPP 1.6 connector state: {self.connector_state!r}")

    @property
    def fault(self) -> str | None:
        """Why this counts as a fault (None: it does not)."""
        if self.connector_state == "Faulted":
            return self.error_code or "Faulted"
        return self.error_code

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ScreenStatus:
    on: bool
    brightness: int  # 0..100 %
    content_id: str | None = None
    temperature_c: float | None = None
    fault: str | None = None  # None: no fault

    def __post_init__(self) -> None:
        if not 0 <= self.brightness <= 100:
            raise ValueError(f"brightness {self.brightness} outside 0..100")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


PeripheralStatus = ChargerStatus | ScreenStatus


def payload(device_id: str, kind: DeviceKind, health: Health, reasons: list[str],
            seen_at: str | None, status: PeripheralStatus | None,
            shown: dict[str, Any] | None = None) -> dict[str, Any]:
    """The status message body (closed: every key always present; `shown`, since API
    1.7.0, on every led_screen status and never on a charger's)."""
    body = {
        "device_id": device_id,
        "kind": kind,
        "health": health,
        "reasons": list(reasons),
        "seen_at": seen_at,
        "charger": status.as_dict() if isinstance(status, ChargerStatus) else None,
        "screen": status.as_dict() if isinstance(status, ScreenStatus) else None,
    }
    if kind == "led_screen":
        # What the pole put on the screen and why: {source, reason, text, since, until,
        # applied}; null while the pole has not decided (or does not arbitrate this screen).
        body["shown"] = shown
    return body


def significant_change(old: PeripheralStatus | None, new: PeripheralStatus | None,
                       deadband_pct: float) -> bool:
    """Whether `new` differs from the last published `old` enough to publish.

    Discrete fields (states, codes, flags, ids) count on any change; measured
    values only beyond max(floor, deadband_pct % of the old value).
    """
    if old is None or new is None or type(old) is not type(new):
        return old is not new
    a, b = old.as_dict(), new.as_dict()
    for k, nv in b.items():
        ov = a[k]
        if k in _FLOORS and ov is not None and nv is not None:
            if abs(float(nv) - float(ov)) > max(_FLOORS[k], abs(float(ov)) * deadband_pct / 100):
                return True
        elif ov != nv:
            return True
    return False
