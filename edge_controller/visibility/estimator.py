"""Meteorological optical range (MOR) from the pole's fixed camera.

Sans-I/O: `VisibilityEstimator.observe(image, t, regime, boxes)` takes one
frame, its time, the lighting regime and the person boxes, and returns a
`Reading`. No clock, no thread, no camera.

Method (docs/dimming.md has the diagram):

1. Geometry: the calibration gives every analysis pixel its distance d along
   the ray to the road, and at night the lamp's distance r to that road point.
2. Linear intensity: sRGB decoded per channel, so the scattering model holds:
   I = g J t + A (1 - t), t = exp(-beta L), where J is the clear-weather
   reference, g the illumination gain (clouds, dusk, exposure), A the airlight
   and L the light path (d by day; d + r at night, lamp -> road -> camera).
3. Contrast cue, per patch and channel: the gradient-domain regression
   s = sum(grad I . grad J) / sum(|grad J|^2) = g t. Gradients remove the
   airlight (and its unevenness) and the regression is unbiased by noise in I.
4. Fit ln s = ln g_c - beta L over all patches (weighted, Huber-robust; one
   gain per channel absorbs colour shifts at dusk); MOR = 2.996 / beta.
5. Airlight check: what fog hides it replaces with airlight, so a loss of far
   contrast without the brightening is a shadow or a lighting change.
6. References per lighting regime (day, twilight, night at each lamp level):
   the per-pixel median of frames with people masked, refreshed by clearly
   clear frames, learnt again when the scene turns out clearer than it (it was
   learnt in haze) or stops matching (the camera moved).
7. Smoothing over `smoothing_s`, band with hysteresis, and a confidence; when
   the image cannot support an estimate: `unknown`.
"""

from __future__ import annotations

import math
import warnings
from collections import deque

import cv2
import numpy as np

from edge_controller.visibility.config import VisibilityConfig
from edge_controller.visibility.geometry import Geometry
from edge_controller.visibility.imaging import (
    B8,
    F32,
    SRGB_TO_LINEAR,
    U8,
    Boxes,
    bandpass,
    patch_max,
    patch_sum,
)
from edge_controller.visibility.reading import (
    BAND_LO,
    BANDS,
    BETA_1000,
    MOR_K,
    UNKNOWN,
    Fit,
    Reading,
    Reference,
    band_index,
    band_of,
)

# Callers import the estimator's vocabulary from here.
__all__ = ["BANDS", "BETA_1000", "MOR_K", "UNKNOWN", "Fit", "Geometry", "Reading",
           "Reference", "VisibilityEstimator", "band_of"]


# Regimes learning a reference at once: the one in view and the one before it, so that
# a lamp switching between two levels still completes both.
LEARNING = 2


