"""Live adapter of visibility and dimming: the `visibility` and `dimming` tasks.

camera task --submit(frame)--> (newest frame, one every interval_s)
    --> visibility task: estimator in a thread --> Reading, `visibility_changed`
    --> dimming task (every interval_s, or woken): policy --> set_lamp(level, fade_ms)

The link, the camera and the uplink stay outside: the controller passes
callables in (`set_lamp`, `on_event`, `lux`, `presence`, `detector`) and
forwards link events to `on_link_event`. Commands: `apply_override`,
`apply_schedule` (bodies in `edge_controller.visibility.commands`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edge_controller.api.commands import CommandOutcome, DimmingSchedule, LampOverride
from edge_controller.detect.enhance import band_distances
from edge_controller.pole_state import FAULT_LINK_LOST, FAULT_NAMES
from edge_controller.visibility.config import (
    CalibrationConfig,
    DimmingConfig,
    SchedulePeriod,
    VisibilityConfig,
)
from edge_controller.visibility.estimator import (
    BANDS,
    UNKNOWN,
    Reading,
    VisibilityEstimator,
    band_of,
)
from edge_controller.visibility.geometry import Geometry
from edge_controller.visibility.policy import (
    Decision,
    DimmingPolicy,
    Inputs,
    Override,
    Schedule,
    Visibility,
)

log = logging.getLogger(__name__)

# The fault_report codes about the lamp (the table is pole_state.FAULT_NAMES).
LAMP_FAULTS = {c: FAULT_NAMES[c] for c in (1, 2, 8, 9, 10, 11)}
SETTLE_S = 5.0  # after a lamp change, frames wait this long (exposure, fade tail)
STARTUP_GRACE_S = 10.0  # without sun position, wait this long for the first lux reading


class _Frame(Protocol):
    index: int
    t: float
    image: np.ndarray[Any, np.dtype[np.uint8]]


class _PoleLike(Protocol):  # the [pole] section
    @property
    def latitude(self) -> float | None: ...

    @property
    def longitude(self) -> float | None: ...

    @property
    def timezone(self) -> str: ...


@dataclass
class _Job:
    frame: _Frame
    at: float


SetLamp = Callable[[int, int], Awaitable[bool]]
Detector = Callable[[np.ndarray[Any, np.dtype[np.uint8]]], np.ndarray[Any, np.dtype[Any]] | None]


class DimmingService:
    def __init__(
        self,
        visibility: VisibilityConfig,
        dimming: DimmingConfig,
        pole: _PoleLike,
        set_lamp: SetLamp,
        on_event: Callable[[str, dict[str, Any]], None],
        *,
        lux: Callable[[], float | None] | None = None,
        presence: Callable[[], bool] | None = None,
        detector: Detector | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`set_lamp(level, fade_ms)` sends lamp_set over the link (True when acked);
        `lux()` is the board's latest ambient light (None when unknown or the link
        is down); `presence()` says whether people are on the crossing now;
        `detector(image)` returns person boxes for masking when none were pushed."""
        self.vcfg = visibility
        self.cfg = dimming
        self._set_lamp = set_lamp
        self._on_event = on_event
        self._lux = lux
        self._presence = presence
        self._detector = detector
        self._clock = clock
        self.estimator = VisibilityEstimator(visibility)
        self.policy = DimmingPolicy(dimming, pole.latitude, pole.longitude, pole.timezone)
        self._frames: deque[_Job] = deque(maxlen=1)
        self._frame_ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._next_frame_at = 0.0
        self._boxes: tuple[float, np.ndarray[Any, np.dtype[Any]]] | None = None
        self._sensor: tuple[float, float | None] | None = None  # (t, mor_m)
        self.reading: Reading | None = None
        self.decision: Decision | None = None
        self.override: Override | None = None
        self.lamp: dict[str, object] | None = None  # the board's lamp_state
        self.failsafe: bool | None = None
        self._failsafe_since: float | None = None
        self._lamp_changed_at = -math.inf
        self._sent: int | None = None
        self._sent_at = -math.inf
        self._resync = True
        self.commands_sent = 0
        self.commands_failed = 0
        self.analyses = 0
        self.last_analysis_ms = 0.0
        self.frames_dropped = 0
        self.faults: dict[str, str] = {}  # active lamp faults: name -> detail
        self.last_run: float | None = None
        self._started = clock()

    # ---- inputs -------------------------------------------------------------------

    def submit(self, frame: _Frame) -> None:
        """Camera task hook, for every frame: cheap, never blocks. Keeps one frame per
        `interval_s`; the rest are dropped here."""
        now = self._clock()
        if now < self._next_frame_at:
            return
        if self._frames:
            self.frames_dropped += 1
        self._frames.append(_Job(frame, now))
        self._next_frame_at = now + self.vcfg.interval_s
        self._frame_ready.set()

    def push_detections(self, boxes: np.ndarray[Any, np.dtype[Any]], t: float | None = None
                        ) -> None:
        """Person boxes (x1, y1, x2, y2, ...) of a recent frame, e.g. from the crossing
        detector: masked out of the next analysis."""
        self._boxes = (self._clock() if t is None else t, np.asarray(boxes))

    def push_sensor(self, mor_m: float | None, t: float | None = None) -> None:
        """An external visibility sensor's MOR (m); it takes precedence while fresh."""
        self._sensor = (self._clock() if t is None else t, mor_m)
        self._wake.set()

    def wake(self) -> None:
        """Run the policy now (presence changed, a command arrived)."""
        self._wake.set()

    def on_link_event(self, ev: Any) -> None:
        """Forward every `LinkEvent` here (from the controller's `_on_link`)."""
        now = self._clock()
        kind = getattr(ev, "kind", "")
        if kind in ("up", "hello"):
            # A new or rebooted board: it holds (or restored) a level we must set again.
            self._resync = True
            self._wake.set()
            return
        frame = getattr(ev, "frame", None)
        if kind != "frame" or frame is None:
            return
        f: dict[str, object] = getattr(ev, "fields", {}) or {}
        if frame.name == "lamp_state":
            new = {k: f.get(k) for k in ("level", "target", "duty", "on", "failsafe")}
            if self.lamp is None or (new["level"], new["target"]) != (
                    self.lamp.get("level"), self.lamp.get("target")):
                self._lamp_changed_at = now
            self.lamp = new
        elif frame.name == "fault_report":
            self._fault(int(str(f.get("code", 0))), bool(f.get("active")),
                        str(f.get("detail", "")), now)

    def _fault(self, code: int, active: bool, detail: str, now: float) -> None:
        if code == FAULT_LINK_LOST:
            if active:
                if self.failsafe:
                    return
                self.failsafe = True
                self._failsafe_since = now
                self._on_event("lamp_failsafe", {"active": True, "detail": detail})
                return
            # The board reports the end when the link is back, with what it did.
            dur = _ms_in(detail, "after")
            if dur is None and self._failsafe_since is not None:
                dur = int((now - self._failsafe_since) * 1000)
            self.failsafe = False
            self._failsafe_since = None
            self._resync = True
            self._wake.set()
            self._on_event("lamp_failsafe", {
                "active": False, "detail": detail,
                "duration_s": None if dur is None else round(dur / 1000, 1)})
            return
        name = LAMP_FAULTS.get(code)
        if name is None:
            return
        if active == (name in self.faults):
            return
        if active:
            self.faults[name] = detail
        else:
            self.faults.pop(name, None)
        self._on_event("lamp_fault", {"fault": name, "code": code, "active": active,
                                      "detail": detail})

    # ---- commands -------------------------------------------------------------------

    def apply_override(self, body: LampOverride, now: float | None = None) -> CommandOutcome:
        now = self._clock() if now is None else now
        if body.duration_s <= 0:
            had = self.override is not None
            self.override = None
            self._wake.set()
            return CommandOutcome("ok", "done", "override cancelled" if had
                                  else "no override was active")
        if body.duration_s > self.cfg.override_max_s:
            return CommandOutcome("rejected", "bad_value",
                                  f"duration_s above override_max_s ({self.cfg.override_max_s:g})")
        level = self.policy.clamp(body.level)
        self.override = Override(level, now + float(body.duration_s))
        self._wake.set()
        note = "" if level == body.level else f" (asked {body.level}, clamped)"
        return CommandOutcome("ok", "done",
                              f"lamp at {level} %{note} for {float(body.duration_s):g} s")

    def apply_schedule(self, body: DimmingSchedule) -> CommandOutcome:
        cur = self.policy.schedule
        assert cur is not None
        night = cur.night_level if body.night_level is None else body.night_level
        periods = tuple(SchedulePeriod(start=p.start, end=p.end, level=p.level)
                        for p in body.periods)
        self.policy.set_schedule(Schedule(night, periods))
        self._wake.set()
        return CommandOutcome("ok", "done", f"night level {night} %, {len(periods)} period(s)")

    # ---- regime for the estimator ----------------------------------------------------------

    def regime_key(self, now: float) -> str | None:
        """Lighting regime of the next frame; None while the lamp is changing."""
        d = self.decision
        regime = d.regime if d is not None else "unknown"
        if regime in ("day", "dark_day"):
            return "day"
        if regime == "twilight":
            return "twilight"
        if regime == "unknown":
            return "any"
        if now - self._lamp_changed_at < SETTLE_S:
            return None
        lamp = self.lamp
        if lamp is not None and lamp.get("level") != lamp.get("target"):
            return None
        level = lamp.get("level") if lamp is not None else self._sent
        try:
            lv = int(str(level))
        except ValueError:
            return None
        b = self.vcfg.lamp_bucket_pct
        return f"night@{int(round(lv / b) * b)}"

    # ---- tasks -----------------------------------------------------------------------

    async def run_visibility(self) -> None:
        while True:
            await self._frame_ready.wait()
            self._frame_ready.clear()
            while self._frames:
                job = self._frames.popleft()
                await self._analyse(job)

    async def _analyse(self, job: _Job) -> None:
        now = self._clock()
        regime = self.regime_key(now)
        if regime is None:
            # Lamp fading: the picture is between two references. Try the next frame.
            self._next_frame_at = min(self._next_frame_at, now + 1.0)
            return
        boxes = None
        if self._boxes is not None and now - self._boxes[0] <= 2 * self.vcfg.interval_s:
            boxes = self._boxes[1]
        img = job.frame.image
        det = self._detector

        def work() -> Reading:
            b = boxes
            if b is None and det is not None:
                b = det(img)
            return self.estimator.observe(img, now, regime, b)

        t0 = time.perf_counter()
        rd = await asyncio.to_thread(work)
        self.last_analysis_ms = (time.perf_counter() - t0) * 1000
        self.analyses += 1
        self._publish(rd)

    def current_reading(self, now: float) -> Reading | None:
        """The sensor's reading while fresh, else the camera's (None: no source)."""
        s = self._sensor
        if s is not None and now - s[0] <= self.vcfg.sensor_max_age_s and s[1] is not None:
            mor = float(s[1])
            return Reading(s[0], mor if mor <= self.vcfg.mor_max_m else None, band_of(mor),
                           1.0, "sensor", source="sensor", beta=2.996 / max(mor, 1e-3))
        rd = self.reading
        if rd is not None and now - rd.t > self.vcfg.stale_s:
            return Reading(now, None, UNKNOWN, 0.0, rd.regime, detail="no recent analysis")
        return rd

    def light(self, now: float) -> tuple[str | None, float | None, float | None]:
        """What the detector wants to know (read only): the dimming policy's lighting regime
        (None before its first decision), and the current reading's MOR and confidence."""
        d = self.decision
        rd = self.current_reading(now)
        return (None if d is None else d.regime, None if rd is None else rd.mor_m,
                None if rd is None else rd.confidence)

    def _publish(self, rd: Reading) -> None:
        old = self.current_reading(rd.t)
        self.reading = rd
        new = self.current_reading(rd.t)
        assert new is not None
        if old is None or old.band != new.band:
            self._on_event("visibility_changed", {
                "from": None if old is None else old.band, "to": new.band,
                "mor_m": None if new.mor_m is None else round(new.mor_m, 1),
                "confidence": round(new.confidence, 3), "source": new.source})
            self._wake.set()

    async def run_dimming(self) -> None:
        while True:
            await self.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.cfg.interval_s)
            self._wake.clear()

    def inputs(self, now: float) -> Inputs:
        vis: Visibility | None = None
        if self.vcfg.enabled or self._sensor is not None:
            rd = self.current_reading(now)
            vis = (Visibility(UNKNOWN, 0.0) if rd is None
                   else Visibility(rd.band, rd.confidence))
        lux = self._lux() if self._lux is not None else None
        presence = bool(self._presence()) if self._presence is not None else False
        faults = frozenset() if lux is not None else frozenset({"lux_sensor"})
        if self.override is not None and now >= self.override.until:
            self.override = None
        return Inputs(now, lux, 0.0, vis, presence, self.override, faults)

    async def tick(self) -> Decision | None:
        """One policy run: decide, and send when the level changed (or a resync is due)."""
        now = self._clock()
        inp = self.inputs(now)
        self.last_run = now
        if (inp.lux is None and self.policy.elevation(now) is None
                and now - self._started < STARTUP_GRACE_S):
            # Just started without a sun position: the board's first lux reading
            # is on its way. Deciding now (design level, for want of light
            # information) would flash the lamp on by day.
            return self.decision
        d = self.policy.step(inp)
        self.decision = d
        due = (self._resync or d.level != self._sent
               or now - self._sent_at >= self.cfg.resend_s)
        if due:
            # In fail-safe the link is down and this fails; the resync stays due.
            fade = d.fade_ms if d.level != self._sent else 0
            if self._resync:
                # A board that restarted, left fail-safe or lost a command holds
                # some other level: move to ours with a fade, not a jump.
                fade = max(fade, self.cfg.rise_fade_ms)
            ok = await self._set_lamp(d.level, fade)
            if ok:
                self.commands_sent += 1
                self._sent = d.level
                self._sent_at = now
                self._resync = False
                self._lamp_changed_at = now
            else:
                self.commands_failed += 1
                self._resync = True
        return d

    # ---- reports ----------------------------------------------------------------------

    @property
    def healthy_visibility(self) -> bool:
        rd = self.reading
        return rd is not None and self._clock() - rd.t <= self.vcfg.stale_s

    @property
    def healthy_dimming(self) -> bool:
        return self.last_run is not None and (
            self._clock() - self.last_run <= 3 * self.cfg.interval_s + 1)

    def telemetry(self) -> dict[str, Any]:
        now = self._clock()
        d = self.decision
        sch = self.policy.schedule
        assert sch is not None
        ov = self.override if self.override is not None and now < self.override.until else None
        rd = self.current_reading(now)
        est = self.estimator
        refs = {k: ("ready" if r.ready else f"learning {len(r.frames)}/"
                    f"{self.vcfg.reference_frames}") for k, r in est.refs.items()}
        return {
            "dimming": {
                "enabled": self.cfg.enabled,
                "level": None if d is None else d.level,
                "target": None if d is None else d.target,
                "reason": None if d is None else d.reason,
                "regime": None if d is None else d.regime,
                "falling": None if d is None else d.falling,
                "sun_elevation": None if d is None or d.sun_elevation is None
                else round(d.sun_elevation, 2),
                "override": None if ov is None else {
                    "level": ov.level, "remaining_s": round(ov.until - now, 1)},
                "night_level": sch.night_level,
                "schedule": [{"start": p.start, "end": p.end, "level": p.level}
                             for p in sch.periods],
                "sent_level": self._sent,
                "commands_sent": self.commands_sent,
                "commands_failed": self.commands_failed,
                "failsafe": self.failsafe,
                "faults": sorted(self.faults),
            },
            "visibility": {
                "enabled": self.vcfg.enabled,
                "mor_m": None if rd is None or rd.mor_m is None else round(rd.mor_m, 1),
                "band": UNKNOWN if rd is None else rd.band,
                "confidence": 0.0 if rd is None else round(rd.confidence, 3),
                "source": None if rd is None else rd.source,
                "regime": None if rd is None else rd.regime,
                "detail": "" if rd is None else rd.detail,
                "age_s": None if rd is None else round(max(0.0, now - rd.t), 1),
                "analyses": self.analyses,
                "analysis_ms": round(self.last_analysis_ms, 2),
                "frames_dropped": self.frames_dropped,
                "references": refs,
            },
        }


def band_distances_for(cal: CalibrationConfig, bands: int
                       ) -> Callable[[int, int], list[float] | None] | None:
    """Camera distance (m) per band of rows of a frame of (width, height) from the
    calibration, for the detector's fog model; None without a complete calibration."""
    if not cal.complete:
        return None

    def distances(width: int, height: int) -> list[float] | None:
        aw = min(256, width)
        geo = Geometry.build(cal, (width, height), (aw, max(8, round(height * aw / width))))
        if not geo.valid.any():
            return None
        return [float(v) for v in band_distances(geo.d, geo.valid, bands)]

    return distances


def _ms_in(detail: str, word: str) -> int | None:
    m = re.search(word + r" (\d+) ms", detail)
    return int(m.group(1)) if m else None


__all__ = ["BANDS", "DimmingService", "band_distances_for"]
