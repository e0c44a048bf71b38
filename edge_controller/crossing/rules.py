"""The red-light crossing rule, sans-I/O: tracks, zones and the signal state in, violations out.

A violation is a tracked person whose ground point enters a road zone
(carriageway or crosswalk) from outside while the pedestrian signal is red,
later than `grace_s` after red onset. People already inside at red onset (or
first seen inside) are not violators. A stale or unknown signal never yields a
violation.

The entry time is when the ground point crossed the zone edge, interpolated from
the track's recent history, not the later moment the hysteresis band confirmed
it: the grace period is judged on that time, and the violation carries both.

One violation per person and crossing. A track that steps back out and in again
within `reentry_s` is still on the same crossing and does not violate again (a
person who really goes back to the kerb and crosses again later is a new
crossing). Neither does a new track that is the same person under another id: one
that starts where a track that already violated in this phase was lost (its
position carried forward at its last speed), or one whose box lies on top of a
violator's box (the detector split a person).

A track's side of a zone only carries over short gaps: a track unseen for longer
than `max_unseen_entry_s` that comes back inside did not visibly enter. Within that
gap a new track first seen inside takes over the side of a track that was lost
just outside where the new one appeared (a track that broke as its person stepped
in), so the entry is still seen, and timed from both tracks' history.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from edge_controller.crossing.signal import SignalState
from edge_controller.crossing.tracker import Track, iou_matrix
from edge_controller.crossing.zones import Presence, Zone


@dataclass(frozen=True)
class RuleParams:
    grace_s: float = 2.0  # entering this soon after red onset is tolerated
    max_signal_age_s: float = 2.0  # an older signal reading is stale
    min_track_hits: int = 3  # a track this young is not trusted yet
    hysteresis_px: float = 6.0
    history_s: float = 3.0  # ground-point history kept per track (entry interpolation)
    entry_depth_px: float = 0.0  # the entry time is when the ground point was this deep in
    min_entry_speed: float = 0.15  # box heights per second: someone standing on the edge,
    # whose ground point only jitters across the band, is not entering
    reentry_s: float = 0.5  # out of the zone at least this long before a new crossing counts
    dedupe_window_s: float = 2.0  # a violator lost this recently may reappear under a new id
    dedupe_radius: float = 0.75  # ... within this many box heights of where it was heading,
    dedupe_growth: float = 0.25  # ... a radius that grows by this many heights per second
    dedupe_iou: float = 0.5  # a new violator overlapping a live one this much is the same
    # (0.3 took two people walking side by side for one)
    stretch_ratio: float = 1.25  # a box this much taller than its median over the second
    # before last does not move its ground point (see `_stretched`)
    max_unseen_entry_s: float = 1.5  # a track unseen longer than this keeps no side: lost
    # outside and found inside, who crossed is not known (the tracker re-identifies after up
    # to 5 s, and a wrong re-identification of someone standing inside made a violation);
    # a new track starting inside where one lost outside this recently was heading takes
    # over its side (the same person, whose track broke as they stepped in)


@dataclass(frozen=True)
class Violation:
    t: float  # when the ground point crossed into the zone (interpolated)
    frame: int
    zone: str
    track_id: int
    direction: str
    confidence: float
    signal: str
    signal_source: str
    red_for_s: float  # at the entry time
    confirmed_t: float = 0.0  # when the hysteresis band confirmed the entry (frame time)

    def as_dict(self) -> dict[str, Any]:
        return {"t": round(self.t, 3), "confirmed_t": round(self.confirmed_t, 3),
                "frame": self.frame, "zone": self.zone,
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


# The last hour's crossings are kept as times. Trimmed on every entry as well as when
# telemetry reads them (which may stop: a failed task), and capped: a crossing a second
# for an hour is 3,600, the cap is ten times that.
HOUR_S = 3600.0
RECENT_MAX = 36_000


def _trim(q: deque[float], now: float) -> None:
    # An entry far in the future is from before the clock stepped back: it is stale too.
    while q and (now - q[0] > HOUR_S or q[0] > now + 60.0):
        q.popleft()


@dataclass
class ZoneCounters:
    crossings: int = 0
    violations: int = 0
    recent_crossings: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_MAX))
    recent_violations: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_MAX))

    def note(self, q: deque[float], t: float) -> None:
        _trim(q, t)
        q.append(t)

    def as_dict(self, now: float) -> dict[str, int]:
        for q in (self.recent_crossings, self.recent_violations):
            _trim(q, now)
        return {"crossings": self.crossings, "violations": self.violations,
                "crossings_last_hour": len(self.recent_crossings),
                "violations_last_hour": len(self.recent_violations)}


@dataclass
class _Seen:
    """What the rule remembers of a track: recent ground points, size and speed."""

    points: deque[tuple[float, float, float]] = field(default_factory=deque)  # t, x, y
    height: float = 0.0
    velocity: tuple[float, float] = (0.0, 0.0)
    heights: deque[tuple[float, float]] = field(default_factory=deque)  # t, box height


@dataclass
class _Violator:
    track_id: int
    zone: str
    phase: float  # red onset of the phase it violated in
    left_at: float | None = None  # when the track was last seen leaving the zone


def entry_time(zone: Zone, points: deque[tuple[float, float, float]], now: float,
               depth: float = 0.0, max_gap_s: float = 0.35) -> float:
    """When the ground point crossed the zone edge: linear interpolation between the last
    sample outside and the next one, walking back through the history. `now` when the
    history holds no sample outside (the track was first seen at the edge)."""
    pts = list(points)
    d_next: float | None = None
    for k in range(len(pts) - 1, -1, -1):
        t, x, y = pts[k]
        d = zone.signed_distance(x, y) - depth
        if d < 0:
            if d_next is None:
                return now
            t1 = pts[k + 1][0]
            if t1 - t > max_gap_s:
                return t1  # unseen in between: the first sighting inside is all we know
            return t + (t1 - t) * (-d) / max(d_next - d, 1e-9)
        d_next = d
    return pts[0][0] if pts else now


class CrossingRule:
    def __init__(self, zones: list[Zone], params: RuleParams | None = None) -> None:
        self.p = params or RuleParams()
        self.zones = [z for z in zones if z.is_road]
        self.presence = Presence(self.p.hysteresis_px)
        self.counters = {z.name: ZoneCounters() for z in self.zones}
        self._seen: dict[int, _Seen] = {}
        # Violators of the current red phases, bounded: one entry per person and zone.
        self._violators: dict[tuple[int, str], _Violator] = {}
        self.duplicates_suppressed = 0
        self._red_onset: float | None = None  # onset of the red phase in progress
        self._last_red: tuple[float, float] | None = None  # (onset, end) of the last red

    def _remember(self, t: float, tracks: list[Track]) -> None:
        for tr in tracks:
            s = self._seen.setdefault(tr.id, _Seen())
            fx, fy = tr.foot
            s.points.append((t, fx, fy))
            while s.points and t - s.points[0][0] > self.p.history_s:
                s.points.popleft()
            s.height = float(tr.box[3] - tr.box[1])
            s.heights.append((t, s.height))
            while s.heights and t - s.heights[0][0] > self.p.history_s:
                s.heights.popleft()
            s.velocity = tr.velocity

    def _stretched(self, tid: int, t: float) -> bool:
        """The box grew suddenly: its ground point moved because the box swallowed a
        passer-by's legs (or lost them), not because its person stepped."""
        hs = [h for ht, h in self._seen[tid].heights if 0.3 < t - ht <= 1.3]
        if len(hs) < 3:
            return False
        ref = sorted(hs)[len(hs) // 2]
        return self._seen[tid].height > self.p.stretch_ratio * ref

    def _miss(self, seen: _Seen, t: float, foot: tuple[float, float], max_gone: float
              ) -> float | None:
        """Squared distance from `foot` to where a track no longer seen was heading (its
        last ground point carried forward at its last speed), when within reach: 0.75
        box heights plus 0.25 a second (`dedupe_radius`, `dedupe_growth`), for at most
        `max_gone` seconds. None otherwise."""
        if not seen.points:
            return None
        last_t, lx, ly = seen.points[-1]
        gone = t - last_t
        if gone <= 0 or gone > max_gone:
            return None
        vx, vy = seen.velocity
        d2 = (foot[0] - lx - vx * gone) ** 2 + (foot[1] - ly - vy * gone) ** 2
        reach = max(seen.height, 1.0) * (self.p.dedupe_radius + self.p.dedupe_growth * gone)
        return d2 if d2 <= reach**2 else None

    def _handover(self, t: float, tr: Track, zone: str, visible: dict[int, Track]
                  ) -> int | None:
        """A track lost just outside `zone` within `max_unseen_entry_s`, heading to where
        the new track `tr` appeared inside: the same person, whose track broke."""
        best: tuple[float, int] | None = None
        for tid, seen in self._seen.items():
            if tid in visible or self.presence.inside.get((tid, zone)) is not False:
                continue
            d2 = self._miss(seen, t, tr.foot, self.p.max_unseen_entry_s)
            if d2 is not None and (best is None or d2 < best[0]):
                best = (d2, tid)
        return None if best is None else best[1]

    def _same_person(self, t: float, tr: Track, zone: str, phase: float,
                     visible: dict[int, Track]) -> bool:
        """Whether `tr` is a person who already violated in this zone and phase under
        another track id."""
        for v in self._violators.values():
            if v.zone != zone or v.phase != phase or v.track_id == tr.id:
                continue
            other = visible.get(v.track_id)
            if other is not None:
                if float(iou_matrix(tr.box[None, :4], other.box[None, :4])[0, 0]) \
                        >= self.p.dedupe_iou:
                    return True
                continue  # a different person, in view at the same time
            seen = self._seen.get(v.track_id)
            if seen is None or not seen.points:
                continue
            mine = self._seen.get(tr.id)
            if mine is not None and {p[0] for p in mine.points} & {p[0] for p in seen.points}:
                continue  # both were in view in the same frame: two people, not a restart
            if self._miss(seen, t, tr.foot, self.p.dedupe_window_s) is not None:
                return True
        return False

# Long: zone presence, entry timing, grace and de-duplication: one pass over the tracks.
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
        red = usable and signal.colour == "red" and signal.since is not None
        if red:
            self._red_onset = signal.since
        elif usable and signal.colour != "red":
            if self._red_onset is not None and signal.since is not None:
                self._last_red = (self._red_onset, signal.since)
            self._red_onset = None
        elif not usable:
            self._red_onset = self._last_red = None  # a gap in the signal: phases unknown
        last_seen = {tr.id: s.points[-1][0] for tr in tracks
                     if (s := self._seen.get(tr.id)) is not None and s.points}
        self._remember(t, tracks)
        visible = {tr.id: tr for tr in tracks}
        for tr in tracks:
            long_gone = tr.id in last_seen and t - last_seen[tr.id] > self.p.max_unseen_entry_s
            for z in self.zones:
                key = (tr.id, z.name)
                if long_gone:
                    self.presence.inside.pop(key, None)  # its side is no longer known
                was = self.presence.inside.get(key)
                if was is False and self._stretched(tr.id, t):
                    continue  # its ground point is not to be trusted in this frame
                now_in = self.presence.update(tr.id, z, tr.foot)
                speed = math.hypot(*tr.velocity)
                if now_in and was is None and (long_gone or tr.id not in last_seen):
                    src = self._handover(t, tr, z.name, visible)
                    if src is not None:
                        was = False
                        self.presence.inside.pop((src, z.name), None)
                        mine = self._seen[tr.id]
                        mine.points = deque(sorted([*self._seen[src].points, *mine.points]))
                        speed = max(speed, math.hypot(*self._seen[src].velocity))
                prior = self._violators.get(key)
                if prior is not None and not now_in and prior.left_at is None:
                    prior.left_at = t
                if not now_in or was is not False:
                    continue  # outside, already inside, or first seen inside: not an entry
                crossings.append(Crossing(t, z.name, tr.id))
                c = self.counters[z.name]
                c.crossings += 1
                c.note(c.recent_crossings, t)
                if not usable or tr.hits < self.p.min_track_hits:
                    continue
                height = max(float(tr.box[3] - tr.box[1]), 1.0)
                if speed < self.p.min_entry_speed * height:
                    continue
                entered = min(entry_time(z, self._seen[tr.id].points, t,
                                         self.p.entry_depth_px), t)
                # The signal is judged at the entry time: someone who stepped in during
                # the last moments of red, confirmed just after green came, still violated.
                if red and signal.since is not None:
                    phase = signal.since
                elif self._last_red is not None \
                        and self._last_red[0] <= entered < self._last_red[1]:
                    phase = self._last_red[0]
                else:
                    continue
                red_for = entered - phase
                if red_for < self.p.grace_s:
                    continue  # entered before red, or inside the grace period
                if prior is not None and prior.phase == phase and (
                        prior.left_at is None or entered - prior.left_at < self.p.reentry_s):
                    continue  # a step back out and in: still the same crossing
                if self._same_person(t, tr, z.name, phase, visible):
                    self.duplicates_suppressed += 1
                    self._violators[key] = _Violator(tr.id, z.name, phase)
                    continue
                self._violators[key] = _Violator(tr.id, z.name, phase)
                c.violations += 1
                c.note(c.recent_violations, t)
                violations.append(Violation(
                    entered, frame, z.name, tr.id, direction_of(tr.velocity), tr.score,
                    "red", signal.source, red_for, confirmed_t=t))
        live = set(visible) | (known_ids or set())
        self.presence.forget(live)
        # A track is remembered for the dedupe window after it ends, and a violator as
        # long as its track is: memory is bounded by the people recently in view.
        for tid in [k for k, s in self._seen.items()
                    if k not in live and (not s.points or t - s.points[-1][0]
                                          > self.p.dedupe_window_s)]:
            del self._seen[tid]
        for k in [k for k in self._violators if k[0] not in self._seen]:
            del self._violators[k]
        return violations, crossings

    def counters_dict(self, now: float) -> dict[str, dict[str, int]]:
        return {name: c.as_dict(now) for name, c in self.counters.items()}
