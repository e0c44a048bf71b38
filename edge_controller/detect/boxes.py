"""Box arithmetic shared by the decoders, the tile merge and the benchmark (pure numpy).

A detection array is float32 of shape (N, 5): `[x1, y1, x2, y2, score]` in pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Detections = npt.NDArray[np.float32]
"""(N, 5) float32: x1, y1, x2, y2, score in pixels of the original frame."""

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]


def empty() -> Detections:
    return np.zeros((0, 5), dtype=np.float32)


def as_detections(a: npt.ArrayLike) -> Detections:
    """Coerce to a (N, 5) float32 array (an empty input gives shape (0, 5))."""
    arr = np.asarray(a, dtype=np.float32)
    if arr.size == 0:
        return empty()
    return np.ascontiguousarray(arr.reshape(-1, 5))


def areas(b: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    b = np.asarray(b, dtype=np.float64)
    out: npt.NDArray[np.float64] = (np.clip(b[:, 2] - b[:, 0], 0, None)
                                    * np.clip(b[:, 3] - b[:, 1], 0, None))
    return out


def intersections(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """(len(a), len(b)) intersection areas of boxes given as rows starting x1, y1, x2, y2."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    out: npt.NDArray[np.float64] = np.clip(w, 0, None) * np.clip(h, 0, None)
    return out


def iou_matrix(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """(len(a), len(b)) intersection over union."""
    inter = intersections(a, b)
    union = areas(a)[:, None] + areas(b)[None, :] - inter
    out: npt.NDArray[np.float64] = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    return out


def nms(boxes: npt.NDArray[Any], scores: npt.NDArray[Any], iou_threshold: float) -> IntArray:
    """Greedy non-maximum suppression; indices of the kept boxes, best score first."""
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    iou = iou_matrix(boxes, boxes)
    suppressed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= iou[i] > iou_threshold
    return np.asarray(keep, dtype=np.intp)


def clip_to(dets: Detections, width: int, height: int) -> Detections:
    out = dets.copy()
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height)
    return out


def drop_degenerate(dets: Detections, min_size: float = 1.0) -> Detections:
    keep = ((dets[:, 2] - dets[:, 0]) >= min_size) & ((dets[:, 3] - dets[:, 1]) >= min_size)
    return dets[keep]
