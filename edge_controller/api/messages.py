"""The messages a pole publishes, as pydantic models: one definition for the pole and the tools.

Each model is one schema of docs/api/schemas/ (tests/api/test_models.py checks
that their fields match, and that the schemas' samples round-trip through
them). The pole builds every message it publishes from these models; `seq` is
added by the store-and-forward queue when a record is queued, so it is None
on a message the pole builds and set on one a reader parses.

Sections owned by a feature (crossing, dimming, visibility, camera) are typed
`dict` here: the feature builds its section, the schema defines it in full.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from edge_controller.api.version import PAYLOAD_VERSION

Number = int | float  # left as the pole wrote it: an int stays an int in the JSON

# Every capability a birth may list (birth.schema.json's enum, in that order).
CAPABILITIES = ("lamp", "lux", "temp", "door", "tilt", "power", "din", "amp", "wdt", "update",
                "failsafe", "camera", "mqtt5", "dimming", "screen", "peripherals")

# Every event name (event.schema.json's enum).
EVENTS = ("door_opened", "door_closed", "tilt_alarm", "tilt_cleared", "mains_lost",
          "mains_restored", "link_lost", "link_restored", "failsafe_entered", "failsafe_exited",
          "fault_raised", "fault_cleared", "camera_lost", "camera_restored", "task_failed",
          "violation", "warning_played", "periph_lost", "periph_restored",
          "periph_fault_raised", "periph_fault_cleared", "visibility_changed",
          "lamp_failsafe", "lamp_fault", "screen_changed", "crossing_degraded",
          "crossing_restored")

# Why the crossing function cannot see (telemetry crossing.sight.causes, since 1.9.0).
SightCause = Literal["blocked", "moved", "defocused", "too_dark", "low_detectability",
                     "no_frames"]
SIGHT_CAUSES: tuple[str, ...] = ("blocked", "moved", "defocused", "too_dark",
                                 "low_detectability", "no_frames")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Message(_Model):
    """The header of every published message."""

    # Keys left out of the JSON while None (the schema has them optional, never null).
    omit_if_none: ClassVar[tuple[str, ...]] = ("seq",)

    v: Literal[1] = PAYLOAD_VERSION
    pole_id: str
    ts: str

    def payload(self) -> dict[str, Any]:
        """The JSON object to publish (without `seq` until the queue has numbered it)."""
        absent = {k for k in self.omit_if_none if getattr(self, k, 0) is None}
        return self.model_dump(mode="json", exclude=absent)


StateReason = Literal["connected", "shutdown", "connection_lost"]


class State(_Model):
    """Retained connection state; the offline/connection_lost form is the last will."""

    v: Literal[1] = PAYLOAD_VERSION
    pole_id: str
    state: Literal["online", "offline"]
    ts: str | None  # None only in the last will, composed at connect time
    reason: StateReason

    def payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Firmware(_Model):
    version: str
    board_id: str
    protocol: str


class Birth(Message):
    omit_if_none = ("api_version", "commands", "command_signatures")

    boot_id: str
    started_at: str
    controller_version: str
    firmware: Firmware | None
    config_version: str
    models: dict[str, str]
    capabilities: list[str]
    api_version: str | None = None  # since 1.6.0 (None: an older pole)
    commands: list[str] | None = None  # since 1.6.0: every command type this pole accepts
    # Since 1.8.0: required (every command signed), optional (unsigned accepted, signed
    # ones verified) or off (no key: nothing verified). Absent from older poles.
    command_signatures: Literal["required", "optional", "off"] | None = None


class Result(Message):
    id: str | None
    status: Literal["ok", "rejected", "failed"]
    reason: str
    detail: str
    duplicate: bool = False  # since 1.8.0: the original result of a command that ran before
    seq: int | None = None


class Event(Message):
    event: str
    detail: dict[str, Any]
    seq: int | None = None


class Clock(_Model):
    synced: bool
    source: str


class Lamp(_Model):
    level: int
    target: int
    duty: int
    on: bool
    failsafe: bool


class Sensors(_Model):
    lux: Number | None
    temp_c: Number | None
    door_open: bool
    tilt_deg: Number | None
    power_w: Number | None
    energy_wh: Number | None
    mains: bool


class TaskHealth(_Model):
    healthy: bool
    restarts: int
    state: Literal["running", "restarting", "stopped", "failed"]


class Link(_Model):
    up: bool
    port: str
    rtt_ms: Number | None
    tx_frames: int
    rx_frames: int
    crc_errors: int
    framing_errors: int
    oversize: int
    resyncs: int
    naks_received: int
    retries: int
    timeouts: int
    firmware_stats: dict[str, int] | None


class Process(_Model):
    uptime_s: Number
    cpu_percent: Number
    rss_mb: Number
    tasks: dict[str, TaskHealth]


class Mqtt(_Model):
    protocol: Literal["5", "3.1.1"]
    reconnects: int
    commands_received: int
    commands_rejected: int
    queued: int
    dropped: int
    refused: int


class CrossingSight(_Model):
    """Telemetry `crossing.sight` (since 1.9.0): whether the pole can see the crossing.

    `ok` false means the crossing function is degraded: an empty crossing then means
    nothing. The crossing section itself stays a feature-built `dict` in `Telemetry`;
    the crossing service builds this part through this model."""

    ok: bool
    causes: list[SightCause]
    learning: bool
    since_s: Number
    age_s: Number | None
    analyses: int
    mode: Literal["clear", "fog", "night"]
    regime: Literal["day", "twilight", "night"] | None
    mor_m: Number | None
    detectability: Number | None
    shift_px: Number | None
    similarity: Number | None
    sharpness: Number | None
    texture_lost: Number | None
    brightness: Number | None


class Telemetry(Message):
    clock: Clock
    lamp: Lamp | None
    sensors: Sensors | None
    digital_inputs: int | None
    link: Link
    process: Process
    camera: dict[str, Any] | None
    crossing: dict[str, Any] | None
    dimming: dict[str, Any] | None
    visibility: dict[str, Any] | None
    mqtt: Mqtt
    seq: int | None = None


class Charger(_Model):
    connector_state: str
    error_code: str | None
    voltage_v: Number | None
    current_a: Number | None
    power_w: Number | None
    session_energy_wh: Number | None
    meter_total_wh: Number | None
    transaction_id: int | None


class Screen(_Model):
    on: bool
    brightness: int
    content_id: str | None
    temperature_c: Number | None
    fault: str | None


class ScreenShown(_Model):
    """What the pole put on a screen and why (since 1.7.0)."""

    source: Literal["crossing", "fog", "backend", "idle"]
    reason: str
    text: str
    since: str
    until: str | None
    applied: bool


class PeriphStatus(Message):
    """Retained status of one peripheral (periph/<device_id>/status)."""

    # Absent on chargers and from poles before 1.7.0; on a screen's status null means
    # the pole has not decided (the pole writes it, null or not, on every screen status).
    omit_if_none = ("shown",)

    device_id: str
    kind: Literal["modbus_charger", "ocpp_charger", "led_screen"]
    health: Literal["ok", "degraded", "lost"]
    reasons: list[str]
    seen_at: str | None
    charger: Charger | None
    screen: Screen | None
    shown: ScreenShown | None = None  # since 1.7.0


# Schema name (docs/api/schemas/<name>.schema.json) -> model.
MODELS: dict[str, type[BaseModel]] = {
    "state": State, "birth": Birth, "telemetry": Telemetry, "event": Event,
    "result": Result, "periph_status": PeriphStatus,
}
