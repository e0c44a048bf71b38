"""Image arithmetic the estimator runs on: linear light from sRGB, block sums and maxima
over patches, and the band-pass that keeps only fine texture."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

F32 = np.ndarray[Any, np.dtype[Any]]  # float32 images and patch maps
B8 = np.ndarray[Any, np.dtype[np.bool_]]
U8 = np.ndarray[Any, np.dtype[np.uint8]]
Boxes = np.ndarray[Any, np.dtype[Any]]


def _srgb_lut() -> F32:
    x = np.arange(256, dtype=np.float64) / 255.0
    lin = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    return lin.astype(np.float32)


SRGB_TO_LINEAR = _srgb_lut()


def patch_sum(x: F32, ph: int, pw: int) -> F32:
    """Sums over ph x pw blocks (the image cropped to whole blocks)."""
    h, w = x.shape[:2]
    ny, nx = h // ph, w // pw
    x = np.ascontiguousarray(x[: ny * ph, : nx * pw])
    # INTER_AREA at an integer factor is the exact block mean, and fast.
    mean = cv2.resize(x, (nx, ny), interpolation=cv2.INTER_AREA)
    out: F32 = mean * np.float32(ph * pw)
    return out


def bandpass(img: F32, sigma: float) -> F32:
    """Fine texture: the image minus its blur (two box passes, about a Gaussian of
    `sigma`). Smooth airlight, smooth illumination (the lamp's fall-off) and
    offsets all vanish."""
    k = max(3, 2 * round((math.sqrt(6 * sigma * sigma + 1) - 1) / 2) + 1)
    blur = cv2.boxFilter(img, -1, (k, k), borderType=cv2.BORDER_REFLECT)
    blur = cv2.boxFilter(blur, -1, (k, k), borderType=cv2.BORDER_REFLECT)
    out: F32 = img - blur
    return out


def patch_max(x: F32, ph: int, pw: int) -> F32:
    h, w = x.shape[:2]
    ny, nx = h // ph, w // pw
    out: F32 = x[: ny * ph, : nx * pw].reshape(ny, ph, nx, pw).max(axis=(1, 3))
    return out
