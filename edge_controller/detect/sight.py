"""Can the pole see? A sans-I/O monitor of the camera's view for the crossing function.

A blind pole must never look like an empty crossing. `SightMonitor.update(image,
...)` looks at a small grey copy of a raw frame every few processed frames and
compares it with a reference of the same view learnt while the view was fine:

- `blocked`: most of the view lost both its fine texture and its coarse structure
  (a hand, a bag, a sticker, paint on the lens) while the frame is not foggy;
- `moved`: the view is shifted against the reference (template match of its edges)
  or no longer resembles it: the zones no longer lie on the road;
- `defocused`: fine texture lost against the coarse structure, which stays (fog dims
  both alike, blur only the fine);
- `too_dark`: next to no light or no contrast left: no enhancement brings people back;
- `low_detectability`: the fog's transmission (from the enhancer, or the fog model
  with the MOR) is too low for the detector to find people.

A cause is raised after `confirm` analyses in a row and cleared after `clear`
analyses without it (hysteresis: no flapping on a passing truck). The
reference is learnt from the first `reference_frames` analyses with enough
light and refreshed slowly only while nothing is wrong, so a moved or blocked
camera is not learnt as the new normal. No clock, no files: the caller hands
frames in and reads `state`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge_controller.detect.config import SightConfig

F32 = npt.NDArray[np.float32]
CAUSES = ("blocked", "moved", "defocused", "too_dark", "low_detectability")
WIDTH = 128  # analysis width (px); height follows the frame's aspect ratio
FINE_WIDTH = 384  # fine texture is measured on a larger copy: a slight blur must show
GRID = (4, 6)  # rows, columns of cells for the blocked check


def _prepare(image: npt.NDArray[np.uint8]) -> tuple[F32, F32, F32]:
    """Small grey image, its coarse structure (low-pass) and fine texture (high-pass)."""
    h, w = image.shape[:2]
    sh = max(8, round(h * WIDTH / w))
    small = cv2.resize(image, (WIDTH, sh), interpolation=cv2.INTER_AREA)
    if small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    g = np.asarray(small, np.float32)
    lp = np.asarray(cv2.GaussianBlur(g, (0, 0), 2.0), np.float32)
    fw = min(FINE_WIDTH, w)
    big = cv2.resize(image, (fw, max(8, round(h * fw / w))), interpolation=cv2.INTER_AREA)
    if big.ndim == 3:
        big = cv2.cvtColor(big, cv2.COLOR_BGR2GRAY)
    b = np.asarray(big, np.float32)
    # Fine texture at a pixel or two of the larger copy: a defocused lens loses it first.
    fine = np.asarray(b - cv2.GaussianBlur(b, (0, 0), 1.0), np.float32)
    return g, lp, fine


def _cells(a: F32, fn: str) -> F32:
    rows, cols = GRID
    h, w = a.shape
    out = np.empty(GRID, np.float32)
    for r in range(rows):
        for c in range(cols):
            cell = a[r * h // rows:(r + 1) * h // rows, c * w // cols:(c + 1) * w // cols]
            out[r, c] = float(np.std(cell)) if fn == "std" else float(np.mean(np.abs(cell)))
    return out


def _bandpass(lp: F32) -> F32:
    return np.asarray(lp - cv2.GaussianBlur(lp, (0, 0), 6.0), np.float32)


def _shift(ref: F32, cur: F32, margin: int = 20, min_gain: float = 0.0
           ) -> tuple[float, float]:
    """Where the middle of the current view lies in the reference (analysis pixels):
    edges (band-pass) locate the view, the smooth light does not. People walking
    through the middle pull the match a few pixels aside while the view in place
    matches nearly as well, so a shift counts only when it matches `min_gain`
    (correlation) better than no shift at all."""
    a, b = _bandpass(ref), _bandpass(cur)
    h, w = b.shape
    m = min(margin, h // 4, w // 4)
    tpl = b[m:h - m, m:w - m]
    score = cv2.matchTemplate(a, tpl, cv2.TM_CCOEFF_NORMED)
    _, best, _, (x, y) = cv2.minMaxLoc(score)
    if best - float(score[m, m]) < min_gain:
        return 0.0, 0.0
    return float(x - m), float(y - m)


@dataclass
class SightState:
    """What the monitor concludes now; `ok` False means the crossing function is degraded."""

    ok: bool = True
    causes: list[str] = field(default_factory=list)
    learning: bool = True
    detectability: float | None = None  # 0-1: the share of a person's contrast left
    shift_px: float | None = None  # view shift against the reference (frame pixels)
    similarity: float | None = None  # coarse structure vs the reference (correlation)
    sharpness: float | None = None  # fine/coarse texture relative to the reference (1: as learnt)
    texture_lost: float | None = None  # share of the view whose texture and structure went
    brightness: float | None = None  # median grey level (0-255) of the raw frame

    def as_dict(self) -> dict[str, Any]:
        def r(v: float | None, n: int = 3) -> float | None:
            return None if v is None else round(float(v), n)

        return {"ok": self.ok, "causes": list(self.causes), "learning": self.learning,
                "detectability": r(self.detectability), "shift_px": r(self.shift_px, 1),
                "similarity": r(self.similarity), "sharpness": r(self.sharpness),
                "texture_lost": r(self.texture_lost), "brightness": r(self.brightness, 1)}


class SightMonitor:
    def __init__(self, cfg: SightConfig) -> None:
        self.cfg = cfg
        self.state = SightState()
        self._refs: dict[str, list[tuple[F32, F32, F32]]] = {}
        self._ref: dict[str, tuple[F32, F32, F32, F32, F32, float]] = {}
        self._streak = dict.fromkeys(CAUSES, 0)
        self._calm = dict.fromkeys(CAUSES, 0)
        self._active: set[str] = set()
        self._lit: dict[str, int] = {}  # analyses with enough light while learning
        self.analyses = 0
        self._count = 0
        self._size: tuple[int, int] | None = None

    def reset(self) -> None:
        self.__init__(self.cfg)  # type: ignore[misc]

    def due(self) -> bool:
        """Whether the next processed frame is analysed (every `every_frames`)."""
        return self._count % self.cfg.every_frames == 0

    # Long: one look at a frame measures every cause against the same reference view.
    def update(self, image: npt.NDArray[np.uint8], *, transmission: float | None = None,
               foggy: bool = False, night: bool = False) -> SightState:
        """Look at a raw frame (BGR). `transmission`: the fog's transmission where people
        are (from the enhancer or the fog model), `foggy`: the enhancer is removing fog,
        `night`: night frames (compared with a reference learnt at night: the lamp lights
        the view differently from the sun)."""
        self._count += 1
        if not self.cfg.enabled or (self._count - 1) % self.cfg.every_frames:
            return self.state
        h, w = image.shape[:2]
        if self._size != (w, h):  # another camera mode: learn again
            self._refs, self._ref, self._lit, self._size = {}, {}, {}, (w, h)
        key = "night" if night else "day"
        self.analyses += 1
        g, lp, fine = _prepare(image)
        c = self.cfg
        ref = self._ref.get(key)
        st = SightState(learning=ref is None)
        st.brightness = float(np.median(g))
        found: set[str] = set()
        contrast = float(np.percentile(g, 95) - np.percentile(g, 5))
        if st.brightness < c.dark_level or contrast < c.min_contrast:
            found.add("too_dark")
        st.detectability = None if transmission is None else float(transmission)
        if transmission is not None and transmission < c.min_transmission:
            found.add("low_detectability")
        if ref is None:
            # Spread over time: a median of neighbouring frames keeps people who walk
            # slowly, and their ghosts later pull the view's match aside.
            refs = self._refs.setdefault(key, [])
            if "too_dark" not in found and contrast >= 2 * c.min_contrast:
                self._lit[key] = self._lit.get(key, 0) + 1
                if (self._lit[key] - 1) % c.reference_spread == 0:
                    refs.append((g, lp, fine))
            if len(refs) >= c.reference_frames:
                self._learn(key)
        else:
            _, r_lp, _, r_std, r_fin, r_sharp = ref
            sx = w / g.shape[1]
            # Fog and night change the picture but not where things are; the checks of
            # texture and resemblance only hold in daylight-like frames.
            dx, dy = _shift(r_lp, lp, min_gain=c.moved_margin)
            st.shift_px = float(np.hypot(dx, dy) * sx)
            a = lp - lp.mean()
            b = r_lp - r_lp.mean()
            st.similarity = float((a * b).sum() / max(np.sqrt((a * a).sum() * (b * b).sum()),
                                                       1e-6))
            std = _cells(lp, "std")
            fin = _cells(fine, "abs")
            lost = (std < c.blocked_ratio * r_std) & (fin < c.blocked_ratio * r_fin)
            st.texture_lost = float(lost.mean())
            sharp = float(np.mean(np.abs(fine))) / max(float(np.std(lp)), 1e-3)
            st.sharpness = sharp / max(r_sharp, 1e-6)
            if "too_dark" not in found:
                if st.texture_lost >= c.blocked_share and not foggy:
                    found.add("blocked")
                elif st.shift_px > c.moved_px or (st.similarity < c.min_similarity
                                                  and not foggy):
                    found.add("moved")
                elif st.sharpness < c.defocus_ratio and not foggy:
                    found.add("defocused")
        self._debounce(found)
        st.causes = [k for k in CAUSES if k in self._active]
        st.ok = not st.causes
        if ref is not None and st.ok and not found:
            self._refresh(key, g, lp, fine)
        self.state = st
        return st

    def _debounce(self, found: set[str]) -> None:
        c = self.cfg
        for k in CAUSES:
            if k in found:
                self._streak[k] += 1
                self._calm[k] = 0
                if self._streak[k] >= c.confirm:
                    self._active.add(k)
            else:
                self._calm[k] += 1
                self._streak[k] = 0
                if self._calm[k] >= c.clear:
                    self._active.discard(k)

    def _learn(self, key: str) -> None:
        refs = self._refs.pop(key)
        g = np.median(np.stack([r[0] for r in refs]), axis=0).astype(np.float32)
        lp = np.median(np.stack([r[1] for r in refs]), axis=0).astype(np.float32)
        fine = np.median(np.stack([np.abs(r[2]) for r in refs]), axis=0).astype(np.float32)
        std = _cells(lp, "std")
        fin = np.median(np.stack([_cells(r[2], "abs") for r in refs]), axis=0)
        sharp = float(np.median([np.mean(np.abs(r[2])) / max(float(np.std(r[1])), 1e-3)
                                 for r in refs]))
        self._ref[key] = (g, lp, fine, std, fin.astype(np.float32), sharp)

    def _refresh(self, key: str, g: F32, lp: F32, fine: F32) -> None:
        # Slow: lighting drifts over the day, but one bad frame must not move the reference.
        a = np.float32(self.cfg.refresh_rate)
        r_g, r_lp, r_fine, r_std, r_fin, r_sharp = self._ref[key]
        r_lp = r_lp * (1 - a) + lp * a
        self._ref[key] = (r_g * (1 - a) + g * a, r_lp, r_fine,
                     r_std * (1 - a) + _cells(lp, "std") * a,
                     r_fin * (1 - a) + _cells(fine, "abs") * a, r_sharp)


NO_FRAMES = "no_frames"  # the detector has had no frame for `stale_s`: it sees nothing
REPORTED = (*CAUSES, NO_FRAMES)


@dataclass
class SightReport:
    """The crossing function's view as the backend gets it (telemetry `crossing.sight`)."""

    ok: bool
    causes: list[str]
    learning: bool
    state: SightState
    age_s: float | None  # seconds since the last analysed frame (None: none yet)
    since_s: float  # seconds since `ok` or the causes last changed


