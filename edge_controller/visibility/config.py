"""`[visibility]` and `[dimming]` sections of the pole config.

Every knob has a default and a description; docs/dimming.md explains how they
fit together. The pole's latitude and longitude (sun position) and time zone
(night schedule) come from `[pole]`.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
Point = Annotated[list[float], Field(min_length=2, max_length=2)]
Row3 = Annotated[list[float], Field(min_length=3, max_length=3)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalibrationConfig(_Section):
    """Where the camera is, so that each road pixel has a distance.

    Either a pinhole (mounting_height_m, tilt_deg, vfov_deg, roll_deg) or a
    ground-plane homography (homography, camera_xy_m, mounting_height_m).
    """

    mounting_height_m: float | None = Field(
        None, gt=0, le=100, description="Height of the camera's lens above the road (m).")
    tilt_deg: float | None = Field(
        None, gt=0, lt=90, description="Angle of the optical axis below the horizontal.")
    vfov_deg: float | None = Field(
        None, gt=1, lt=170, description="Vertical field of view of the image (degrees).")
    roll_deg: float = Field(
        0.0, ge=-45, le=45, description="Rotation about the optical axis; positive when the "
        "image's right side looks higher than its left (the scene turns clockwise).")
    homography: list[Row3] | None = Field(
        None, min_length=3, max_length=3,
        description="Instead of tilt and field of view: 3x3 matrix mapping image pixels "
        "(x, y, 1) to ground coordinates in metres (e.g. fitted to surveyed road marks).")
    camera_xy_m: Point | None = Field(
        None, description="With a homography: the ground point under the camera, in the "
        "homography's ground coordinates (m).")
    image_size: tuple[int, int] | None = Field(
        None, description="Width and height (px) the calibration was made at; frames of "
        "another size are scaled. Default: the frames' own size.")
    lamp_height_m: float | None = Field(
        None, gt=0, le=100, description="Height of the pole's lamp, which stands at the "
        "camera's ground point; default: the camera's height. At night light travels "
        "lamp -> road -> camera, so fog attenuates it over both distances.")
    min_distance_m: float = Field(
        5.0, ge=0, description="Road closer than this is not analysed.")
    max_distance_m: float = Field(
        150.0, gt=0, le=5000, description="Road farther than this is not analysed (near the "
        "horizon a small calibration error is a large distance error).")
    roi: list[Point] | None = Field(
        None, description="Optional image polygon [[x, y], ...] (px, at image_size) of the "
        "ground surface to analyse; default: every pixel whose ray meets the ground.")

    @model_validator(mode="after")
    def _one_form(self) -> CalibrationConfig:
        if self.homography is not None:
            if self.camera_xy_m is None or self.mounting_height_m is None:
                raise ValueError("a homography needs camera_xy_m and mounting_height_m")
        elif any(v is not None for v in (self.tilt_deg, self.vfov_deg)) and (
                None in (self.mounting_height_m, self.tilt_deg, self.vfov_deg)):
            raise ValueError("a pinhole calibration needs mounting_height_m, tilt_deg and "
                             "vfov_deg")
        if self.min_distance_m >= self.max_distance_m:
            raise ValueError("min_distance_m must be below max_distance_m")
        if self.roi is not None and len(self.roi) < 3:
            raise ValueError("roi needs at least 3 points")
        return self

    @property
    def complete(self) -> bool:
        """Enough to give pixels a distance."""
        if self.homography is not None:
            return True
        return None not in (self.mounting_height_m, self.tilt_deg, self.vfov_deg)


class VisibilityConfig(_Section):
    enabled: bool = Field(
        False, description="Run the `visibility` task (needs the camera and a calibration).")
    calibration: CalibrationConfig = Field(
        default_factory=CalibrationConfig, description="Camera geometry.")
    interval_s: float = Field(
        5.0, ge=0.5, le=600, description="Analyse one camera frame this often.")
    analysis_width: int = Field(
        384, ge=96, le=1920, description="Frames are scaled to this width before analysis "
        "(cost grows with its square).")
    patch_px: tuple[int, int] = Field(
        (8, 16), description="Rows and columns of the analysis patches (at analysis_width); "
        "each patch gives one contrast ratio at one distance.")
    highpass_px: float = Field(
        3.0, ge=0.5, le=20, description="Scale (px at analysis_width) of the Gaussian whose "
        "removal leaves the fine texture that is compared: smooth airlight and smooth "
        "lighting vanish with it.")
    reference_frames: int = Field(
        9, ge=3, le=64, description="Frames whose per-pixel median (people masked) is a new "
        "clear-weather reference.")
    reference_gap_s: float = Field(
        20.0, ge=0, le=3600, description="Least time between two frames taken into a new "
        "reference, so that the median sees people move.")
    refresh_rate: float = Field(
        0.05, ge=0, le=0.5, description="Weight of each clearly clear frame in the running "
        "update of its reference (0: never refresh).")
    relearn_after: int = Field(
        12, ge=2, le=1000, description="Consecutive analyses that find the scene clearer than "
        "its reference (it was learnt in haze) or no longer like it (the camera moved) "
        "before the reference is learnt again.")
    lamp_bucket_pct: int = Field(
        10, ge=1, le=100, description="Night references are kept per lamp level rounded to "
        "this many percent.")
    smoothing_s: float = Field(
        60.0, ge=0, le=3600, description="Analyses within this window are combined into the "
        "reported MOR (inverse-variance mean, outliers dropped).")
    band_hysteresis: float = Field(
        0.1, ge=0, le=0.5, description="The band changes only once the MOR is this fraction "
        "past a band boundary.")
    mor_min_m: float = Field(
        50.0, gt=0, description="Below this the MOR number is not reported and the "
        "confidence is at most 0.3 (band '<50'): too little contrast survives to measure it.")
    mor_max_m: float = Field(
        1000.0, gt=0, description="Above this the MOR number is not reported (band '>=1000', "
        "with the confidence that it is above 1000 m): the road in view is too short to "
        "measure it.")
    min_patches: int = Field(
        12, ge=3, le=10000, description="Fewer usable patches than this: the estimate is "
        "unknown (or heavy fog, when the textured reference patches lost all contrast).")
    min_airlight: float = Field(
        0.35, ge=0, le=5, description="Fog brightens what it hides: a loss of far contrast "
        "whose airlight is below this fraction of the scene's brightness is a shadow or a "
        "lighting change, not fog.")
    person_margin: float = Field(
        0.15, ge=0, le=1, description="Person boxes are grown by this fraction of their size "
        "before they are masked out.")
    stale_s: float = Field(
        60.0, gt=0, le=3600, description="Without a new analysis for this long the estimate "
        "is unknown.")
    sensor_max_age_s: float = Field(
        120.0, gt=0, le=3600, description="An external visibility sensor reading younger than "
        "this takes precedence over the camera.")

    @field_validator("patch_px")
    @classmethod
    def _patch(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not (4 <= v[0] <= 64 and 4 <= v[1] <= 64):
            raise ValueError("patch rows and columns must be 4-64")
        return v

    @model_validator(mode="after")
    def _range(self) -> VisibilityConfig:
        if self.mor_min_m >= self.mor_max_m:
            raise ValueError("mor_min_m must be below mor_max_m")
        return self


class SchedulePeriod(_Section):
    start: Annotated[str, Field(pattern=HHMM)] = Field(
        description="Local start time HH:MM (the pole's time zone).")
    end: Annotated[str, Field(pattern=HHMM)] = Field(
        description="Local end time HH:MM; may be past midnight (end < start).")
    level: int = Field(ge=0, le=100, description="Night level (%) during this period.")


def hhmm_minutes(s: str) -> int:
    if not re.fullmatch(HHMM, s):
        raise ValueError(f"{s!r} is not HH:MM")
    return int(s[:2]) * 60 + int(s[3:])


class DimmingConfig(_Section):
    enabled: bool = Field(
        False, description="Run the `dimming` task: the controller sets the lamp level from "
        "sun, lux, visibility, pedestrians and overrides (docs/dimming.md).")
    interval_s: float = Field(
        5.0, ge=0.2, le=600, description="Period of the dimming policy.")
    design_level: int = Field(
        100, ge=1, le=100, description="Full design light (%): twilight, low visibility, "
        "pedestrians. The lamp never goes above it.")
    floor_level: int = Field(
        40, ge=1, le=100, description="The lamp is never lit below this level (%); off (0) "
        "is allowed by day.")
    night_level: int = Field(
        80, ge=0, le=100, description="Energy-saving night level (%) in good visibility "
        "(on the firmware's logarithmic curve 80 % is about 45 % of full light and power).")
    schedule: list[SchedulePeriod] = Field(
        default_factory=list, description="Night periods with another saving level, e.g. "
        "[{start = \"00:30\", end = \"05:00\", level = 50}]; outside them night_level.")
    lux_on: float = Field(
        30.0, ge=0, description="Ambient light below this (lux) is dark (lamp needed).")
    lux_off: float = Field(
        60.0, ge=0, description="Ambient light above this (lux) is bright again (hysteresis).")
    lux_night_on: float = Field(
        3.0, ge=0, description="Without a sun position (no latitude/longitude): below this "
        "lux it is night.")
    lux_night_off: float = Field(
        8.0, ge=0, description="Without a sun position: above this lux night is over.")
    lux_max_age_s: float = Field(
        30.0, gt=0, description="A lux reading older than this is ignored.")
    day_elevation_deg: float = Field(
        -0.833, ge=-18, le=20, description="Sun elevation above which it is day (-0.833: "
        "sunrise/sunset).")
    night_elevation_deg: float = Field(
        -6.0, ge=-18, le=10, description="Sun elevation below which it is night (-6: end of "
        "civil twilight). Between the two it is twilight.")
    sun_hysteresis_deg: float = Field(
        0.5, ge=0, le=5, description="Hysteresis on both sun elevation thresholds.")
    rise_fade_ms: int = Field(
        2000, ge=0, le=65535, description="Fade for every rise of the level (rise within "
        "seconds).")
    fall_hold_s: float = Field(
        300.0, ge=0, le=86400, description="A lower level is only approached after it has "
        "been wanted for this long without a break.")
    fall_time_s: float = Field(
        180.0, ge=0, le=3600, description="A fall from design level to off takes this long "
        "(shorter falls proportionally less): a slow ramp, sent step by step.")
    unknown_hold_s: float = Field(
        600.0, ge=0, le=86400, description="Visibility unknown (or unconfirmed) this long at "
        "night: full design level.")
    presence_hold_s: float = Field(
        60.0, ge=0, le=3600, description="After the last person left the crossing the design "
        "level is still wanted for this long.")
    fog_confidence: float = Field(
        0.4, ge=0, le=1, description="A band below 1000 m counts as fog from this "
        "confidence; below it, as unknown.")
    clear_confidence: float = Field(
        0.4, ge=0, le=1, description="A band of 1000 m or more counts as clear from this "
        "confidence; below it, as unknown.")
    day_fog: bool = Field(
        False, description="Also light the lamp at design level by day when visibility is "
        "below 200 m.")
    override_fade_ms: int = Field(
        1000, ge=0, le=65535, description="Fade when an override starts or ends.")
    override_max_s: float = Field(
        86400.0, gt=0, le=7 * 86400, description="Longest override a command may ask for.")
    resend_s: float = Field(
        300.0, ge=10, le=86400, description="The level is sent again this often even when "
        "unchanged (repairs a board that lost it).")

    @model_validator(mode="after")
    def _order(self) -> DimmingConfig:
        if self.floor_level > self.design_level:
            raise ValueError("floor_level must not exceed design_level")
        if self.lux_on > self.lux_off:
            raise ValueError("lux_on must not exceed lux_off")
        if self.lux_night_on > self.lux_night_off:
            raise ValueError("lux_night_on must not exceed lux_night_off")
        if self.night_elevation_deg >= self.day_elevation_deg:
            raise ValueError("night_elevation_deg must be below day_elevation_deg")
        for p in self.schedule:
            if p.start == p.end:
                raise ValueError(f"schedule period {p.start}-{p.end} is empty")
        return self
