"""The live adapter: the dimming task's sends and resyncs, link events into
`lamp_failsafe` / `lamp_fault`, commands, telemetry, and the visibility task on
the bundled sample clip (no shared data needed)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest

from edge_controller.visibility.commands import DimmingSchedule, LampOverride, Period
from edge_controller.visibility.config import CalibrationConfig, DimmingConfig, VisibilityConfig
from edge_controller.visibility.service import DimmingService
from tests.visibility.conftest import (
    PETS_HEIGHT_M,
    PETS_ROLL_DEG,
    PETS_TILT_DEG,
    PETS_VFOV_DEG,
    SAMPLE,
)


@dataclass
class Pole:
    latitude: float | None = None
    longitude: float | None = None
    timezone: str = "UTC"


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Rig:
    def __init__(self, vis: VisibilityConfig | None = None, dim: DimmingConfig | None = None,
                 lux: float | None = 1.0) -> None:
        self.sent: list[tuple[int, int]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.ok = True
        self.lux = lux
        self.clock = Clock()
        self.people = False
        self.svc = DimmingService(
            vis or VisibilityConfig(), dim or DimmingConfig(enabled=True, fall_hold_s=0,
                                                            fall_time_s=0),
            Pole(), self.set_lamp, lambda n, d: self.events.append((n, d)),
            lux=lambda: self.lux, presence=lambda: self.people, clock=self.clock)

    async def set_lamp(self, level: int, fade_ms: int) -> bool:
        if self.ok:
            self.sent.append((level, fade_ms))
        return self.ok

    def named(self, name: str) -> list[dict[str, Any]]:
        return [d for n, d in self.events if n == name]


def frame(name: str, **fields: object) -> SimpleNamespace:
    return SimpleNamespace(kind="frame", frame=SimpleNamespace(name=name), fields=fields)


def calibration() -> CalibrationConfig:
    return CalibrationConfig(mounting_height_m=PETS_HEIGHT_M, tilt_deg=PETS_TILT_DEG,
                             vfov_deg=PETS_VFOV_DEG, roll_deg=PETS_ROLL_DEG)


async def test_sends_on_change_only_and_resends_after_a_while() -> None:
    r = Rig()
    await r.svc.tick()  # night by lux (no sun position), visibility source: none
    assert r.sent == [(80, 2000)]
    await r.svc.tick()
    assert r.sent == [(80, 2000)]
    r.clock.t += 301
    await r.svc.tick()
    assert r.sent[-1] == (80, 0)  # resend_s: same level, no fade
    r.lux = 500.0
    r.clock.t += 5
    await r.svc.tick()
    assert r.sent[-1][0] == 0  # day (fall rules off in this rig)


async def test_failed_send_is_retried_and_link_up_resyncs() -> None:
    r = Rig()
    r.ok = False
    await r.svc.tick()
    assert r.svc.commands_failed == 1
    r.ok = True
    await r.svc.tick()
    assert r.sent == [(80, 2000)]
    r.svc.on_link_event(SimpleNamespace(kind="hello"))  # the board rebooted
    await r.svc.tick()
    assert r.sent[-1] == (80, 2000)  # it holds some other level: fade to ours


async def test_no_light_information_waits_briefly_at_start() -> None:
    r = Rig(lux=None)
    await r.svc.tick()
    assert r.sent == []  # the first lux reading is on its way
    r.clock.t += 11
    await r.svc.tick()
    assert r.sent == [(100, 2000)] and r.svc.decision
    assert r.svc.decision.reason == "no_light_info"


async def test_failsafe_events_and_resync_when_the_link_returns() -> None:
    r = Rig()
    await r.svc.tick()
    r.svc.on_link_event(frame("fault_report", code=7, active=1, detail="link silent 5000 ms"))
    r.svc.on_link_event(frame("fault_report", code=7, active=1, detail="again"))
    assert r.named("lamp_failsafe") == [{"active": True, "detail": "link silent 5000 ms"}]
    r.clock.t += 10
    r.svc.on_link_event(frame("fault_report", code=7, active=0,
                              detail="link back after 6400 ms in fail-safe, lamp 100 %"))
    ev = r.named("lamp_failsafe")[-1]
    assert ev["active"] is False and ev["duration_s"] == 6.4
    n = len(r.sent)
    await r.svc.tick()
    assert len(r.sent) == n + 1  # the board holds the fail-safe level: set ours again


async def test_lamp_fault_events() -> None:
    r = Rig()
    r.svc.on_link_event(frame("fault_report", code=8, active=1, detail="lamp 80 %, 0 W"))
    r.svc.on_link_event(frame("fault_report", code=8, active=1, detail="lamp 80 %, 0 W"))
    r.svc.on_link_event(frame("fault_report", code=10, active=1, detail="lamp 80 %, 48 W"))
    r.svc.on_link_event(frame("fault_report", code=8, active=0, detail="lamp 80 %, 48 W"))
    r.svc.on_link_event(frame("fault_report", code=4, active=1, detail="mains"))  # not a lamp
    assert [(e["fault"], e["active"]) for e in r.named("lamp_fault")] == [
        ("lamp_failure", True), ("day_burning", True), ("lamp_failure", False)]
    assert r.svc.telemetry()["dimming"]["faults"] == ["day_burning"]


async def test_override_and_schedule_commands() -> None:
    r = Rig(dim=DimmingConfig(enabled=True, floor_level=30, override_max_s=3600))
    out = r.svc.apply_override(LampOverride(type="lamp.override", level=10, duration_s=600))
    assert (out.status, out.reason) == ("ok", "done") and "clamped" in out.detail
    await r.svc.tick()
    assert r.sent[-1] == (30, 2000) and r.svc.decision and r.svc.decision.reason == "override"
    tel = r.svc.telemetry()["dimming"]
    assert tel["override"] == {"level": 30, "remaining_s": 600.0}
    out = r.svc.apply_override(LampOverride(type="lamp.override", level=50, duration_s=7200))
    assert (out.status, out.reason) == ("rejected", "bad_value")
    out = r.svc.apply_override(LampOverride(type="lamp.override", level=0, duration_s=0))
    assert out.status == "ok" and "cancelled" in out.detail
    out = r.svc.apply_schedule(DimmingSchedule(
        type="dimming.schedule", night_level=60,
        periods=[Period(start="00:00", end="23:59", level=50)]))
    assert out.status == "ok"
    r.clock.t += 5
    await r.svc.tick()
    assert r.svc.decision and r.svc.decision.reason == "night_schedule"
    assert r.svc.telemetry()["dimming"]["schedule"] == [
        {"start": "00:00", "end": "23:59", "level": 50}]
    with pytest.raises(ValueError):
        Period(start="01:00", end="01:00", level=10)


async def test_override_expires() -> None:
    r = Rig()
    r.svc.apply_override(LampOverride(type="lamp.override", level=100, duration_s=60))
    await r.svc.tick()
    r.clock.t += 61
    await r.svc.tick()
    assert r.sent[-1] == (80, 1000) and r.svc.override is None


async def test_sensor_takes_precedence_and_fog_raises_the_lamp() -> None:
    r = Rig(vis=VisibilityConfig(enabled=True, calibration=calibration()))
    r.svc.push_sensor(150.0)
    await r.svc.tick()
    assert r.sent[-1][0] == 100 and r.svc.decision and r.svc.decision.reason == "low_visibility"
    tel = r.svc.telemetry()["visibility"]
    assert (tel["band"], tel["source"], tel["mor_m"]) == ("50-200", "sensor", 150.0)
    r.clock.t += 200  # the sensor went quiet: the camera has nothing either
    assert r.svc.telemetry()["visibility"]["band"] == "unknown"


def sample_frames(n: int, step: int = 1) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(SAMPLE))
    out = []
    i = 0
    while len(out) < n:
        ok, img = cap.read()
        assert ok
        if i % step == 0:
            out.append(img)
        i += 1
    cap.release()
    return out


async def test_visibility_task_on_the_sample_clip() -> None:
    vis = VisibilityConfig(enabled=True, calibration=calibration(), interval_s=5.0,
                           reference_frames=3, reference_gap_s=0.0)
    r = Rig(vis=vis, lux=500.0)  # day
    await r.svc.tick()
    task = asyncio.create_task(r.svc.run_visibility())
    try:
        for k, img in enumerate(sample_frames(24, step=5)):
            r.svc.submit(SimpleNamespace(index=k, t=k * 0.5, image=img))
            r.svc.submit(SimpleNamespace(index=k, t=k * 0.5, image=img))  # dropped: too soon
            for _ in range(200):
                await asyncio.sleep(0.01)
                if r.svc.analyses > k:
                    break
            r.clock.t += 5.0
    finally:
        task.cancel()
    assert r.svc.analyses == 24
    tel = r.svc.telemetry()["visibility"]
    assert tel["band"] == ">=1000" and tel["references"] == {"day": "ready"}, tel
    assert tel["analysis_ms"] > 0
    changes = r.named("visibility_changed")
    assert changes[0]["to"] == "unknown" and changes[-1]["to"] == ">=1000"
    # Frames offered within interval_s of the last one are dropped before any work.
    assert r.svc.frames_dropped == 0


async def test_night_regime_waits_for_the_lamp_to_settle() -> None:
    r = Rig(vis=VisibilityConfig(enabled=True, calibration=calibration()))
    await r.svc.tick()  # night
    assert r.svc.healthy_dimming
    assert r.svc.regime_key(r.clock.t) is None  # just sent: settling
    r.clock.t += 10
    r.svc.on_link_event(frame("lamp_state", level=40, target=80, duty=1, on=1, failsafe=0))
    r.clock.t += 10
    assert r.svc.regime_key(r.clock.t) is None  # still fading
    r.svc.on_link_event(frame("lamp_state", level=80, target=80, duty=1, on=1, failsafe=0))
    r.clock.t += 10
    assert r.svc.regime_key(r.clock.t) == "night@80"
    assert not r.svc.healthy_dimming  # the policy has not run for 30 s


def test_telemetry_before_anything_ran() -> None:
    r = Rig()
    tel = r.svc.telemetry()
    assert tel["dimming"]["level"] is None and tel["visibility"]["band"] == "unknown"
    assert not r.svc.healthy_visibility
