"""Frames made detectable before the model looks: fog removed, night lifted, greyscale noted.

Sans-I/O: `Enhancer.apply(image)` takes a BGR frame and returns the frame the detector
and the motion gate should see; what it knows of the world comes in through
`set_conditions(regime=..., mor_m=...)` (the controller feeds the dimming task's
regime and the visibility task's MOR) and, optionally, the camera calibration's
distance per image band. No clock, no files.

Fog (Koschmieder, in linear light): a pixel is `I = J t + A (1 - t)` with the
transmission `t = exp(-beta d)`. The fog's veil lifts the darkest things of each
band of rows (shadows, dark clothes, tyres) towards the airlight `A`, so
`1 - dark / A` is a lower bound of `t` that needs no calibration. With a
calibration and a MOR, `t = exp(-2.996 d / MOR)` per band (never below that
bound: a wrong calibration cannot make the correction overshoot what the frame
shows). `J = (I - A (1 - t)) / t`, the transmission floored where fog lets too
little through. Fog and lamp light change mostly with the distance, i.e. with
the row, so everything is estimated per horizontal band and applied as one
lookup table per band (cheap: a few ms per frame).

Night: the lamp's light falls off steeply with distance and the sensor's noise
stays, so each band is exposed on its own (its median brought to a target,
gain capped) after a light blur against noise, in linear light.

The estimates are smoothed over frames: an estimate that flickered from frame
to frame would look like motion everywhere to the motion gate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from edge_controller.detect.boxes import iou_matrix
from edge_controller.detect.config import EnhanceConfig

UInt8Image = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
Mode = Literal["clear", "fog", "night"]
MOR_K = 2.996  # -ln(0.05): MOR is where contrast falls to 5 % (WMO)
ANALYSIS_SCALE = 4  # statistics on a frame this many times smaller


def _lin_table() -> F32:
    x = np.arange(256, dtype=np.float64) / 255.0
    lin = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    return lin.astype(np.float32)


LIN = _lin_table()  # sRGB code -> linear intensity


def to_linear(image: UInt8Image) -> F32:
    return np.asarray(cv2.LUT(image, LIN), np.float32)


def to_srgb(lin: npt.NDArray[np.floating]) -> UInt8Image:
    """Linear intensity -> 8-bit sRGB (the power segment throughout: below 0.3 % linear
    the difference to the exact curve is under one code)."""
    x = np.asarray(np.clip(lin, 0.0, 1.0), np.float32)
    y = cv2.pow(x, 1 / 2.4) * np.float32(1.055 * 255) - np.float32(0.055 * 255)
    return np.asarray(np.clip(y + 0.5, 0, 255), np.uint8)


def band_edges(height: int, bands: int) -> npt.NDArray[np.intp]:
    n = max(1, min(bands, height))
    return np.linspace(0, height, n + 1).round().astype(np.intp)


def is_grey(image: UInt8Image, tol: float = 1.5) -> bool:
    """Three (nearly) equal channels: a day/night camera in IR mode, or a mono sensor."""
    if image.ndim < 3 or image.shape[2] == 1:
        return True
    s = image[::8, ::8].astype(np.int16)
    spread = np.abs(s[..., 0] - s[..., 1]) + np.abs(s[..., 1] - s[..., 2])
    return float(spread.mean()) < tol


def band_distances(depth: npt.NDArray[np.floating], valid: npt.NDArray[np.bool_],
                   bands: int) -> F32:
    """Median camera distance (m) per band of rows of a distance map; inf where a band
    has no ground."""
    edges = band_edges(depth.shape[0], bands)
    out = np.full(len(edges) - 1, np.inf, dtype=np.float32)
    for k in range(len(edges) - 1):
        d = depth[edges[k]:edges[k + 1]][valid[edges[k]:edges[k + 1]]]
        if d.size:
            out[k] = float(np.median(d))
    return out


@dataclass(frozen=True)
class FrameStats:
    """What one frame shows, per band of rows (linear light, analysis scale)."""

    brightness: float  # median linear luminance of the frame
    airlight: float  # brightest level (fog's limit): 99th percentile luminance
    veil: F32  # per band: darkest channel's low percentile / airlight
    level: F32  # per band: median linear luminance
    floor: F32  # per band: low percentile of the luminance (black level at night)
    grey: bool
    noise: float = 0.0  # robust sigma of the sensor noise, grey levels (0-255)


def noise_level(image: UInt8Image) -> float:
    """Robust sigma (grey levels) of the pixel noise: most neighbouring pixels of a scene
    differ by little, so the median horizontal difference is noise (times sqrt 2)."""
    g = (image[::2, :, 1] if image.ndim == 3 else image[::2]).astype(np.int16)
    n = g.shape[1] // 2 * 2
    d = np.abs(g[:, 1:n:2] - g[:, 0:n:2]).ravel()
    if d.size == 0:
        return 0.0
    # The differences are integers 0-255: the median from their histogram is exact and
    # several times cheaper than sorting 100,000 of them every frame.
    cum = np.cumsum(np.bincount(d, minlength=256))
    lo = int(np.searchsorted(cum, (d.size - 1) // 2, side="right"))
    hi = int(np.searchsorted(cum, d.size // 2, side="right"))
    return float(1.4826 * (lo + hi) / 2 / math.sqrt(2))


def sorted_percentile(values: F32, q: float) -> float:
    """np.percentile's default (linear) of an already sorted 1-D array: the per-band
    statistics of every frame sort each band once instead of paying numpy's per-call
    overhead three times a band (a tenth of a replay's time went there)."""
    n = values.size
    if n == 0:
        return float("nan")
    pos = q / 100.0 * (n - 1)
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(values[lo]) + (float(values[hi]) - float(values[lo])) * frac


def frame_stats(image: UInt8Image, bands: int, percentile: float) -> FrameStats:
    h, w = image.shape[:2]
    small = np.asarray(cv2.resize(image, (max(1, w // ANALYSIS_SCALE),
                                          max(1, h // ANALYSIS_SCALE)),
                                  interpolation=cv2.INTER_AREA), np.uint8)
    grey = is_grey(image)
    lin = to_linear(small)
    if lin.ndim == 2:
        lin = lin[..., None]
    if lin.shape[2] == 3:  # per channel: numpy's reductions over an axis of 3 are slow
        c0, c1, c2 = lin[..., 0], lin[..., 1], lin[..., 2]
        dark = np.minimum(np.minimum(c0, c1), c2)
        lum = (c0 + c1 + c2) / np.float32(3)
    else:
        dark = lin.min(axis=2)
        lum = lin.mean(axis=2)
    airlight = max(float(np.percentile(lum, 99)), float(np.percentile(dark, 99.5)), 0.05)
    edges = band_edges(dark.shape[0], bands)
    veil = np.empty(len(edges) - 1, np.float32)
    level = np.empty(len(edges) - 1, np.float32)
    floor = np.empty(len(edges) - 1, np.float32)
    for k in range(len(edges) - 1):
        band_dark = np.sort(dark[edges[k]:edges[k + 1]], axis=None)
        band_lum = np.sort(lum[edges[k]:edges[k + 1]], axis=None)
        veil[k] = sorted_percentile(band_dark, percentile) / airlight
        floor[k] = sorted_percentile(band_lum, percentile)
        level[k] = sorted_percentile(band_lum, 50.0)
    return FrameStats(float(np.median(lum)), airlight, np.clip(veil, 0, 1), level, floor, grey,
                      noise_level(image))


class Enhancer:
    """Per-frame enhancement with smoothed estimates; see the module docstring."""

    def __init__(self, cfg: EnhanceConfig, distances: Sequence[float] | None = None) -> None:
        self.cfg = cfg
        # Per band of the frame: camera distance (m) from the calibration, if any.
        self.distances = (None if distances is None
                          else np.asarray(distances, dtype=np.float32))
        self.regime: str | None = None  # fed: "day", "twilight", "night"
        self.mor_m: float | None = None  # fed: the visibility task's MOR (None: unknown)
        self.mode: Mode = "clear"
        self.grey = False
        self.stats: FrameStats | None = None
        self.transmission: F32 | None = None  # smoothed, per band
        self.airlight: float | None = None
        self.gain: F32 | None = None  # smoothed night gain per band
        self.floor: F32 | None = None  # smoothed night black level per band
        self._bg: F32 | None = None  # night: the temporally denoised frame
        self._fg_bg: F32 | None = None  # night: slow model of the static scene (small)
        self._fg_n = 0
        self.foreground: npt.NDArray[np.bool_] | None = None  # night: small mask
        self.frames = 0
        self.detectability = 1.0  # median fog transmission of the last frame (1: clear)

    def set_conditions(self, regime: str | None = None, mor_m: float | None = None) -> None:
        """What the controller knows: the lighting regime and the MOR (None: unknown)."""
        self.regime = regime
        self.mor_m = mor_m if mor_m is not None and math.isfinite(mor_m) else None

    def set_distances(self, distances: Sequence[float] | None) -> None:
        self.distances = None if distances is None else np.asarray(distances, np.float32)

    # -- decisions ----------------------------------------------------------------------

    def _night(self, st: FrameStats) -> bool:
        fixed = self.cfg.regime
        if fixed != "auto":
            return fixed == "night"
        if self.regime is not None:
            return self.regime == "night"
        # A dark frame, or one the camera's auto-gain made bright but grainy.
        return st.brightness < self.cfg.dark_level or st.noise > self.cfg.night_noise

    def _smooth(self, old: F32 | None, new: F32) -> F32:
        if old is None or old.shape != new.shape:
            return new
        a = np.float32(self.cfg.smoothing)
        return np.asarray(old * (1 - a) + new * a, np.float32)

    def _transmission(self, st: FrameStats) -> F32:
        c = self.cfg
        # The darkest-channel cue needs colour: in a grey (IR) frame the darkest channel
        # is the luminance, which is never near black. There only the fog model counts.
        t = (np.ones_like(st.veil) if st.grey
             else 1.0 - (1.0 - c.haze_keep) * st.veil)
        if (c.use_mor and self.mor_m is not None and self.distances is not None
                and len(self.distances) == len(t)):
            model = np.exp(-MOR_K / self.mor_m * self.distances)
            t = np.maximum(t, model)
        # Before the floor: how much of a person's contrast is left (detectability).
        self.detectability = float(np.median(t))
        return np.asarray(np.clip(t, c.min_transmission, 1.0), np.float32)

    def score_threshold(self, default: float) -> float:
        """The detection threshold for the frame just enhanced."""
        if self.mode == "night":
            return min(default, self.cfg.score_threshold_night,
                       self.cfg.score_threshold_night_fg)
        if self.grey:
            return min(default, self.cfg.score_threshold_grey)
        return default

    def keep(self, boxes: npt.NDArray[np.floating], scores: npt.NDArray[np.floating],
             default: float, night: tuple[float, float] | None = None
             ) -> npt.NDArray[np.bool_]:
        """Which boxes (frame pixels) count. At night, a box below the night threshold counts
        only where it stands out from the background (`score_threshold_night_fg`,
        `night_fg_share`): noise makes up boxes anywhere, people stand out. `night`: the
        (night, night_fg) thresholds of another model (NanoDet's)."""
        c = self.cfg
        hi_t, fg_t = night or (c.score_threshold_night, c.score_threshold_night_fg)
        hi = min(default, hi_t)
        keep = np.ones(len(scores), dtype=bool)
        if self.mode != "night" or fg_t >= hi:
            return keep
        low = np.asarray(scores) < hi
        if low.any():
            keep[low] = self.foreground_share(np.asarray(boxes)[low]) >= c.night_fg_share
        return keep

    def tidy(self, dets: npt.NDArray[np.float32], default: float,
             night: tuple[float, float] | None = None) -> npt.NDArray[np.float32]:
        """At night, a box kept only thanks to the foreground that overlaps a better box at
        all (IoU above `night_low_iou`) is a fragment or a shifted copy of that person,
        not another one: dropped. Other regimes: unchanged. `night` as in `keep`."""
        c = self.cfg
        hi_t, fg_t = night or (c.score_threshold_night, c.score_threshold_night_fg)
        hi = min(default, hi_t)
        if self.mode != "night" or len(dets) < 2 or fg_t >= hi:
            return dets
        order = np.argsort(-dets[:, 4])
        d = dets[order]
        iou = iou_matrix(d, d)
        keep = np.ones(len(d), dtype=bool)
        for i in range(1, len(d)):
            if d[i, 4] < hi and (iou[i, :i][keep[:i]] > c.night_low_iou).any():
                keep[i] = False
        return d[keep]

    # -- per frame ----------------------------------------------------------------------

    def apply(self, image: UInt8Image) -> UInt8Image:
        """The frame the detector should see (the input itself when nothing is to do)."""
        c = self.cfg
        self.frames += 1
        st = frame_stats(image, c.bands, c.haze_percentile)
        self.stats = st
        self.grey = st.grey
        if not c.enabled:
            self.mode = "clear"
            return image
        if self._night(st):
            self.mode = "night"
            # The black level at night is not black: clipped read noise, sky glow, the
            # lamp's scattered light. Left in, the gain turns it into a grey veil.
            floor = (1.0 - c.haze_keep) * st.floor
            gain = np.clip(c.night_target / np.maximum(st.level - floor, 1e-5), 1.0,
                           c.night_max_gain)
            self.gain = self._smooth(self.gain, gain.astype(np.float32))
            self.floor = self._smooth(self.floor, floor.astype(np.float32))
            return self._lift(image, self.gain, self.floor)
        self.gain = None
        t = self._transmission(st)
        self.transmission = self._smooth(self.transmission, t)
        a_old = self.airlight
        self.airlight = st.airlight if a_old is None else (
            a_old * (1 - c.smoothing) + st.airlight * c.smoothing)
        if float(1.0 - self.transmission.min()) < c.fog_min_veil:
            self.mode = "clear"
            return image
        self.mode = "fog"
        return self._dehaze(image, self.transmission, self.airlight)

    def _dehaze(self, image: UInt8Image, t: F32, airlight: float) -> UInt8Image:
        # One 256-entry table per band: J = (I - A (1 - t)) / t in linear light.
        tables = to_srgb((LIN[None, :] - airlight * (1 - t[:, None])) / t[:, None])
        out = np.empty_like(image)
        edges = band_edges(image.shape[0], len(t))
        for k in range(len(t)):
            y0, y1 = int(edges[k]), int(edges[k + 1])
            out[y0:y1] = cv2.LUT(image[y0:y1], tables[k])
        return out

    def _lift(self, image: UInt8Image, gain: F32, floor: F32) -> UInt8Image:
        c = self.cfg
        lin = to_linear(image)
        if lin.ndim == 3 and c.night_grey:
            # At night the colour is mostly noise (each channel has a third of the light),
            # and coloured noise blotches are what the model trips over: look in grey.
            lin = np.asarray(cv2.cvtColor(lin, cv2.COLOR_BGR2GRAY), np.float32)
        self._update_foreground(lin)
        if c.night_denoise > 0:
            lin = np.asarray(cv2.GaussianBlur(lin, (0, 0), c.night_denoise), np.float32)
        if c.night_temporal > 0:
            lin = self._temporal(lin)
        edges = band_edges(image.shape[0], len(gain))
        centres = (edges[:-1] + edges[1:]) / 2
        rows = np.arange(image.shape[0])
        g = np.interp(rows, centres, gain).astype(np.float32)
        f = np.interp(rows, centres, floor * gain).astype(np.float32)
        shape = (-1, 1, 1) if lin.ndim == 3 else (-1, 1)
        y = to_srgb(lin * g.reshape(shape) - f.reshape(shape))
        return y if y.ndim == 3 else np.asarray(cv2.cvtColor(y, cv2.COLOR_GRAY2BGR), np.uint8)

    def _temporal(self, lin: F32) -> F32:
        """A fixed camera's background barely changes: a slow average of it has almost no
        noise. Where nothing stands out from it (the foreground check, judged on a small
        frame against each band's noise) the frame is replaced by that average; people
        and cars keep the new frame. A clean background is what makes people stand out
        to the model: per-pixel noise decisions leave speckles it takes for texture."""
        bg = self._bg
        fg = self.foreground
        if bg is None or bg.shape != lin.shape or fg is None:
            self._bg = lin.copy() if bg is None or bg.shape != lin.shape else bg
            if fg is None:
                cv2.accumulateWeighted(lin, self._bg, 0.5)
            return lin
        h, w = lin.shape[:2]
        # The mask's soft edge (about 2 px at full size) is made on the small mask:
        # blurring the full-size one cost a third of the night's enhancement.
        m = np.asarray(cv2.GaussianBlur(fg.astype(np.float32), (0, 0), 2.0 / ANALYSIS_SCALE),
                       np.float32)
        m = np.asarray(cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)
        if lin.ndim == 3:
            m = m[..., None]
        diff = np.subtract(lin, bg)
        out = np.multiply(m, diff)
        out += bg
        a = np.float32(max(self.cfg.night_temporal, 1.0 / max(self._fg_n, 1)))
        step = np.multiply(m, -a)
        step += a  # a (1 - m): the background learns where nothing stands out
        step *= diff
        bg += step
        return out

    def _update_foreground(self, lin: F32) -> None:
        """Night: what differs from a slow, clean model of the static scene, on a frame
        `ANALYSIS_SCALE` times smaller (averaging 16 pixels cuts the noise by 4), judged
        against each band's noise. Detections the noise makes up fall where nothing
        stands out; people, moving or standing, do."""
        c = self.cfg
        h, w = lin.shape[:2]
        small = np.asarray(cv2.resize(lin, (max(1, w // ANALYSIS_SCALE),
                                            max(1, h // ANALYSIS_SCALE)),
                                      interpolation=cv2.INTER_AREA), np.float32)
        self._fg_n += 1
        bg = self._fg_bg
        if bg is None or bg.shape != small.shape:
            self._fg_bg = small.copy()
            self._fg_n = 1
            self.foreground = None
            return
        diff = small - bg
        smooth = np.asarray(cv2.GaussianBlur(diff, (0, 0), 1.0), np.float32)
        mag = np.abs(smooth)
        fg = mag > np.float32(c.night_fg_k) * band_sigma(mag)
        # Specks of noise that pass the test are single pixels: opening removes them.
        cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
        fg8 = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, cross)
        fg = cv2.dilate(fg8, np.ones((3, 3), np.uint8)) > 0
        # Learn the scene where nothing stands out; fast at first (a mean of the frames).
        a = np.float32(max(c.night_fg_rate, 1.0 / self._fg_n))
        bg += np.where(fg, a * 0.1, a).astype(np.float32) * diff
        self.foreground = fg if self._fg_n > 3 else None

    def foreground_share(self, boxes: npt.NDArray[np.floating]) -> F32:
        """Per box (x1, y1, x2, y2 in frame pixels): share of its pixels that stand out from
        the night background (1 where no foreground is known yet)."""
        fg = self.foreground
        out = np.ones(len(boxes), np.float32)
        if fg is None:
            return out
        s = 1.0 / ANALYSIS_SCALE
        for k, (x1, y1, x2, y2) in enumerate(np.asarray(boxes)[:, :4]):
            a1, b1 = int(x1 * s), int(y1 * s)
            a2, b2 = max(a1 + 1, int(np.ceil(x2 * s))), max(b1 + 1, int(np.ceil(y2 * s)))
            sub = fg[b1:b2, a1:a2]
            out[k] = float(sub.mean()) if sub.size else 0.0
        return out


def band_sigma(mag: F32, bands: int = 24) -> F32:
    """Robust noise sigma per band of rows of an absolute difference image (most of a
    fixed camera's view stands still, so the median change is noise), one value per row,
    shaped (rows, 1)."""
    sub = mag[::2, ::4]
    edges = band_edges(sub.shape[0], bands)
    med = np.array([np.median(sub[edges[k]:edges[k + 1]]) for k in range(len(edges) - 1)],
                   np.float32)
    centres = (edges[:-1] + edges[1:]) * 1.0  # in full rows (sub-sampled by 2)
    rows = np.arange(mag.shape[0])
    sig = 1.4826 * np.interp(rows, centres, med) + 1e-7
    return np.asarray(sig, np.float32)[:, None]
