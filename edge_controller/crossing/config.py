"""Config sections for zones, the pedestrian signal, the crossing rule and audio warnings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ZoneConfig(_Section):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")] = Field(
        description="Zone name, used in events and counters (lowercase, digits, _ and -)."
    )
    kind: Literal["carriageway", "crosswalk", "waiting"] = Field(
        "crosswalk",
        description="carriageway/crosswalk: entering during red is a violation; waiting: "
        "where people should stand (counted, never a violation).",
    )
    polygon: list[tuple[float, float]] = Field(
        description="Image polygon [[x, y], ...] in pixels of the camera frame, at least 3 "
        "points; presence is judged by a person's ground point (bottom centre of the box).",
        min_length=3,
    )
    clips: list[Path] = Field(
        default_factory=list,
        description="Warning clips (16-bit WAV) for this zone, played in order; the bundled "
        "English and Mandarin clips when empty.",
    )


class PlanConfig(_Section):
    red_s: float = Field(60.0, gt=0, description="Pedestrian red duration per cycle.")
    green_s: float = Field(20.0, gt=0, description="Pedestrian green duration per cycle.")
    offset_s: float = Field(
        0.0, ge=0, description="Start of a red phase, seconds after local midnight (the plan "
        "follows local time through DST changes)."
    )


class CameraSignalConfig(_Section):
    roi: tuple[int, int, int, int] = Field(
        description="Signal head region in the camera frame: x, y, width, height (pixels)."
    )
    confirm_frames: int = Field(
        3, ge=1, le=50, description="A new colour must be seen this many frames in a row."
    )


class SignalConfig(_Section):
    source: Literal["none", "plan", "camera", "mqtt", "din"] = Field(
        "none",
        description="Where the pedestrian signal state comes from; 'none' disables "
        "violations (a stale or unknown state never produces one).",
    )
    plan: PlanConfig | None = Field(None, description="Fixed-time plan, for source = 'plan'.")
    camera: CameraSignalConfig | None = Field(
        None, description="Signal head ROI, for source = 'camera'."
    )
    mqtt_topic: str | None = Field(
        None, description="Topic carrying 'red'/'green' (or {\"state\": ...}) for source = "
        "'mqtt'; default <topic_root>/<pole_id>/signal."
    )
    din_bit: int = Field(0, ge=0, le=15, description="Digital input bit, for source = 'din'.")
    din_red_level: Literal[0, 1] = Field(
        1, description="Level of that input that means red (the other level means green)."
    )
    max_age_s: float = Field(
        2.0, gt=0, le=600, description="A signal reading older than this is stale: no "
        "violations until a fresh one arrives."
    )

    @model_validator(mode="after")
    def _needs(self) -> SignalConfig:
        if self.source == "plan" and self.plan is None:
            raise ValueError("source = 'plan' needs a [signal.plan] table")
        if self.source == "camera" and self.camera is None:
            raise ValueError("source = 'camera' needs a [signal.camera] table with roi")
        return self


class CrossingConfig(_Section):
    enabled: bool = Field(
        False, description="Run detection, tracking and the red-light crossing rule."
    )
    grace_s: float = Field(
        2.0, ge=0, le=60, description="Entering within this long after red onset is tolerated."
    )
    min_track_hits: int = Field(
        3, ge=1, le=100, description="Detections a track needs before it can violate."
    )
    hysteresis_px: float = Field(
        6.0, ge=0, le=100, description="Zone edge band (pixels) a ground point must clear "
        "to count as entering or leaving."
    )
    track_max_lost_s: float = Field(
        2.0, gt=0, le=30, description="How long a lost track is kept to re-identify a person."
    )
    evidence: bool = Field(
        False, description="Attach a JPEG snapshot to violation events, every person blurred."
    )
    evidence_max_kb: int = Field(
        48, ge=4, le=256, description="Upper bound on the snapshot size (quality and scale "
        "are lowered until it fits)."
    )


class AudioConfig(_Section):
    enabled: bool = Field(True, description="Play warnings when a violation is detected.")
    device: str = Field(
        "default", description="ALSA device for aplay ('null' discards the sound; tests)."
    )
    cooldown_s: float = Field(
        10.0, ge=0, le=3600, description="Per zone: no new warning within this long."
    )
    quiet_hours: tuple[str, str] | None = Field(
        None, description="Local [start, end) with no warnings, e.g. [\"22:00\", \"06:00\"]."
    )
    volume_schedule: list[tuple[str, int]] = Field(
        default_factory=lambda: [("00:00", 60), ("07:00", 85), ("21:00", 60)],
        description="Volume in percent from each local HH:MM until the next entry.",
    )
    amp_settle_ms: int = Field(
        50, ge=0, le=2000, description="Wait after switching the amplifier on, before playing."
    )

    @field_validator("quiet_hours")
    @classmethod
    def _qh(cls, v: tuple[str, str] | None) -> tuple[str, str] | None:
        if v is not None and not all(re.match(HHMM, s) for s in v):
            raise ValueError("quiet_hours must be two HH:MM times")
        return v

    @field_validator("volume_schedule")
    @classmethod
    def _vs(cls, v: list[tuple[str, int]]) -> list[tuple[str, int]]:
        if not v:
            raise ValueError("needs at least one [HH:MM, volume] entry")
        for t, vol in v:
            if not re.match(HHMM, t) or not 0 <= vol <= 100:
                raise ValueError(f"[{t!r}, {vol}]: want [\"HH:MM\", 0-100]")
        return v
