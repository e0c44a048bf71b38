"""Zones: image polygons, and who stands in them (judged by the ground-contact point).

Presence uses the signed distance to the polygon edge with a hysteresis band,
so a person standing on a zone edge does not flicker in and out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np

ZoneKind = Literal["carriageway", "crosswalk", "waiting"]


@dataclass(frozen=True)
class Zone:
    name: str
    kind: ZoneKind
    polygon: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if len(self.polygon) < 3:
            raise ValueError(f"zone {self.name}: a polygon needs at least 3 points")

    @property
    def contour(self) -> np.ndarray[Any, np.dtype[np.float32]]:
        return np.asarray(self.polygon, dtype=np.float32).reshape(-1, 1, 2)

    def signed_distance(self, x: float, y: float) -> float:
        """> 0 inside, < 0 outside, in pixels."""
        return float(cv2.pointPolygonTest(self.contour, (float(x), float(y)), True))

    @property
    def is_road(self) -> bool:
        return self.kind in ("carriageway", "crosswalk")


@dataclass
class Presence:
    """Per (track, zone) inside/outside with hysteresis."""

    margin_px: float = 6.0
    inside: dict[tuple[int, str], bool] = field(default_factory=dict)

    def update(self, track_id: int, zone: Zone, foot: tuple[float, float]) -> bool:
        d = zone.signed_distance(*foot)
        key = (track_id, zone.name)
        was = self.inside.get(key)
        if was is None:
            if abs(d) < self.margin_px:
                # First seen on the edge: neither side is known yet. Its first clear side
                # is its first sighting, so walking on in from there is not an entry (one
                # pixel of detector jitter must not decide a violation).
                return d >= 0
            now = d >= 0
        elif was:
            now = d > -self.margin_px  # leave only when clearly outside
        else:
            now = d >= self.margin_px  # enter only when clearly inside
        self.inside[key] = now
        return now

    def forget(self, live_ids: set[int]) -> None:
        for key in [k for k in self.inside if k[0] not in live_ids]:
            del self.inside[key]
