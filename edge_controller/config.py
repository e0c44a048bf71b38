"""The pole's one TOML config file, validated by pydantic.

`parse(dict)` validates plain data (tests use it directly); `load(path)` reads
TOML and calls `parse`. Every error names the file, the key path and the
reason. Every knob has a default and a description; `docs/config.md` is the
reference and is checked against these models by a test.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from edge_controller.camera.config import CameraConfig
from edge_controller.configbase import Section as _Section
from edge_controller.crossing.config import (
    AudioConfig,
    CrossingConfig,
    SignalConfig,
    ZoneConfig,
)
from edge_controller.detect.config import DetectorConfig
from edge_controller.link.config import LinkConfig
from edge_controller.peripherals.config import PeripheralsConfig
from edge_controller.peripherals.screen_arbiter import ScreenWarningsConfig
from edge_controller.profiles import registry as profile_registry
from edge_controller.profiles.homeassistant import HomeAssistantSettings
from edge_controller.profiles.huawei_iotda import IotdaSettings
from edge_controller.profiles.sparkplug_b import SparkplugSettings
from edge_controller.profiles.thingsboard import ThingsBoardSettings
from edge_controller.uplink.config import MqttConfig
from edge_controller.visibility.config import DimmingConfig, VisibilityConfig

POLE_ID_RE = r"^[a-z0-9][a-z0-9-]{0,62}$"
# Sections that live with the code that reads them, re-exported for existing callers.
__all__ = ["POLE_ID_RE", "CameraConfig", "Config", "ConfigError", "LinkConfig", "MqttConfig",
           "MqttSection", "config_version", "load", "parse"]


class PoleConfig(_Section):
    id: Annotated[str, Field(pattern=POLE_ID_RE)] = Field(
        "pole-0001",
        description="Pole id: lowercase letters, digits and '-'; part of every MQTT topic.",
    )
    latitude: float | None = Field(
        None, ge=-90, le=90, description="Latitude in degrees (sun position for dimming)."
    )
    longitude: float | None = Field(
        None, ge=-180, le=180, description="Longitude in degrees (sun position for dimming)."
    )
    timezone: str = Field(
        "UTC", description="IANA time zone of the pole, for schedules; reports are always UTC."
    )


    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {v!r} (use an IANA name like Europe/Berlin)") from None
        return v


class UpdateConfig(_Section):
    public_key: str | None = Field(
        None, description="The city's Ed25519 firmware-update key, pinned: 64 hex digits or "
        "a PEM file. Bundles are verified against this key and no other (polectl deploy "
        "--config reads it here); unset, no update is accepted (docs/security.md).",
    )

    @field_validator("public_key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        # Format only: a file is read (and its key checked) when an update is verified.
        if v is None:
            return v
        v = v.strip()
        if re.fullmatch(r"[0-9a-fA-F]{64}", v) or (v and not re.fullmatch(r"[0-9a-fA-F]+", v)):
            return v
        raise ValueError("must be 64 hex digits (the raw key) or the path of a PEM file")


class TelemetryConfig(_Section):
    interval_s: float = Field(
        10.0, ge=0.2, le=3600, description="Period of the telemetry message."
    )
    lamp_poll_s: float = Field(
        5.0, ge=0.2, le=3600, description="Period of lamp state polls over the link."
    )


class QueueConfig(_Section):
    path: str = Field(
        "/var/lib/smartpole/queue.sqlite3",
        description="SQLite file of the store-and-forward queue (':memory:' keeps it in RAM: "
        "no durability, for tests).",
    )
    max_records: int = Field(
        100_000, ge=100, description="Most records kept while the broker is unreachable; "
        "over it the oldest telemetry is dropped first, then the oldest of anything.",
    )
    max_mb: float = Field(64.0, gt=0, description="Most payload megabytes kept (same policy).")
    max_age_h: float = Field(
        168.0, gt=0, description="Records older than this are dropped (counted in telemetry)."
    )
    drain_rate_per_s: float = Field(
        50.0, gt=0, le=10_000, description="Backlog records sent per second after a "
        "reconnect; live records are never held back by the backlog.",
    )


class CommandsConfig(_Section):
    """Trust rules for upstream commands (docs/security.md, "Commands").

    Without this section a pole accepts unsigned commands (a lab or the simulator):
    it says so loudly at start-up and in birth (`command_signatures`). `polectl
    provision` writes the city's key and `require_signature = true`."""

    public_key: Path | None = Field(
        None, description="The city's Ed25519 public key (PEM). When set, a signed command "
        "must verify; see require_signature for unsigned ones.",
    )
    require_signature: bool = Field(
        False, description="Reject every command without a valid signature (needs "
        "public_key). Off only for a lab or the simulator: `polectl provision` turns it on "
        "and `polectl config check` warns while it is off.",
    )
    max_lifetime_s: float = Field(
        900.0, gt=0, le=86400, description="Longest a signed command may be valid: its "
        "expires_at at most this long after its issued_at (reason lifetime otherwise). Every "
        "id is remembered until its expiry, so this is also the replay window.",
    )
    replay_cache: int = Field(
        10_000, ge=10, le=1_000_000, description="Command ids remembered (persisted with "
        "the queue); a repeated id is answered with its original result, never run twice. "
        "When more commands than this run within max_lifetime_s, the oldest are forgotten "
        "and commands expiring before them are refused (expired).",
    )
    max_clock_skew_s: float = Field(
        300.0, ge=0, description="A command issued further in the future than this is "
        "rejected (not_yet_valid): the sender's or the pole's clock is wrong.",
    )

    @model_validator(mode="after")
    def _needs_key(self) -> CommandsConfig:
        if self.require_signature and self.public_key is None:
            raise ValueError("require_signature needs public_key")
        return self


