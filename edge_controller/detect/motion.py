"""Motion gating: which regions of the frame changed enough to need a new inference.

Works on a small grey copy of the frame (`MotionConfig.width` pixels wide): the
absolute difference to a running-average background, thresholded, is the motion
mask. A region needs inference when enough of its pixels move; regions that stay
still keep their last boxes (a parked car stays a parked car). A person who
stops walking fades into the background within ~1/alpha frames, which is why the
pipeline still refreshes every region every `refresh_frames` processed frames.

No I/O: `MotionGate.update(image)` takes the BGR frame and returns the mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from edge_controller.detect.config import MotionConfig
from edge_controller.detect.tiling import Region

Mask = npt.NDArray[np.bool_]


class MotionGate:
    def __init__(self, cfg: MotionConfig) -> None:
        self.cfg = cfg
        self._bg: npt.NDArray[np.float32] | None = None
        self._scale = 1.0
        self.mask: Mask | None = None
        self.noise = 0.0  # robust sigma of the last difference image (grey levels)
        self.threshold = float(cfg.diff_threshold)  # what counted as motion last time

    def reset(self) -> None:
        self._bg = None
        self.mask = None

    def _small_grey(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        h, w = image.shape[:2]
        sw = min(self.cfg.width, w)
        sh = max(1, round(h * sw / w))
        self._scale = sw / w
        small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        grey = cv2.GaussianBlur(grey, (3, 3), 0)
        return grey.astype(np.float32)

    def update(self, image: npt.NDArray[np.uint8]) -> Mask:
        """Motion mask of this frame (True = moved); the first frame (or a new size) has
        motion everywhere."""
        grey = self._small_grey(image)
        if self._bg is None or self._bg.shape != grey.shape:
            self._bg = grey.copy()
            self.mask = np.ones(grey.shape, dtype=bool)
            return self.mask
        diff = cv2.absdiff(grey, self._bg)
        thr = float(self.cfg.diff_threshold)
        if self.cfg.noise_k > 0:
            # Most of a fixed camera's view stands still, so the median change is noise;
            # 1.4826 * median(|d|) is its sigma for Gaussian noise.
            self.noise = 1.4826 * float(np.median(diff))
            thr = max(thr, self.cfg.noise_k * self.noise)
        self.threshold = thr
        mask = diff > thr
        cv2.accumulateWeighted(grey, self._bg, self.cfg.background_alpha)
        self.mask = mask
        return mask

    @property
    def scale(self) -> float:
        """Mask pixels per frame pixel."""
        return self._scale

    def moving_fraction(self, region: Region, mask: Mask | None = None) -> float:
        """Share of the region's pixels (frame coordinates) that moved in the last update."""
        m = self.mask if mask is None else mask
        if m is None:
            return 1.0
        s = self._scale
        x1, y1, x2, y2 = region
        sx1, sy1 = int(x1 * s), int(y1 * s)
        sx2, sy2 = max(sx1 + 1, int(np.ceil(x2 * s))), max(sy1 + 1, int(np.ceil(y2 * s)))
        sub = m[sy1:sy2, sx1:sx2]
        return float(sub.mean()) if sub.size else 0.0

    def active(self, regions: Sequence[Region], mask: Mask | None = None) -> list[bool]:
        """For each region: did enough of it move to need a new inference?"""
        return [self.moving_fraction(r, mask) >= self.cfg.min_fraction for r in regions]


def blobs(mask: Mask, scale: float, min_area_px: float = 0.0, dilate: int = 2) -> np.ndarray:
    """Bounding boxes (M, 4) x1, y1, x2, y2 in frame pixels of the moving blobs of a mask
    measured at `scale` (mask pixels per frame pixel); blobs smaller than `min_area_px`
    frame pixels are noise and dropped."""
    m = mask.astype(np.uint8)
    if dilate > 0:
        m = np.asarray(cv2.dilate(m, np.ones((3, 3), np.uint8), iterations=dilate), np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    out = []
    for k in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[k])
        if area / (scale * scale) < min_area_px:
            continue
        out.append([x / scale, y / scale, (x + w) / scale, (y + h) / scale])
    return np.asarray(out, dtype=np.float64).reshape(-1, 4)
