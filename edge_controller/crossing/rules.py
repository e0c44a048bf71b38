"""The red-light crossing rule, sans-I/O: tracks, zones and the signal state in, violations out.

A violation is a tracked person whose ground point enters a road zone
(carriageway or crosswalk) from outside while the pedestrian signal is red,
later than `grace_s` after red onset. People already inside at red onset (or
first seen inside) are not violators. One violation per track per crossing: the
track must leave the zone before it can violate there again. A stale or unknown
signal never yields a violation.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from edge_controller.crossing.signal import SignalState
from edge_controller.crossing.tracker import Track
from edge_controller.crossing.zones import Presence, Zone


@dataclass(frozen=True)
class RuleParams:
    grace_s: float = 2.0  # entering this soon after red onset is tolerated
    max_signal_age_s: float = 2.0  # an older signal reading is stale
    min_track_hits: int = 3  # a track this young is not trusted yet
    hysteresis_px: float = 6.0


@dataclass(frozen=True)
class Violation:
    t: float
    frame: int
    zone: str
    track_id: int
    direction: str
    confidence: float
    signal: str
    signal_source: str
    red_for_s: float

    def as_dict(self) -> dict[str, Any]:
        return {"t": round(self.t, 3), "frame": self.frame, "zone": self.zone,
                "track_id": self.track_id, "direction": self.direction,
                "confidence": round(self.confidence, 3), "signal": self.signal,
                "signal_source": self.signal_source, "red_for_s": round(self.red_for_s, 3)}


@dataclass(frozen=True)
class Crossing:
    """Any entry into a road zone (for counters), violation or not."""

    t: float
    zone: str
    track_id: int


def direction_of(velocity: tuple[float, float]) -> str:
    vx, vy = velocity
    if abs(vx) >= abs(vy):
        return "left_to_right" if vx >= 0 else "right_to_left"
    return "towards_camera" if vy >= 0 else "away_from_camera"


@dataclass
class ZoneCounters:
    crossings: int = 0
    violations: int = 0
    recent_crossings: deque[float] = field(default_factory=deque)
    recent_violations: deque[float] = field(default_factory=deque)

    def as_dict(self, now: float) -> dict[str, int]:
        for q in (self.recent_crossings, self.recent_violations):
            while q and now - q[0] > 3600:
                q.popleft()
        return {"crossings": self.crossings, "violations": self.violations,
                "crossings_last_hour": len(self.recent_crossings),
                "violations_last_hour": len(self.recent_violations)}


class CrossingRule:
    def __init__(self, zones: list[Zone], params: RuleParams | None = None) -> None:
        self.p = params or RuleParams()
        self.zones = [z for z in zones if z.is_road]
        self.presence = Presence(self.p.hysteresis_px)
        self.counters = {z.name: ZoneCounters() for z in self.zones}
        self._violated: set[tuple[int, str]] = set()  # until the track leaves that zone

    def step(self, t: float, frame: int, tracks: list[Track], signal: SignalState,
             known_ids: set[int] | None = None) -> tuple[list[Violation], list[Crossing]]:
        """`t` is the signal's clock (epoch seconds live, video time in replay).

        `tracks` are the tracks seen in this frame; `known_ids` all the tracker still
        holds (including briefly lost ones), whose zone state must survive an
        occlusion so a re-appearance is not mistaken for a first sighting.
        """
        violations: list[Violation] = []
        crossings: list[Crossing] = []
        usable = signal.usable(t, self.p.max_signal_age_s)
        red_for = (t - signal.since) if (signal.since is not None) else -1.0
        for tr in tracks:
            for z in self.zones:
                key = (tr.id, z.name)
                was = self.presence.inside.get(key)
                now_in = self.presence.update(tr.id, z, tr.foot)
                if not now_in:
                    self._violated.discard(key)
                    continue
                if was is not False:
                    continue  # already inside, or first seen inside: not an entry
                crossings.append(Crossing(t, z.name, tr.id))
                c = self.counters[z.name]
                c.crossings += 1
                c.recent_crossings.append(t)
                if (usable and signal.colour == "red" and red_for >= self.p.grace_s
                        and tr.hits >= self.p.min_track_hits and key not in self._violated):
                    self._violated.add(key)
                    c.violations += 1
                    c.recent_violations.append(t)
                    violations.append(Violation(
                        t, frame, z.name, tr.id, direction_of(tr.velocity), tr.score,
                        signal.colour, signal.source, red_for))
        live = {tr.id for tr in tracks} | (known_ids or set())
        self.presence.forget(live)
        self._violated &= {k for k in self._violated if k[0] in live}
        return violations, crossings

    def counters_dict(self, now: float) -> dict[str, dict[str, int]]:
        return {name: c.as_dict(now) for name, c in self.counters.items()}