class SupervisorConfig(_Section):
    restart_min_s: float = Field(
        0.5, gt=0, le=60, description="First delay before restarting a failed task."
    )
    restart_max_s: float = Field(
        30.0, gt=0, le=3600, description="Largest delay between restarts of a failed task."
    )
    max_restarts: int = Field(
        20, ge=0, description="Restarts within restart_window_s after which a task is marked "
        "failed and left stopped.",
    )
    restart_window_s: float = Field(
        600.0, gt=0, description="Window for counting restarts against max_restarts."
    )


    @model_validator(mode="after")
    def _backoff_order(self) -> SupervisorConfig:
        if self.restart_min_s > self.restart_max_s:
            raise ValueError("restart_min_s must not exceed restart_max_s")
        return self


class MqttSection(MqttConfig):
    """`[mqtt]` with one table per backend profile (docs/backends.md); a table is read
    only when its profile is listed in `profiles`."""

    homeassistant: HomeAssistantSettings = Field(
        default_factory=HomeAssistantSettings,
        description="Home Assistant MQTT discovery (profile 'homeassistant').",
    )
    thingsboard: ThingsBoardSettings = Field(
        default_factory=ThingsBoardSettings,
        description="ThingsBoard gateway API (profile 'thingsboard').",
    )
    sparkplug_b: SparkplugSettings = Field(
        default_factory=SparkplugSettings,
        description="Sparkplug B 3.0 edge node (profile 'sparkplug_b').",
    )
    huawei_iotda: IotdaSettings = Field(
        default_factory=IotdaSettings,
        description="Huawei Cloud IoTDA gateway device (profile 'huawei_iotda').",
    )

    @model_validator(mode="after")
    def _known_profiles(self) -> MqttSection:
        known = profile_registry.known()
        for name in self.profiles:
            if name not in known:
                raise ValueError(f"profiles: unknown profile {name!r} (known: "
                                 f"{', '.join(known)})")
            if name != profile_registry.NATIVE and name not in type(self).model_fields:
                raise ValueError(f"profiles: {name!r} has no [mqtt.{name}] settings model")
        return self


