"""Detection accuracy against MOT ground truth: IoU matching and precision/recall.

Used by `bench/detect_bench.py` (and usable from a notebook). Pure numpy: the
assignment is a small Hungarian algorithm (scipy may be absent).

Ground truth: MOTChallenge `gt.txt` rows `frame,id,left,top,width,height,considered,...`
with 1-based frames (video frame i is gt frame i + 1). Boxes with considered = 0
count neither way: a detection matching one is neither TP nor FP, and missing
one is not a FN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def load_gt(path: Path) -> dict[int, tuple[FloatArray, FloatArray]]:
    """Video frame index (0-based) -> (considered boxes, ignored boxes), each (N, 4) xyxy."""
    rows = np.loadtxt(path, delimiter=",", ndmin=2)
    out: dict[int, tuple[FloatArray, FloatArray]] = {}
    for f in np.unique(rows[:, 0]).astype(int):
        r = rows[rows[:, 0] == f]
        xyxy = np.stack([r[:, 2], r[:, 3], r[:, 2] + r[:, 4], r[:, 3] + r[:, 5]], axis=1)
        cons = r[:, 6] != 0
        out[int(f) - 1] = (xyxy[cons], xyxy[~cons])
    return out


def iou(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> FloatArray:
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    aa = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    ab = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = aa[:, None] + ab[None, :] - inter
    out: FloatArray = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    return out


def hungarian(cost: npt.NDArray[Any]) -> list[tuple[int, int]]:
    """Minimum-cost assignment of a rectangular cost matrix (rows <-> columns).

    Shortest augmenting path (Jonker-Volgenant style potentials), O(n^2 m).
    Returns (row, col) pairs, one per row if rows <= cols, else one per column.
    """
    c = np.asarray(cost, dtype=np.float64)
    transposed = c.shape[0] > c.shape[1]
    if transposed:
        c = c.T
    n, m = c.shape
    if n == 0:
        return []
    inf = float("inf")
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, dtype=int)  # p[j]: row (1-based) assigned to column j
    way = np.zeros(m + 1, dtype=int)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            cur = c[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            used_idx = np.flatnonzero(used)
            u[p[used_idx]] += delta
            v[used_idx] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while True:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
            if j0 == 0:
                break
    pairs = [(int(p[j]) - 1, j - 1) for j in range(1, m + 1) if p[j] != 0]
    return [(b, a) for a, b in pairs] if transposed else pairs


def match(dets: npt.NDArray[Any], gt: npt.NDArray[Any],
          iou_threshold: float = 0.5) -> list[tuple[int, int]]:
    """Maximum matching of detections to gt boxes with IoU >= threshold (best total IoU)."""
    if len(dets) == 0 or len(gt) == 0:
        return []
    m = iou(dets[:, :4], gt)
    cost = np.where(m >= iou_threshold, 1.0 - m, 1e6)
    return [(d, g) for d, g in hungarian(cost) if m[d, g] >= iou_threshold]


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    ignored: int = 0
    frames: int = 0
    per_frame: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    def add(self, dets: npt.NDArray[Any], considered: npt.NDArray[Any],
            ignored: npt.NDArray[Any], iou_threshold: float = 0.5) -> None:
        dets = np.asarray(dets, dtype=np.float64).reshape(-1, 5)
        pairs = match(dets, considered, iou_threshold)
        tp = len(pairs)
        matched = {d for d, _ in pairs}
        rest = np.asarray([i for i in range(len(dets)) if i not in matched], dtype=int)
        ign = 0
        if len(rest) and len(ignored):
            ign = len(match(dets[rest], ignored, iou_threshold))
        fp = len(dets) - tp - ign
        fn = len(considered) - tp
        self.tp += tp
        self.fp += fp
        self.fn += fn
        self.ignored += ign
        self.frames += 1
        self.per_frame.append((tp, fp, fn))


def evaluate(results: dict[int, npt.NDArray[Any]],
             gt: dict[int, tuple[FloatArray, FloatArray]],
             frames: range) -> Counts:
    """P/R over `frames`; a frame missing from `results` counts as no detections."""
    c = Counts()
    none4 = np.zeros((0, 4))
    for f in frames:
        cons, ign = gt.get(f, (none4, none4))
        c.add(results.get(f, np.zeros((0, 5))), cons, ign)
    return c