class VisibilityEstimator:
    """MOR from camera frames; one instance per camera. Memory: one ready reference per
    regime seen (day, twilight, one per lamp-level bucket: at most 14 with the default
    10 % buckets, about 1 MB each at the default analysis width) and the learning frames of
    at most LEARNING regimes (`reference_frames` each)."""

    def __init__(self, cfg: VisibilityConfig) -> None:
        self.cfg = cfg
        self.refs: dict[str, Reference] = {}
        self._geo: Geometry | None = None
        self._geo_key: tuple[int, int] = (0, 0)
        self._size: tuple[int, int] = (0, 0)
        self._hist: deque[tuple[float, float, float, float]] = deque()  # t, beta, sigma, q
        self._band = UNKNOWN
        self._last_fit_t = -1e18
        self.last_fit: Fit | None = None
        self.analyses = 0
        self.relearned = 0
        self._ref_version = 0  # bumped whenever a reference image changes
        self._bp_cache: tuple[F32, int, F32] | None = None
        self._pgeo: tuple[F32, F32, F32, B8] | None = None
        k = 2 * math.ceil(2 * cfg.highpass_px) + 1
        self._erode_kernel = np.ones((k, k), np.uint8)

    # ---- preparation --------------------------------------------------------

    def _prepare(self, image: U8) -> tuple[F32, B8]:
        fh, fw = image.shape[:2]
        if self._geo is None or self._geo_key != (fw, fh):
            aw = min(self.cfg.analysis_width, fw)
            ah = max(8, round(fh * aw / fw))
            self._size = (aw, ah)
            self._geo = Geometry.build(self.cfg.calibration, (fw, fh), self._size)
            self._geo_key = (fw, fh)
            self._pgeo = None
            self.refs.clear()  # a new frame size: old references no longer line up
        small = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        if small.ndim == 2:
            small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
        # Clipped pixels break the linear model: drop them (and their neighbours,
        # whose gradients they touch).
        inside = cv2.inRange(small, (2, 2, 2), (249, 249, 249))
        inside = cv2.erode(inside, np.ones((3, 3), np.uint8))
        lin: F32 = cv2.LUT(small, SRGB_TO_LINEAR)
        return lin, inside > 0

    def _person_mask(self, boxes: Boxes | None, frame_wh: tuple[int, int]) -> B8:
        w, h = self._size
        keep = np.ones((h, w), bool)
        if boxes is None or len(boxes) == 0:
            return keep
        sx, sy = w / frame_wh[0], h / frame_wh[1]
        m = self.cfg.person_margin
        for b in np.asarray(boxes, dtype=np.float64)[:, :4]:
            x1, y1, x2, y2 = b
            dx, dy = (x2 - x1) * m, (y2 - y1) * m
            c1 = max(0, int((x1 - dx) * sx))
            r1 = max(0, int((y1 - dy) * sy))
            c2 = min(w, math.ceil((x2 + dx) * sx) + 1)
            r2 = min(h, math.ceil((y2 + dy) * sy) + 1)
            keep[r1:r2, c1:c2] = False
        return keep

    # ---- references ---------------------------------------------------------

    def reference_for(self, regime: str) -> tuple[str, Reference] | None:
        """The ready reference for `regime`, else the nearest night level's."""
        ref = self.refs.get(regime)
        if ref is not None and ref.ready:
            return regime, ref
        if regime.startswith("night@"):
            lvl = int(regime[6:])
            near = sorted((abs(int(k[6:]) - lvl), k) for k, r in self.refs.items()
                          if k.startswith("night@") and r.ready)
            if near:
                return near[0][1], self.refs[near[0][1]]
        return None

    def _learn(self, ref: Reference, lin: F32, keep: B8, t: float) -> None:
        if t - ref.last_t < self.cfg.reference_gap_s:
            return
        ref.last_t = t
        # At most LEARNING regimes hold learning frames (about 1 MB each): every lamp
        # level is a regime, and one visited now and then never finishes, so its frames
        # would stay for good, up to 100 MB over the levels. The regime least recently
        # fed loses its frames; when it comes back it starts over.
        if not ref.frames:
            learning = [r for r in self.refs.values() if r.frames and r is not ref]
            learning.sort(key=lambda r: r.last_t)
            for r in learning[:max(0, len(learning) - (LEARNING - 1))]:
                r.frames = []
        frame = lin.copy()
        frame[~keep] = np.nan
        ref.frames.append(frame)
        if len(ref.frames) >= self.cfg.reference_frames:
            stack = np.stack(ref.frames)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
                med = np.nanmedian(stack, axis=0)
            # Pixels masked in every frame (a person standing still): fill from
            # the plain median so the reference has no holes.
            holes = ~np.isfinite(med)
            if holes.any():
                med[holes] = np.median(np.where(np.isfinite(stack), stack, 0.0),
                                       axis=0)[holes]
            ref.image = med.astype(np.float32)
            ref.frames = []
            ref.odd = 0

    # ---- the fit --------------------------------------------------------------

    def _refbandpass(self, ref: F32) -> F32:
        """Band-pass of a reference, cached while it is the one in use and unchanged."""
        c = self._bp_cache
        if c is not None and c[0] is ref and c[1] == self._ref_version:
            return c[2]
        bp = bandpass(ref, self.cfg.highpass_px)
        self._bp_cache = (ref, self._ref_version, bp)
        return bp

    def _patch_geometry(self) -> tuple[F32, F32, F32, B8]:
        """Per patch: mean camera distance, day and night light paths, and whether
        its distances are compact enough (near the horizon a patch mixes many)."""
        if self._pgeo is None:
            geo = self._geo
            assert geo is not None
            ph, pw = self.cfg.patch_px
            v = geo.valid.astype(np.float32)
            n = np.maximum(patch_sum(v, ph, pw), 1.0)
            D = patch_sum(geo.d, ph, pw) / n
            L_night = patch_sum(geo.d + geo.r, ph, pw) / n
            dmax = patch_max(geo.d, ph, pw)
            dmin = -patch_max(np.where(geo.valid, -geo.d, -1e9).astype(np.float32), ph, pw)
            ok = dmax <= 1.3 * np.maximum(dmin, 1e-3)
            self._pgeo = (D, D.copy(), L_night, ok)
        return self._pgeo

    # Long: one weighted, Huber-robust regression (docstring steps 3-5).
    def fit(self, lin: F32, keep: B8, ref: F32, night: bool) -> Fit | None:
        """Compare a frame with its reference; None when nothing is measurable."""
        geo = self._geo
        assert geo is not None
        ph, pw = self.cfg.patch_px
        # Erode the mask so that the band-pass never mixes in a masked pixel.
        m: F32 = cv2.erode((keep & geo.valid).astype(np.float32), self._erode_kernel)
        ax = bandpass(lin, self.cfg.highpass_px)
        bx = self._refbandpass(ref)
        m3 = cv2.merge([m, m, m])
        ax *= m3
        bxm = bx * m3
        s_ab = patch_sum(ax * bx, ph, pw)
        s_bb = patch_sum(bxm * bxm, ph, pw)
        s_aa = patch_sum(ax * ax, ph, pw)
        n = patch_sum(m, ph, pw)
        area = float(ph * pw)
        D, L_day, L_night, ok_spread = self._patch_geometry()
        L = L_night if night else L_day
        mu_i = patch_sum(lin * m3, ph, pw)
        mu_j = patch_sum(ref * m3, ph, pw)
        ok_geo = (n >= 0.5 * area) & ok_spread
        nn = np.maximum(n, 1.0)
        mu_i = mu_i / nn[..., None]
        mu_j = mu_j / nn[..., None]
        # Texture of the reference per pixel, against a noise floor from the
        # reference's own brightness (shot-noise-like) and a fixed read floor.
        tex = s_bb / nn[..., None]
        floor = (2e-3 * mu_j + 2e-6) * 0.05
        textured = ok_geo[..., None] & (tex > floor)
        s = s_ab / np.maximum(s_bb, 1e-12)
        res = np.maximum(s_aa - 2 * s * s_ab + s * s * s_bb, 0.0)
        # Neighbouring band-pass values are correlated: about one independent
        # sample per blur area.
        dof = np.maximum(nn[..., None] / (1.0 + self.cfg.highpass_px ** 2) - 1, 1.0)
        sig_s = np.sqrt(res / dof / np.maximum(s_bb, 1e-12))
        alive = textured & (s > 3.0 * sig_s) & (s > 1e-3)
        n_text = int(textured.any(axis=2).sum())
        n_lost = int((textured & ~alive).all(axis=2).sum()) if n_text else 0
        # A patch with plenty of texture of its own that does not correlate with the
        # reference shows another scene (camera moved, something built); fog only
        # ever takes texture away.
        rho = s_ab / np.sqrt(np.maximum(s_aa * s_bb, 1e-24))
        # Noise energy: the flattest tenth of the frame's patches.
        e_i = s_aa / nn[..., None]
        noise = float(np.percentile(e_i[ok_geo], 10)) if ok_geo.any() else 0.0
        strong = textured & (e_i > 9.0 * noise)
        n_strong = int(strong.sum())
        unlike = float((strong & (rho < 0.3)).sum()) / n_strong if n_strong >= 10 else 0.0
        bright = float(mu_i[ok_geo].mean() / max(float(mu_j[ok_geo].mean()), 1e-9)) \
            if ok_geo.any() else 0.0
        if alive.sum() < 3:
            return Fit(0.0, math.inf, (1.0, 1.0, 1.0), 0, n_text, n_lost, 0.0, (0.0, 0.0),
                       bright, unlike)
        iy, ix, ic = np.nonzero(alive)
        y = np.log(s[iy, ix, ic])
        sy = sig_s[iy, ix, ic] / s[iy, ix, ic]
        lp = L[iy, ix]
        # Model floor: texture changes, JPEG and gamma make no patch perfect.
        w0 = 1.0 / (sy ** 2 + 0.03 ** 2)
        A = np.zeros((len(y), 4))
        A[:, 0] = -lp
        A[np.arange(len(y)), 1 + ic] = 1.0
        w = w0.copy()
        theta = np.zeros(4)
        for _ in range(6):  # IRLS, Huber
            sw = np.sqrt(w)
            theta, *_ = np.linalg.lstsq(A * sw[:, None], y * sw, rcond=None)
            r = (y - A @ theta) * np.sqrt(w0)
            scale = 1.4826 * float(np.median(np.abs(r))) + 1e-9
            k = 1.5 * max(scale, 1.0)
            a = np.abs(r)
            w = w0 * np.where(a <= k, 1.0, k / np.maximum(a, 1e-12))
        sw = np.sqrt(w)
        Aw = A * sw[:, None]
        r = (y - A @ theta) * sw
        dof_fit = max(len(y) - 4, 1)
        chi2 = float(r @ r) / dof_fit
        try:
            cov = np.linalg.inv(Aw.T @ Aw) * max(chi2, 1.0)
            sigma = float(math.sqrt(max(cov[0, 0], 0.0)))
        except np.linalg.LinAlgError:
            sigma = math.inf
        beta = float(theta[0])
        gains = (float(math.exp(theta[1])), float(math.exp(theta[2])), float(math.exp(theta[3])))
        # Airlight: per patch, what the contrast loss leaves unexplained in the mean.
        used = alive.any(axis=2) & ok_geo
        bp = max(beta, 0.0)
        g = np.asarray(gains)
        # Reflected light is attenuated over the whole light path, the airlight
        # builds up over the camera's distance only.
        resid = (mu_i - g * np.exp(-bp * L)[..., None] * mu_j).mean(axis=2)
        one_t = 1.0 - np.exp(-bp * D)
        wa = ok_geo & (one_t > 0.03)
        scene = float(np.median((g * mu_j).mean(axis=2)[ok_geo])) if ok_geo.any() else 0.0
        if wa.sum() >= 3 and scene > 0:
            airlight = float(np.sum(resid[wa] * one_t[wa]) / np.sum(one_t[wa] ** 2)) / scene
        else:
            airlight = math.nan
        lp_used = L[used]
        span = (float(np.percentile(lp_used, 10)), float(np.percentile(lp_used, 90))) \
            if lp_used.size else (0.0, 0.0)
        return Fit(beta, sigma, gains, int(used.sum()), n_text, n_lost, airlight, span, bright,
                   unlike)

    # ---- the public step ----------------------------------------------------------

    # Long: reference, fit, smoothing, band and confidence in running order.
    def observe(self, image: U8, t: float, regime: str, boxes: Boxes | None = None) -> Reading:
        """Analyse one frame (BGR or grey uint8) taken at `t` (s) in `regime`.

        `regime` is "day", "twilight" or "night@<lamp level>"; `boxes` are the
        person boxes (x1, y1, x2, y2, ...) in frame pixels.
        """
        if not self.cfg.calibration.complete:
            return Reading(t, None, UNKNOWN, 0.0, regime, detail="no calibration")
        lin, unclipped = self._prepare(image)
        fh, fw = image.shape[:2]
        keep = unclipped & self._person_mask(boxes, (fw, fh))
        assert self._geo is not None
        if int(self._geo.valid.sum()) < 16:
            return Reading(t, None, UNKNOWN, 0.0, regime,
                           detail="calibration leaves no road pixels in view")
        self.analyses += 1
        night = regime.startswith("night")
        found = self.reference_for(regime)
        own = self.refs.setdefault(regime, Reference())
        if found is None:
            # Nothing to compare with yet: learn (bootstrap assumes the weather the
            # pole was installed in; a hazy reference is replaced, see below).
            self._learn(own, lin, keep, t)
            n = len(own.frames)
            return self._report(
                t, regime, f"learning reference ({n}/{self.cfg.reference_frames} frames)")
        key, ref = found
        assert ref.image is not None
        f = self.fit(lin, keep, ref.image, night)
        self.last_fit = f
        borrowed = key != regime  # another lamp level's reference (night)
        if f is not None and f.unlike > 0.5:
            # Plenty of texture that does not match: another scene (the camera
            # moved, something was built). Fog only ever takes texture away.
            if not borrowed:
                ref.odd += 1
                if ref.odd >= self.cfg.relearn_after:
                    self.refs.pop(key, None)
                    self.relearned += 1
                    self._hist.clear()
                    return self._report(t, regime, "reference replaced (scene changed)")
            return self._report(t, regime, "scene does not match its reference")
        if f is None or f.used < self.cfg.min_patches:
            heavy = (f is not None and f.textured >= self.cfg.min_patches
                     and f.lost >= 0.8 * f.textured and f.brightness > 0.3)
            if heavy:
                # Every textured patch lost its contrast and the picture is not dark:
                # fog too thick to measure. Low confidence by design.
                self._hist.append((t, MOR_K / (self.cfg.mor_min_m * 0.5), math.inf, 0.0))
                self._last_fit_t = t
                return self._report(t, regime, "contrast lost everywhere")
            used = 0 if f is None else f.used
            return self._report(t, regime, f"too little usable texture ({used} patches)")
        # Fog brightens what it hides; a far loss of contrast without it is a
        # shadow or a lighting change.
        beta = f.beta
        lighting = (beta > 0.5 * BETA_1000 and math.isfinite(f.airlight)
                    and f.airlight < self.cfg.min_airlight)
        if lighting:
            beta = 0.0
        clearer = beta < -max(3 * f.sigma, 0.5 * BETA_1000)
        if borrowed and clearer:
            # The lamp is dimmer than when the borrowed reference was taken, so
            # the ambient-lit far road looks relatively brighter: whatever this
            # is, it is not fog (fog only takes far contrast away).
            beta = 0.0
            clearer = False
        # A reference clearer than the scene is expected (haze); one hazier than a
        # clear scene (significantly negative beta) is learnt again. A borrowed
        # one is left alone: its own lamp level may still need it.
        odd = clearer
        if not borrowed:
            ref.odd = ref.odd + 1 if odd else 0
            if ref.odd >= self.cfg.relearn_after:
                self.refs.pop(key, None)
                self.relearned += 1
                self._hist.clear()
                return self._report(t, regime, "reference replaced (learnt in haze)")
        q = min(1.0, f.used / max(3.0 * self.cfg.min_patches, 1.0))
        if borrowed:
            q *= 0.7  # gains absorb most of a lamp level change, not all
        if lighting:
            q *= 0.5
        if not odd and math.isfinite(beta) and not math.isnan(f.sigma):
            self._hist.append((t, beta, max(f.sigma, 1e-6), q))
            self._last_fit_t = t
        rd = self._report(t, regime, "lighting change, not fog" if lighting else "")
        # Refresh with clearly clear frames; learn this regime's own reference
        # (night at a new lamp level) while the borrowed one says it is clear.
        if rd.band == BANDS[0] and rd.confidence >= (0.4 if borrowed else 0.6):
            if not borrowed and self.cfg.refresh_rate > 0:
                norm = lin / np.asarray(f.gains, dtype=np.float32)
                upd = (keep & self._geo.valid).astype(np.uint8)
                cv2.accumulateWeighted(norm, ref.image, self.cfg.refresh_rate, mask=upd)
                self._ref_version += 1
            elif borrowed:
                self._learn(own, lin, keep, t)
        return rd

    def forget(self) -> None:
        """Drop the smoothing history and the band (the references stay)."""
        self._hist.clear()
        self._band = UNKNOWN
        self._last_fit_t = -1e18

    # ---- smoothing, band, confidence -------------------------------------------

    def _report(self, t: float, regime: str, detail: str) -> Reading:
        h = self._hist
        win = self.cfg.smoothing_s
        while h and (t - h[0][0] > win or len(h) > 256):
            h.popleft()
        if not h or t - self._last_fit_t > self.cfg.stale_s:
            self._band = UNKNOWN
            return Reading(t, None, UNKNOWN, 0.0, regime, detail=detail or "no estimate",
                           patches=0)
        betas = np.array([x[1] for x in h])
        sig = np.array([x[2] for x in h])
        q = float(np.mean([x[3] for x in h]))
        if not np.isfinite(sig).any():
            # Only "contrast lost everywhere" frames: heavy fog, no number.
            self._band = BANDS[-1]
            return Reading(t, None, BANDS[-1], 0.2, regime, beta=None,
                           detail=detail or "contrast lost everywhere")
        fin = np.isfinite(sig)
        betas, sig = betas[fin], sig[fin]
        med = float(np.median(betas))
        spread = 1.4826 * float(np.median(np.abs(betas - med))) if len(betas) > 2 else 0.0
        keep = np.abs(betas - med) <= 3 * np.maximum(sig, spread) + 1e-9
        w = 1.0 / np.maximum(sig[keep], 1e-6) ** 2
        if not np.isfinite(w).all() or float(np.sum(w)) <= 0:
            self._band = UNKNOWN
            return Reading(t, None, UNKNOWN, 0.0, regime, detail=detail or "no estimate")
        beta = float(np.sum(w * betas[keep]) / np.sum(w))
        sigma = float(math.sqrt(1.0 / np.sum(w)))
        if len(betas[keep]) > 2:  # frame-to-frame scatter the per-frame errors missed
            sigma = max(sigma, float(np.std(betas[keep])) / math.sqrt(len(betas[keep])))
        cfg = self.cfg
        beta_pos = max(beta, 1e-9)
        mor = MOR_K / beta_pos
        band = self._banded(mor)
        if mor > cfg.mor_max_m:
            # Too clear to measure: only the band is known. Confidence = chance
            # that beta is really below the 1000 m threshold.
            conf = _phi((BETA_1000 - beta) / max(sigma, 1e-9)) * q
            self._band = band
            return Reading(t, None, band, conf, regime, beta=beta, detail=detail,
                           patches=len(betas))
        rel = sigma / beta_pos
        conf = math.erf(math.log(1.3) / (max(rel, 1e-9) * math.sqrt(2))) * q
        if mor < cfg.mor_min_m:
            return Reading(t, None, band, min(conf, 0.3), regime, beta=beta,
                           detail=detail or "below the measurable range", patches=len(betas))
        return Reading(t, mor, band, conf, regime, beta=beta, detail=detail,
                       patches=len(betas))

    def _banded(self, mor: float) -> str:
        """Band of `mor`, keeping the current band until the MOR is clearly past its edge."""
        new = band_of(mor)
        cur = self._band
        if cur in (UNKNOWN, new):
            self._band = new
            return new
        hy = self.cfg.band_hysteresis
        ci = band_index(cur)
        lo = BAND_LO[ci]
        hi = BAND_LO[ci - 1] if ci > 0 else math.inf
        if lo * (1 - hy) <= mor <= hi * (1 + hy):
            return cur
        self._band = new
        return new



def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))

