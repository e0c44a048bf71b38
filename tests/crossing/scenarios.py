"""Reference red-light scenarios over the PETS09-S2L1 clip (test data, not product code).

Each scenario is a set of road zones (image polygons) and one fixed-time plan. The
expected violations come from ground truth alone, through reference_violations.py;
nothing here imports the product.

- `road`: the middle of the road and the wider road band further right, with people
  inside at red onset (t = 5, 30, 55 s) and crossings during green.
- `crosswalks`: two crosswalk strips across the road, committed before any tuning for
  issue 12. A shorter cycle (12 s red, 8 s green) puts many entries close to red
  onset: four land within 0.5 s of the 2 s grace boundary (5.4, 25.3, 45.5, 65.3 s),
  so the entry time must be right, not the moment the tracker confirmed it. Pairs and
  a trio enter side by side (68.0/68.2/68.3 s east, 69.7/69.7 s west), where one
  person must give one violation and two people two.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Polygon = list[tuple[float, float]]


@dataclass(frozen=True)
class Scenario:
    name: str
    zones: dict[str, Polygon]
    red_s: float
    green_s: float
    offset_s: float
    grace_s: float = 2.0
    plan: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "plan", {"red_s": self.red_s, "green_s": self.green_s,
                                          "offset_s": self.offset_s})


SCENARIOS = {
    "road": Scenario(
        "road",
        {"mid-road": [(300, 190), (560, 175), (640, 300), (600, 420), (420, 330), (300, 290)],
         "road-band": [(250, 195), (500, 180), (700, 170), (768, 300), (768, 420),
                       (650, 420), (400, 330), (250, 290)]},
        red_s=15.0, green_s=10.0, offset_s=5.0),
    "crosswalks": Scenario(
        "crosswalks",
        {"east-crosswalk": [(400, 175), (520, 170), (560, 330), (420, 335)],
         "west-crosswalk": [(180, 160), (320, 150), (330, 300), (190, 310)]},
        red_s=12.0, green_s=8.0, offset_s=3.0),
}
