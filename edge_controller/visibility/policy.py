"""The dimming policy, sans-I/O: inputs and an explicit `now` in, a lamp level out.

`DimmingPolicy.step(Inputs)` returns a `Decision` (level, fade, reason). It
keeps only the state its hysteresis needs (the current lighting regime,
darkness by lux, the visibility state, when a lower level was first wanted,
the level it last commanded). The table it implements is in docs/dimming.md.

Priorities (first match wins), then the output stage (rise at once, fall only
after `fall_hold_s`, as a ramp of `fall_time_s`):

| condition                                   | wanted level         | reason              |
| override active                             | override (clamped)   | override            |
| day, no dark lux                            | 0 (off)              | day                 |
| day, day_fog and visibility < 200 m         | design               | day_fog             |
| day but lux dark                            | design               | dark_by_day         |
| twilight                                    | design               | twilight            |
| no sun position and no lux                  | design               | no_light_info       |
| night, people on the crossing (+ hold)      | design               | pedestrians         |
| night, visibility < 1000 m                  | design               | low_visibility      |
| night, visibility unknown > unknown_hold_s  | design               | visibility_unknown  |
| night, visibility unknown, within the hold  | as before            | visibility_pending  |
| night, clear, in a schedule period          | period level         | night_schedule      |
| night, clear                                | night_level          | night               |
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from astral import Observer
from astral.sun import elevation as sun_elevation

from edge_controller.visibility.config import DimmingConfig, SchedulePeriod, hhmm_minutes

FOG_BANDS = ("200-1000", "50-200", "<50")
DENSE_FOG_BANDS = ("50-200", "<50")
CLEAR_BAND = ">=1000"


@dataclass(frozen=True)
class Visibility:
    band: str  # ">=1000" | "200-1000" | "50-200" | "<50" | "unknown"
    confidence: float


@dataclass(frozen=True)
class Override:
    level: int
    until: float  # UTC epoch seconds


@dataclass(frozen=True)
class Schedule:
    night_level: int
    periods: tuple[SchedulePeriod, ...] = ()


@dataclass(frozen=True)
class Inputs:
    now: float  # UTC epoch seconds
    lux: float | None = None  # ambient light; None: no sensor or failed
    lux_age_s: float = 0.0  # how old the lux reading is
    # None: no visibility source at all (then visibility never raises the lamp);
    # a Visibility with band "unknown": the source exists but cannot tell.
    visibility: Visibility | None = None
    presence: bool = False  # people on the crossing now
    override: Override | None = None
    faults: frozenset[str] = frozenset()  # "lux_sensor", "camera"


@dataclass(frozen=True)
class Decision:
    level: int  # command this now
    fade_ms: int  # over this fade
    reason: str  # why the policy wants `target`
    target: int  # where the level is heading
    regime: str  # day | twilight | night | dark_day | unknown
    falling: bool  # a fall is under way (or waiting for its hold)
    sun_elevation: float | None
    visibility: str  # clear | fog | unknown | none

    def as_dict(self) -> dict[str, object]:
        return {
            "level": self.level, "target": self.target, "fade_ms": self.fade_ms,
            "reason": self.reason, "regime": self.regime, "falling": self.falling,
            "sun_elevation": None if self.sun_elevation is None
            else round(self.sun_elevation, 2),
            "visibility": self.visibility,
        }


@dataclass
class _State:
    sun_regime: str | None = None
    dark: bool | None = None  # lux hysteresis
    lux_night: bool | None = None  # lux hysteresis without a sun position
    vis: str = "unknown"  # clear | fog | unknown
    last_known: str | None = None  # clear | fog, before the present unknown
    unknown_since: float | None = None
    presence_until: float = -math.inf
    out: float | None = None  # level last commanded
    lower_since: float | None = None
    last_t: float | None = None
    override_was: bool = False


@dataclass
class DimmingPolicy:
    cfg: DimmingConfig
    latitude: float | None = None
    longitude: float | None = None
    timezone: str = "UTC"
    schedule: Schedule | None = None
    state: _State = field(default_factory=_State)

    def __post_init__(self) -> None:
        self._tz = ZoneInfo(self.timezone)
        self._observer = (Observer(self.latitude, self.longitude)
                          if self.latitude is not None and self.longitude is not None
                          else None)
        if self.schedule is None:
            self.schedule = Schedule(self.cfg.night_level, tuple(self.cfg.schedule))

    # ---- helpers ----------------------------------------------------------------

    def clamp(self, level: float) -> int:
        """Into {0} U [floor, design]."""
        c = self.cfg
        lv = round(level)
        if lv <= 0:
            return 0
        return max(c.floor_level, min(c.design_level, lv))

    def elevation(self, now: float) -> float | None:
        if self._observer is None:
            return None
        return float(sun_elevation(self._observer, datetime.fromtimestamp(now, UTC)))

    def _sun_regime(self, e: float) -> str:
        c = self.cfg
        h = c.sun_hysteresis_deg
        cur = self.state.sun_regime
        if cur == "day":
            new = "day" if e >= c.day_elevation_deg - h else (
                "twilight" if e >= c.night_elevation_deg else "night")
        elif cur == "night":
            new = "night" if e <= c.night_elevation_deg + h else (
                "twilight" if e <= c.day_elevation_deg else "day")
        elif cur == "twilight":
            if e > c.day_elevation_deg + h:
                new = "day"
            elif e < c.night_elevation_deg - h:
                new = "night"
            else:
                new = "twilight"
        else:
            new = ("day" if e > c.day_elevation_deg else
                   "night" if e < c.night_elevation_deg else "twilight")
        self.state.sun_regime = new
        return new

    def _lux_dark(self, lux: float) -> bool:
        c, s = self.cfg, self.state
        if lux < c.lux_on:
            s.dark = True
        elif lux > c.lux_off:
            s.dark = False
        elif s.dark is None:
            s.dark = True  # in between at start: dark is the safe side
        return s.dark

    def _lux_night(self, lux: float) -> bool:
        c, s = self.cfg, self.state
        if lux < c.lux_night_on:
            s.lux_night = True
        elif lux > c.lux_night_off or s.lux_night is None:
            s.lux_night = False  # in between at start: not night (twilight is lit too)
        return s.lux_night

    def _visibility(self, v: Visibility | None, faults: frozenset[str], now: float) -> str:
        """clear | fog | unknown | none (no source)."""
        s, c = self.state, self.cfg
        if v is None and "camera" not in faults:
            return "none"
        if v is None or "camera" in faults:
            kind = "unknown"
        elif v.band in FOG_BANDS and v.confidence >= c.fog_confidence:
            kind = "fog"
        elif v.band == CLEAR_BAND and v.confidence >= c.clear_confidence:
            kind = "clear"
        else:
            kind = "unknown"
        if kind == "unknown":
            if s.vis != "unknown":
                s.last_known = s.vis
                s.unknown_since = now
            elif s.unknown_since is None:
                s.unknown_since = now
        else:
            s.unknown_since = None
            s.last_known = kind
        s.vis = kind
        return kind

    def night_level(self, now: float) -> tuple[int, str]:
        sch = self.schedule
        assert sch is not None
        local = datetime.fromtimestamp(now, self._tz)
        minute = local.hour * 60 + local.minute
        for p in sch.periods:
            a, b = hhmm_minutes(p.start), hhmm_minutes(p.end)
            inside = a <= minute < b if a < b else (minute >= a or minute < b)
            if inside:
                return p.level, "night_schedule"
        return sch.night_level, "night"

    # ---- the step ------------------------------------------------------------------

    def wanted(self, inp: Inputs) -> tuple[int, str, str, float | None, str]:
        """(level, reason, regime, sun elevation, visibility state) before the output
        stage's rise/fall rules."""
        c, s = self.cfg, self.state
        now = inp.now
        lux = inp.lux
        if (lux is None or "lux_sensor" in inp.faults or not math.isfinite(lux)
                or inp.lux_age_s > c.lux_max_age_s):
            lux = None
        e = self.elevation(now)
        if e is not None:
            regime = self._sun_regime(e)
            if regime == "day" and lux is not None and self._lux_dark(lux):
                regime = "dark_day"
            elif lux is not None:
                self._lux_dark(lux)  # keep the hysteresis state current
        elif lux is not None:
            dark = self._lux_dark(lux)
            regime = "night" if self._lux_night(lux) else ("twilight" if dark else "day")
        else:
            regime = "unknown"
        vis = self._visibility(inp.visibility, inp.faults, now)
        if inp.presence:
            s.presence_until = now + c.presence_hold_s
        design = c.design_level
        if inp.override is not None and now < inp.override.until:
            return self.clamp(inp.override.level), "override", regime, e, vis
        if regime == "day":
            dense = (inp.visibility is not None and vis == "fog"
                     and inp.visibility.band in DENSE_FOG_BANDS)
            if c.day_fog and dense:
                return design, "day_fog", regime, e, vis
            return 0, "day", regime, e, vis
        if regime == "dark_day":
            return design, "dark_by_day", regime, e, vis
        if regime == "twilight":
            return design, "twilight", regime, e, vis
        if regime == "unknown":
            return design, "no_light_info", regime, e, vis
        # Night.
        if now < s.presence_until:
            return design, "pedestrians", regime, e, vis
        if vis == "fog":
            return design, "low_visibility", regime, e, vis
        if vis == "unknown":
            since = s.unknown_since if s.unknown_since is not None else now
            if now - since >= c.unknown_hold_s:
                return design, "visibility_unknown", regime, e, vis
            if s.last_known == "fog":
                return design, "low_visibility", regime, e, vis
            if s.last_known is None:
                # Nothing known yet tonight: hold what the lamp does (design when
                # we do not know that either).
                held = design if s.out is None else max(
                    self.clamp(s.out), self.clamp(self.night_level(now)[0]))
                return self.clamp(held), "visibility_pending", regime, e, vis
        lvl, why = self.night_level(now)
        return self.clamp(lvl), why, regime, e, vis

    def step(self, inp: Inputs) -> Decision:
        c, s = self.cfg, self.state
        now = inp.now
        want, reason, regime, e, vis = self.wanted(inp)
        dt = 0.0 if s.last_t is None else max(0.0, now - s.last_t)
        s.last_t = now
        override = reason == "override"
        fade = 0
        falling = False
        if s.out is None:
            s.out = float(want)
            fade = c.rise_fade_ms
        elif override or s.override_was:
            # An override starts, changes or ends: go there at once.
            if abs(want - s.out) >= 0.5:
                fade = c.override_fade_ms
            s.out = float(want)
            s.lower_since = None
        elif want >= s.out - 0.5:
            if want > s.out + 0.5:
                fade = c.rise_fade_ms
            s.out = float(want)
            s.lower_since = None
        else:
            falling = True
            if s.lower_since is None:
                s.lower_since = now
            if now - s.lower_since >= c.fall_hold_s:
                if c.fall_time_s <= 0:
                    new = float(want)
                    fade = c.rise_fade_ms
                else:
                    rate = c.design_level / c.fall_time_s  # % per second
                    new = max(float(want), s.out - rate * max(dt, 0.0))
                    fade = min(65535, round(dt * 1000))
                if want == 0 and new < c.floor_level:
                    new = 0.0  # never dim below the floor: switch off instead
                s.out = new
                if new <= want:
                    s.lower_since = None
        s.override_was = override
        level = self.clamp(s.out)
        return Decision(level, fade, reason, want, regime, falling, e, vis)

    def set_schedule(self, schedule: Schedule) -> None:
        self.schedule = replace(schedule, periods=tuple(schedule.periods))
