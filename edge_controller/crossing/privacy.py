"""Nobody's identity leaves the pole: every image that does is blurred where people are."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

Image = np.ndarray[Any, np.dtype[np.uint8]]


def blur_people(image: Image, boxes: np.ndarray[Any, np.dtype[Any]], pad: float = 0.15) -> Image:
    """A copy of `image` with each box (x1, y1, x2, y2, ...) padded and heavily blurred.

    The kernel scales with the box so a face cannot be recovered at any distance;
    a pixelation pass first removes detail that a blur alone leaves recoverable.
    """
    out = image.copy()
    h, w = out.shape[:2]
    arr = np.asarray(boxes, dtype=np.float64)
    arr = arr.reshape(-1, arr.shape[-1]) if arr.size else np.zeros((0, 4))
    for b in arr:
        bw, bh = b[2] - b[0], b[3] - b[1]
        x1 = int(max(0, b[0] - pad * bw))
        y1 = int(max(0, b[1] - pad * bh))
        x2 = int(min(w, b[2] + pad * bw))
        y2 = int(min(h, b[3] + pad * bh))
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        small = cv2.resize(out[y1:y2, x1:x2], (max(1, (x2 - x1) // 8), max(1, (y2 - y1) // 8)),
                           interpolation=cv2.INTER_AREA)
        blocky = cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)
        k = max(3, (min(x2 - x1, y2 - y1) // 3) | 1)
        out[y1:y2, x1:x2] = cv2.GaussianBlur(blocky, (k, k), 0)
    return out


def anonymise(image: Image, boxes: np.ndarray[Any, np.dtype[Any]], coarse: int = 4) -> Image:
    """For anything that leaves the pole or goes to a file: the detector misses some
    people (pairs merge, the distant and the occluded), so blurring boxes alone cannot
    promise that every person is unrecognisable. The whole frame is coarsened first
    (each `coarse` x `coarse` block averaged: a person at pole distance keeps a shape
    but no face), then detected people are blurred heavily on top."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, w // coarse), max(1, h // coarse)),
                       interpolation=cv2.INTER_AREA)
    base = np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), dtype=np.uint8)
    return blur_people(base, boxes)


def snapshot_jpeg(image: Image, boxes: np.ndarray[Any, np.dtype[Any]], max_bytes: int) -> bytes:
    """An anonymised JPEG no larger than `max_bytes` (quality, then scale, are lowered)."""
    img = anonymise(image, boxes)
    scale = 1.0
    while True:
        frame = img if scale == 1.0 else cv2.resize(
            img, (max(16, int(img.shape[1] * scale)), max(16, int(img.shape[0] * scale))),
            interpolation=cv2.INTER_AREA)
        for q in (80, 65, 50, 35):
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, q])
            if ok and len(buf) <= max_bytes:
                return bytes(buf)
        if scale < 0.1:
            raise ValueError(f"cannot fit a snapshot into {max_bytes} bytes")
        scale *= 0.7
