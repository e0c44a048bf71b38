"""What the controller knows of the light and the air, turned into the detector's inputs.

Sans-I/O: the dimming policy's lighting regime (from the sun's elevation, the
board's lux reading and, through `dark_day`, the lamp switched on by day) and the
visibility reading (MOR and its confidence) go in; the regime and the MOR
`DetectionPipeline.set_conditions` takes come out. The controller calls
`detector_conditions` before each frame it hands the detector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The dimming policy's regimes -> the enhancer's ("day", "twilight", "night").
# "unknown" (no sun position, no lux) gives None: the frame itself decides.
REGIMES = {"day": "day", "dark_day": "twilight", "twilight": "twilight", "night": "night"}
MIN_CONFIDENCE = 0.5  # a MOR less sure than this is not handed to the fog model


@dataclass(frozen=True)
class Conditions:
    regime: str | None  # "day", "twilight", "night"; None: judged from the frame
    mor_m: float | None  # None: unknown, unsure or clear (no fog model)


def detector_conditions(light_regime: str | None, mor_m: float | None,
                        confidence: float | None,
                        min_confidence: float = MIN_CONFIDENCE) -> Conditions:
    """`light_regime`: the dimming policy's regime (day, dark_day, twilight, night,
    unknown; None without a decision yet). `mor_m`, `confidence`: the visibility
    reading (MOR None: above the range it measures, i.e. clear, or unknown)."""
    regime = REGIMES.get(light_regime or "")
    mor = None
    if (mor_m is not None and math.isfinite(mor_m) and mor_m > 0
            and confidence is not None and confidence >= min_confidence):
        mor = float(mor_m)
    return Conditions(regime, mor)
