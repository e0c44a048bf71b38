"""Detections in, tracks and violations out: the crossing pipeline shared by the live
controller and `polectl replay` (sans-I/O: the caller supplies frames and the clock)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_controller.crossing.config import CrossingConfig, SignalConfig, ZoneConfig
from edge_controller.crossing.rules import Crossing, CrossingRule, RuleParams, Violation
from edge_controller.crossing.signal import (
    UNKNOWN,
    CameraSignal,
    FixedTimePlan,
    PushedSignal,
    SignalState,
)
from edge_controller.crossing.tracker import Track, Tracker, TrackerParams
from edge_controller.crossing.zones import Zone

SignalSource = FixedTimePlan | CameraSignal | PushedSignal


def zones_from_config(zones: list[ZoneConfig]) -> list[Zone]:
    return [Zone(z.name, z.kind, tuple((float(x), float(y)) for x, y in z.polygon))
            for z in zones]


def signal_from_config(cfg: SignalConfig, timezone: str) -> SignalSource | None:
    if cfg.source == "plan" and cfg.plan is not None:
        return FixedTimePlan(cfg.plan.red_s, cfg.plan.green_s, cfg.plan.offset_s, timezone)
    if cfg.source == "camera" and cfg.camera is not None:
        return CameraSignal(cfg.camera.roi, cfg.camera.confirm_frames)
    if cfg.source in ("mqtt", "din"):
        return PushedSignal(cfg.source)
    return None


@dataclass
class Step:
    tracks: list[Track]
    violations: list[Violation]
    crossings: list[Crossing]
    signal: SignalState


class CrossingEngine:
    def __init__(self, zones: list[Zone], crossing: CrossingConfig, signal_cfg: SignalConfig,
                 timezone: str = "UTC") -> None:
        self.zones = zones
        self.signal = signal_from_config(signal_cfg, timezone)
        self.tracker = Tracker(TrackerParams(max_lost_s=crossing.track_max_lost_s))
        self.rule = CrossingRule(zones, RuleParams(
            grace_s=crossing.grace_s, max_signal_age_s=signal_cfg.max_age_s,
            min_track_hits=crossing.min_track_hits, hysteresis_px=crossing.hysteresis_px))
        self.last_signal = UNKNOWN

    def signal_state(self, t: float) -> SignalState:
        return UNKNOWN if self.signal is None else self.signal.state(t)

    def step(self, frame: int, t: float, detections: np.ndarray[Any, np.dtype[Any]],
             image: np.ndarray[Any, np.dtype[np.uint8]] | None = None) -> Step:
        """`t` is the clock the signal plan runs on: epoch seconds live, start + video time
        in replay."""
        if isinstance(self.signal, CameraSignal) and image is not None:
            self.signal.observe(image, t)
        tracks = self.tracker.update(t, detections, image)
        known = {tr.id for tr in self.tracker.tracks(include_lost=True)}
        sig = self.signal_state(t)
        self.last_signal = sig
        violations, crossings = self.rule.step(t, frame, tracks, sig, known)
        return Step(tracks, violations, crossings, sig)
