"""Where the model looks (whole frame, tiles, zone crops) and how the looks are merged.

Pure functions on numbers and arrays. A region is `(x1, y1, x2, y2)` in integer
pixels of the frame, end-exclusive. Each pass yields detections in the region's
own pixels; `to_frame` shifts them into the frame and `cut_at_border` flags the
ones touching a region border that is not a frame border (a person cut by the
tile edge). `merge` then removes duplicates across passes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_controller.detect.boxes import (
    BoolArray,
    Detections,
    areas,
    empty,
    intersections,
    iou_matrix,
)

Region = tuple[int, int, int, int]
PolygonLike = Sequence[Sequence[float]]


def grid_regions(width: int, height: int, cols: int, rows: int, overlap: float,
                 top: float = 0.0) -> list[Region]:
    """`cols` x `rows` equal tiles covering the frame below `top` (a fraction of the
    height), neighbours overlapping by `overlap` of the tile size. Row-major order."""
    if cols < 1 or rows < 1:
        raise ValueError("cols and rows must be >= 1")
    if not 0 <= overlap < 1:
        raise ValueError("overlap must be in [0, 1)")
    y0 = round(height * top)
    span_h = height - y0
    tw = width / (cols - (cols - 1) * overlap)
    th = span_h / (rows - (rows - 1) * overlap)
    out: list[Region] = []
    for r in range(rows):
        for c in range(cols):
            x1 = c * tw * (1 - overlap)
            y1 = y0 + r * th * (1 - overlap)
            x2 = width if c == cols - 1 else x1 + tw
            y2 = height if r == rows - 1 else y1 + th
            out.append((round(x1), round(y1), round(x2), round(y2)))
    return out


def polygon_bbox(poly: PolygonLike) -> tuple[float, float, float, float]:
    pts = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        raise ValueError("a zone polygon needs at least 3 points")
    return (float(pts[:, 0].min()), float(pts[:, 1].min()),
            float(pts[:, 0].max()), float(pts[:, 1].max()))


def zone_regions(zones: Sequence[PolygonLike], width: int, height: int,
                 margin: int = 0, min_size: int = 64) -> list[Region]:
    """One crop per zone: its bounding box plus `margin`, grown to at least `min_size`
    on each side, clipped to the frame. Zones outside the frame give no crop;
    duplicates are dropped."""
    out: list[Region] = []
    for poly in zones:
        bx1, by1, bx2, by2 = polygon_bbox(poly)
        x1, x2 = _grow(bx1 - margin, bx2 + margin, min_size)
        y1, y2 = _grow(by1 - margin, by2 + margin, min_size)
        r = (max(0, math.floor(x1)), max(0, math.floor(y1)),
             min(width, math.ceil(x2)), min(height, math.ceil(y2)))
        if r[2] - r[0] >= 2 and r[3] - r[1] >= 2 and r not in out:
            out.append(r)
    return out


def _grow(lo: float, hi: float, min_size: float) -> tuple[float, float]:
    short = min_size - (hi - lo)
    return (lo - short / 2, hi + short / 2) if short > 0 else (lo, hi)


def zone_mask(zones: Sequence[PolygonLike], width: int, height: int) -> np.ndarray:
    """uint8 mask (height, width), 1 inside any zone."""
    import cv2

    mask = np.zeros((height, width), dtype=np.uint8)
    for poly in zones:
        pts = np.round(np.asarray(poly, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(mask, [pts], 1)
    return mask


def to_frame(dets: Detections, region: Region) -> Detections:
    """Shift detections from a region's pixels into the frame's."""
    out = dets.copy()
    out[:, [0, 2]] += region[0]
    out[:, [1, 3]] += region[1]
    return out


def cut_at_border(dets: Detections, region: Region, width: int, height: int,
                  edge_px: float) -> BoolArray:
    """True for boxes (frame pixels) within `edge_px` of an inner border of `region`."""
    x1, y1, x2, y2 = region
    cut = np.zeros(len(dets), dtype=bool)
    if x1 > 0:
        cut |= dets[:, 0] <= x1 + edge_px
    if y1 > 0:
        cut |= dets[:, 1] <= y1 + edge_px
    if x2 < width:
        cut |= dets[:, 2] >= x2 - edge_px
    if y2 < height:
        cut |= dets[:, 3] >= y2 - edge_px
    return cut


@dataclass(frozen=True)
class PassResult:
    """Detections of one pass (frame pixels) and which of them are cut at the pass's border."""

    dets: Detections
    cut: BoolArray


def pass_result(dets_in_region: Detections, region: Region, width: int, height: int,
                edge_px: float) -> PassResult:
    d = to_frame(dets_in_region, region)
    return PassResult(d, cut_at_border(d, region, width, height, edge_px))


