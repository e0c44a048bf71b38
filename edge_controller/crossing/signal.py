"""Pedestrian signal state: where it comes from, and how fresh it is.

Three sources, one interface (`state(t_utc) -> SignalState`):
- a fixed-time plan (cycle, red and green durations, offset from local midnight,
  in the pole's time zone so DST shifts are honoured),
- a camera ROI on the signal head (colour classification with hysteresis),
- an external feed (an MQTT topic or a firmware digital input) that pushes
  states with their time.
A stale or unknown state never produces violations (the rule checks `usable`).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import cv2
import numpy as np

Colour = Literal["red", "green", "unknown"]


@dataclass(frozen=True)
class SignalState:
    colour: Colour
    source: str  # "plan" | "camera" | "mqtt" | "din" | "none"
    since: float | None  # epoch seconds of the last change (onset), None if unknown
    updated: float | None  # epoch seconds of the last observation

    def age(self, now: float) -> float | None:
        return None if self.updated is None else now - self.updated

    def usable(self, now: float, max_age_s: float) -> bool:
        age = self.age(now)
        return self.colour != "unknown" and age is not None and age <= max_age_s

    def as_dict(self, now: float) -> dict[str, Any]:
        age = self.age(now)
        return {"state": self.colour, "source": self.source,
                "age_s": None if age is None else round(age, 3),
                "since_s": None if self.since is None else round(now - self.since, 3)}


UNKNOWN = SignalState("unknown", "none", None, None)


@dataclass(frozen=True)
class FixedTimePlan:
    """Red for `red_s`, then green for `green_s`, repeating; the cycle starts `offset_s`
    after local midnight every day (so a DST change keeps the plan on local time)."""

    red_s: float
    green_s: float
    offset_s: float = 0.0
    timezone: str = "UTC"

    @property
    def cycle_s(self) -> float:
        return self.red_s + self.green_s

    def state(self, t: float) -> SignalState:
        tz = ZoneInfo(self.timezone)
        local = datetime.fromtimestamp(t, tz)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        into_day = t - midnight.timestamp() - self.offset_s
        phase = into_day % self.cycle_s
        cycle_start = t - phase
        if phase < self.red_s:
            return SignalState("red", "plan", cycle_start, t)
        return SignalState("green", "plan", cycle_start + self.red_s, t)


class PushedSignal:
    """External feed (MQTT topic, firmware digital input): states arrive with their time."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._s = SignalState("unknown", source, None, None)

    def push(self, colour: Colour, t: float) -> None:
        since = self._s.since if colour == self._s.colour else t
        self._s = SignalState(colour, self.source, since, t)

    def state(self, t: float) -> SignalState:
        return self._s


def parse_feed(payload: bytes) -> Colour | None:
    """An external feed message: 'red' / 'green', or {"state": "red"}; None if neither."""
    text = payload.decode(errors="replace").strip()
    with contextlib.suppress(ValueError):
        doc = json.loads(text)
        if isinstance(doc, dict):
            text = str(doc.get("state", ""))
        elif isinstance(doc, str):
            text = doc
    return "red" if text == "red" else "green" if text == "green" else None


def din_colour(levels: int, bit: int, red_level: int) -> Colour:
    """The signal from the firmware's digital inputs: `bit` at `red_level` means red."""
    return "red" if (levels >> bit) & 1 == red_level else "green"


class CameraSignal:
    """Colour of a signal head from a small ROI: the lit lamp is the brightest, most
    saturated blob; red vs green by hue. A new colour must persist `confirm` frames."""

    def __init__(self, roi: tuple[int, int, int, int], confirm: int = 3,
                 min_value: int = 120, min_saturation: int = 80) -> None:
        self.roi = roi  # x, y, w, h
        self.confirm = confirm
        self.min_value = min_value
        self.min_saturation = min_saturation
        self._s = SignalState("unknown", "camera", None, None)
        self._candidate: Colour = "unknown"
        self._count = 0

    def classify(self, image: np.ndarray[Any, np.dtype[np.uint8]]) -> Colour:
        x, y, w, h = self.roi
        patch = image[y:y + h, x:x + w]
        if patch.size == 0:
            return "unknown"
        hsv = cv2.cvtColor(patch, cv2.COLOR_BGR2HSV)
        lit = (hsv[..., 2] >= self.min_value) & (hsv[..., 1] >= self.min_saturation)
        if lit.sum() < max(4, patch.shape[0] * patch.shape[1] // 100):
            return "unknown"
        hue = hsv[..., 0][lit].astype(np.int32)  # OpenCV hue: 0-179
        red = int(((hue <= 10) | (hue >= 165)).sum())
        green = int(((hue >= 45) & (hue <= 95)).sum())
        if red > 2 * green:
            return "red"
        if green > 2 * red:
            return "green"
        return "unknown"

    def observe(self, image: np.ndarray[Any, np.dtype[np.uint8]], t: float) -> SignalState:
        c = self.classify(image)
        if c == self._s.colour:
            self._candidate, self._count = c, 0
            self._s = SignalState(c, "camera", self._s.since, t)
            return self._s
        self._count = self._count + 1 if c == self._candidate else 1
        self._candidate = c
        if self._count >= self.confirm:
            self._s = SignalState(c, "camera", t, t)
            self._count = 0
        else:
            self._s = SignalState(self._s.colour, "camera", self._s.since, self._s.updated)
        return self._s

    def state(self, t: float) -> SignalState:
        return self._s