class Config(_Section):
    pole: PoleConfig = Field(default_factory=PoleConfig, description="Identity and location.")
    link: LinkConfig = Field(default_factory=LinkConfig, description="UART link to the I/O board.")
    mqtt: MqttSection = Field(default_factory=MqttSection, description="Upstream MQTT broker.")
    telemetry: TelemetryConfig = Field(
        default_factory=TelemetryConfig, description="Periodic reports."
    )
    commands: CommandsConfig = Field(
        default_factory=CommandsConfig, description="Trust rules for upstream commands."
    )
    queue: QueueConfig = Field(
        default_factory=QueueConfig, description="Store-and-forward queue behind the uplink."
    )
    camera: CameraConfig = Field(default_factory=CameraConfig, description="Camera capture.")
    supervisor: SupervisorConfig = Field(
        default_factory=SupervisorConfig, description="Task restart policy."
    )
    zones: list[ZoneConfig] = Field(
        default_factory=list,
        description="Crossing zones as image polygons: [[zones]] tables (name, kind, polygon).",
    )
    signal: SignalConfig = Field(
        default_factory=SignalConfig, description="Where the pedestrian signal state comes from."
    )
    crossing: CrossingConfig = Field(
        default_factory=CrossingConfig, description="Tracking and the red-light crossing rule."
    )
    audio: AudioConfig = Field(default_factory=AudioConfig, description="Audio warnings.")
    detector: DetectorConfig = Field(
        default_factory=DetectorConfig, description="Person detector on the camera frames."
    )
    visibility: VisibilityConfig = Field(
        default_factory=VisibilityConfig, description="Visibility (MOR) from the camera."
    )
    dimming: DimmingConfig = Field(
        default_factory=DimmingConfig, description="Lamp dimming policy (docs/dimming.md)."
    )
    peripherals: PeripheralsConfig = Field(
        default_factory=PeripheralsConfig,
        description="EV charging piles and LED screens relayed upstream "
        "([[peripherals.devices]], docs/peripherals.md).",
    )
    screen_warnings: ScreenWarningsConfig = Field(
        default_factory=ScreenWarningsConfig, description="What the pole shows on its LED "
        "screen by itself: crossing and fog warnings over the backend's text "
        "(docs/peripherals.md, the screen arbiter).",
    )
    update: UpdateConfig = Field(
        default_factory=UpdateConfig, description="Signed firmware updates of the I/O board "
        "(docs/deploy.md, docs/security.md).",
    )

    @model_validator(mode="after")
    def _unique_zones(self) -> Config:
        names = [z.name for z in self.zones]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"zone names must be unique: {', '.join(dupes)}")
        if self.visibility.enabled and not self.camera.enabled:
            raise ValueError("visibility.enabled needs camera.enabled")
        if self.crossing.enabled:
            if not self.camera.enabled:
                raise ValueError("crossing.enabled needs camera.enabled")
            if not any(z.kind != "waiting" for z in self.zones):
                raise ValueError("crossing.enabled needs at least one carriageway or "
                                 "crosswalk zone ([[zones]])")
        return self


class ConfigError(Exception):
    """Invalid configuration: one line per problem, `file: key.path: reason`."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {k}: {r}" for k, r in problems))


def _problems(err: ValidationError) -> list[tuple[str, str]]:
    out = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        reason = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            reason = "unknown key (check the spelling; see docs/config.md)"
        out.append((key, reason))
    return out


def parse(data: dict[str, object], source: str = "<config>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(source, _problems(e)) from None


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(str(p), [("(file)", e.strerror or str(e))]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(str(p), [("(syntax)", str(e))]) from None
    return parse(data, str(p))


def config_version(path: str | Path | None) -> str:
    """First 16 hex digits of the config file's SHA-256 ('defaults' without a file)."""
    if path is None:
        return "defaults"
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