def _overlaps(dets: Detections) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU, area share of the smaller box inside the other, and areas (all pairs)."""
    inter = intersections(dets, dets)
    a = areas(dets)
    frac = inter / np.maximum(np.minimum(a[:, None], a[None, :]), 1e-9)
    return iou_matrix(dets, dets), frac, a


def group_boxes(dets: Detections, contain: float, merge_iou: float) -> BoolArray:
    """True for boxes that hold two or more distinct smaller boxes (people walking
    together seen as one at low resolution, while another pass separated them)."""
    n = len(dets)
    out = np.zeros(n, dtype=bool)
    if n < 3:
        return out
    iou, frac, a = _overlaps(dets)
    for i in range(n):
        js = np.flatnonzero((frac[i] >= contain) & (a < 0.75 * a[i]))
        if len(js) < 2:
            continue
        sub_iou = iou[np.ix_(js, js)]
        sub_frac = frac[np.ix_(js, js)]
        distinct = (sub_iou < merge_iou) & (sub_frac < contain)
        out[i] = bool(np.triu(distinct, 1).any())
    return out


def _span_iou(a1: float, a2: float, b1: float, b2: float) -> float:
    inter = min(a2, b2) - max(a1, b1)
    union = max(a2, b2) - min(a1, b1)
    return max(0.0, inter) / union if union > 0 else 0.0


def join_cut(dets: Detections, cut: BoolArray, src: np.ndarray,
             align: float = 0.6) -> tuple[Detections, BoolArray]:
    """Join the two halves of a person cut by a tile border that the tile overlap could
    not hold whole: two cut boxes from different passes that overlap, line up across the
    cut (1-D IoU >= `align` on the other axis) and extend each other become their union
    (best score, no longer cut)."""
    dets, cut = dets.copy(), cut.copy()
    alive = np.ones(len(dets), dtype=bool)
    idx = [int(i) for i in np.flatnonzero(cut)]
    for a in idx:
        for b in idx:
            if b <= a or not (alive[a] and alive[b]) or src[a] == src[b]:
                continue
            p, q = dets[a], dets[b]
            if min(p[2], q[2]) <= max(p[0], q[0]) or min(p[3], q[3]) <= max(p[1], q[1]):
                continue
            xi = _span_iou(p[0], p[2], q[0], q[2])
            yi = _span_iou(p[1], p[3], q[1], q[3])
            if (xi >= align and yi < align) or (yi >= align and xi < align):
                dets[a, :4] = [min(p[0], q[0]), min(p[1], q[1]), max(p[2], q[2]),
                               max(p[3], q[3])]
                dets[a, 4] = max(p[4], q[4])
                cut[a] = False
                alive[b] = False
    return dets[alive], cut[alive]


def merge(passes: Sequence[PassResult], merge_iou: float = 0.45,
          contain: float = 0.7) -> Detections:
    """Detections of all passes without duplicates.

    1. Halves of a person cut by a tile border in two passes are joined (`join_cut`).
    2. A box that holds two or more distinct smaller boxes is a merged group: dropped.
    3. Greedy suppression, uncut boxes before cut ones, then by score: a box is
       dropped when its IoU with a kept box exceeds `merge_iou`, or when one of the
       two lies at least `contain` inside the other (a fragment of a person cut at a
       tile border, or the same person seen whole and in part).
    """
    parts = [p for p in passes if len(p.dets)]
    if not parts:
        return empty()
    dets = np.concatenate([p.dets for p in parts]).astype(np.float32)
    cut = np.concatenate([p.cut for p in parts])
    src = np.concatenate([np.full(len(p.dets), k) for k, p in enumerate(parts)])
    dets, cut = join_cut(dets, cut, src)
    keep_mask = ~group_boxes(dets, contain, merge_iou)
    dets, cut = dets[keep_mask], cut[keep_mask]
    order = np.lexsort((-dets[:, 4], cut))  # uncut first, then best score
    iou, frac, _ = _overlaps(dets)
    kept: list[int] = []
    for i in order:
        if kept and ((iou[i, kept] > merge_iou).any() or (frac[i, kept] >= contain).any()):
            continue
        kept.append(int(i))
    return dets[np.asarray(kept, dtype=np.intp)]


def cover(items: np.ndarray, size: tuple[int, int], width: int, height: int,
          margin: int = 0) -> list[Region]:
    """Windows of `size` (w, h) that together hold every item box (x1, y1, x2, y2) whole,
    plus `margin`; greedy from the left, each window placed to hold as many boxes as it
    can and centred on them, then shifted into the frame. An item larger than a window
    gets a window of its own size. Pure; few windows, not provably the fewest."""
    ww, wh = min(size[0], width), min(size[1], height)
    if len(items) == 0:
        return []
    b = np.asarray(items, dtype=np.float64).reshape(-1, 4)[:, :4].copy()
    b[:, :2] -= margin
    b[:, 2:] += margin
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, width)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, height)
    left = list(np.argsort(b[:, 0], kind="stable"))
    out: list[Region] = []
    while left:
        i = left[0]
        cand = b[left]
        best: list[int] = []
        for y0 in {min(b[i, 1], c[1]) for c in cand}:
            x0 = b[i, 0]
            inside = [j for j in left
                      if b[j, 0] >= x0 and b[j, 2] <= x0 + ww and b[j, 1] >= y0
                      and b[j, 3] <= y0 + wh]
            if i in inside and len(inside) > len(best):
                best = inside
        if not best:
            best = [i]
        u = b[best]
        ux1, uy1, ux2, uy2 = u[:, 0].min(), u[:, 1].min(), u[:, 2].max(), u[:, 3].max()
        rw, rh = max(ww, ux2 - ux1), max(wh, uy2 - uy1)
        cx, cy = (ux1 + ux2) / 2, (uy1 + uy2) / 2
        x1 = float(np.clip(cx - rw / 2, 0, max(0.0, width - rw)))
        y1 = float(np.clip(cy - rh / 2, 0, max(0.0, height - rh)))
        r = (math.floor(x1), math.floor(y1), min(width, math.ceil(x1 + rw)),
             min(height, math.ceil(y1 + rh)))
        out.append(r)
        done = set(best)
        left = [j for j in left if j not in done]
    return out