class SightWatch:
    """Sans-I/O: the monitor's state plus the frames' freshness -> degraded/restored events.

    `check(state, now, last_frame_at, analysed_at)` returns the events to publish:
    ("crossing_degraded", detail) when the function becomes degraded or its causes
    change, ("crossing_restored", detail) when it can see again. A detector that gets
    no frames (camera gone, a stuck task) is degraded too (`no_frames`): no frames must
    never read as an empty crossing. While the monitor is still learning its
    reference only the causes that need none (too dark, fog too dense, no frames) can
    be raised; it says `learning`."""

    def __init__(self, started: float, stale_s: float = 10.0) -> None:
        self.stale_s = stale_s
        self.started = started
        self.causes: list[str] = []
        self.changed_at = started
        self.degraded_at: float | None = None
        self.analysed_at: float | None = None

    def causes_now(self, state: SightState, now: float, last_frame_at: float | None
                   ) -> list[str]:
        causes = [c for c in CAUSES if c in state.causes]
        ref = self.started if last_frame_at is None else max(last_frame_at, self.started)
        if now - ref > self.stale_s:
            causes.append(NO_FRAMES)
        return causes

    def check(self, state: SightState, now: float, last_frame_at: float | None,
              analysed_at: float | None = None) -> list[tuple[str, dict[str, Any]]]:
        if analysed_at is not None:
            self.analysed_at = analysed_at
        causes = self.causes_now(state, now, last_frame_at)
        if causes == self.causes:
            return []
        previous, self.causes, self.changed_at = self.causes, causes, now
        if causes:
            if self.degraded_at is None:
                self.degraded_at = now
            return [("crossing_degraded", {
                "causes": list(causes), "previous": list(previous),
                "learning": state.learning, **_measures(state)})]
        since = self.degraded_at if self.degraded_at is not None else now
        self.degraded_at = None
        return [("crossing_restored", {"previous": list(previous),
                                       "degraded_s": round(now - since, 1)})]

    def report(self, state: SightState, now: float) -> SightReport:
        return SightReport(
            ok=not self.causes, causes=list(self.causes), learning=state.learning,
            state=state,
            age_s=None if self.analysed_at is None else round(max(0.0, now - self.analysed_at), 1),
            since_s=round(max(0.0, now - self.changed_at), 1))


def _measures(st: SightState) -> dict[str, Any]:
    d = st.as_dict()
    return {k: d[k] for k in ("detectability", "shift_px", "similarity", "sharpness",
                              "texture_lost", "brightness")}
