"""Cheap, local appearance of a person's box: colour histograms of the upper and lower body.

Used by the tracker to tell apart people who walk side by side and to recognise a
person whose track broke (occlusion, a missed detection, a pair that merged and
split). Nothing is kept beyond the track's life and the feature cannot identify
anyone: a 2 x 8 x 4 hue-saturation histogram says "red top, dark trousers" and no more.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

Feature = np.ndarray[Any, np.dtype[np.float32]]
DIM = 2 * 8 * 4  # two body halves x 8 hue x 4 saturation bins
_PATCH = (12, 24)  # width, height the box is resampled to: enough for colours, tiny cost


def features(image: np.ndarray[Any, np.dtype[np.uint8]] | None,
             boxes: np.ndarray[Any, np.dtype[Any]]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """(N, DIM) L2-normalised features for boxes x1,y1,x2,y2 in `image` (BGR); zeros
    when there is no image or a box lies outside it (zero similarity to everything)."""
    out = np.zeros((len(boxes), DIM), dtype=np.float32)
    if image is None or len(boxes) == 0:
        return out
    h, w = image.shape[:2]
    for k, b in enumerate(boxes):
        x1, y1 = max(0, int(b[0])), max(0, int(b[1]))
        x2, y2 = min(w, int(np.ceil(b[2]))), min(h, int(np.ceil(b[3])))
        if x2 - x1 < 4 or y2 - y1 < 8:
            continue
        # Skip the head (top 15 %) and the outer fifth each side: mostly background there.
        bh, bw = y2 - y1, x2 - x1
        crop = image[y1 + int(0.15 * bh):y2, x1 + bw // 5:x2 - bw // 5]
        if crop.size == 0:
            continue
        patch = cv2.resize(crop, _PATCH, interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(patch, cv2.COLOR_BGR2HSV)
        half = _PATCH[1] // 2
        parts = []
        for part in (hsv[:half], hsv[half:]):
            hist = cv2.calcHist([part], [0, 1], None, [8, 4], [0, 180, 0, 256])
            parts.append(hist.ravel())
        v = np.sqrt(np.concatenate(parts))  # Hellinger: cosine of roots ~ Bhattacharyya
        n = float(np.linalg.norm(v))
        if n > 0:
            out[k] = v / n
    return out


def similarity(a: np.ndarray[Any, np.dtype[np.float32]],
               b: np.ndarray[Any, np.dtype[np.float32]]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """(N, M) cosine similarity in [0, 1] of L2-normalised features."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return np.clip(a.astype(np.float64) @ b.astype(np.float64).T, 0.0, 1.0)
