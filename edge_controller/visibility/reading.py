"""What the estimator reports and keeps: visibility bands, one frame's fit, the reading,
and the clear-weather reference of a lighting regime."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge_controller.visibility.imaging import F32

MOR_K = 2.996  # -ln(0.05): MOR is where contrast falls to 5 % (WMO)
BETA_1000 = MOR_K / 1000.0
BANDS = (">=1000", "200-1000", "50-200", "<50")
UNKNOWN = "unknown"
# Lower MOR edge of each band, in BANDS order.
BAND_LO = (1000.0, 200.0, 50.0, 0.0)


def band_of(mor_m: float) -> str:
    for name, lo in zip(BANDS, BAND_LO, strict=True):
        if mor_m >= lo:
            return name
    return BANDS[-1]


def band_index(band: str) -> int:
    return BANDS.index(band)



@dataclass(frozen=True)
class Fit:
    """One frame against its reference."""

    beta: float  # 1/m; may be negative (clearer than the reference)
    sigma: float  # standard error of beta
    gains: tuple[float, float, float]
    used: int  # patches in the fit
    textured: int  # patches with enough reference texture to be measured
    lost: int  # textured patches whose contrast is gone (below the noise)
    airlight: float  # fitted airlight relative to the scene's brightness
    span_m: tuple[float, float]  # 10th-90th percentile of the light path of used patches
    brightness: float  # frame mean / reference mean
    unlike: float = 0.0  # share of strongly textured patches that do not match the reference


@dataclass(frozen=True)
class Reading:
    t: float
    mor_m: float | None
    band: str
    confidence: float
    regime: str
    source: str = "camera"
    beta: float | None = None
    detail: str = ""
    patches: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 3),
            "mor_m": None if self.mor_m is None else round(self.mor_m, 1),
            "band": self.band,
            "confidence": round(self.confidence, 3),
            "regime": self.regime,
            "source": self.source,
            "detail": self.detail,
        }


@dataclass
class Reference:
    """Clear-weather reference of one lighting regime (linear, analysis size)."""

    frames: list[F32] = field(default_factory=list)  # while learning; NaN = masked
    last_t: float = -1e18
    image: F32 | None = None
    odd: int = 0  # consecutive analyses that found it clearer or unlike the scene

    @property
    def ready(self) -> bool:
        return self.image is not None

