"""CLEAR-MOT (MOTA) and identity (IDF1) metrics, written out here rather than taken from
py-motmetrics (whose 1.4.0 calls np.asfarray, gone in NumPy 2). Independent of the
product: it imports nothing from edge_controller.

Ground truth: MOTChallenge rows `frame,id,left,top,width,height,considered,...`.
Boxes with considered=0 are ignore regions: a hypothesis matched to one (IoU >= 0.5)
is dropped before scoring, and the box itself never counts as a miss.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

Boxes = dict[int, list[tuple[int, np.ndarray]]]  # frame -> [(id, x1y1x2y2)]


def load_gt(path: Path, first: int, last: int) -> tuple[Boxes, Boxes]:
    """(considered, ignored) boxes keyed by 0-based video frame, frames first..last."""
    keep: Boxes = defaultdict(list)
    ign: Boxes = defaultdict(list)
    for line in path.read_text().splitlines():
        f = line.split(",")
        frame = int(float(f[0])) - 1
        if not first <= frame <= last:
            continue
        x, y, w, h = (float(v) for v in f[2:6])
        box = np.array([x, y, x + w, y + h])
        (keep if int(float(f[6])) else ign)[frame].append((int(float(f[1])), box))
    return keep, ign


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    aa = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    ab = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(aa[:, None] + ab[None, :] - inter, 1e-9)


@dataclass
class MotResult:
    mota: float
    idf1: float
    gt: int
    fp: int
    fn: int
    idsw: int
    idtp: int
    idfp: int
    idfn: int


def _drop_ignored(hyp: list[tuple[int, np.ndarray]], ign: list[tuple[int, np.ndarray]],
                  gt: list[tuple[int, np.ndarray]]) -> list[tuple[int, np.ndarray]]:
    if not hyp or not ign:
        return hyp
    hb = np.array([b for _, b in hyp])
    m_ign = iou(hb, np.array([b for _, b in ign])).max(axis=1)
    m_gt = iou(hb, np.array([b for _, b in gt])).max(axis=1) if gt else np.zeros(len(hyp))
    return [h for h, mi, mg in zip(hyp, m_ign, m_gt, strict=True) if not (mi >= 0.5 and mi > mg)]


def evaluate(gt: Boxes, ign: Boxes, hyp: Boxes, frames: range, thr: float = 0.5) -> MotResult:
    fp = fn = idsw = n_gt = 0
    last_match: dict[int, int] = {}  # gt id -> hyp id
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    gt_count: dict[int, int] = defaultdict(int)
    hyp_count: dict[int, int] = defaultdict(int)
    for f in frames:
        g = gt.get(f, [])
        h = _drop_ignored(hyp.get(f, []), ign.get(f, []), g)
        n_gt += len(g)
        for gid, _ in g:
            gt_count[gid] += 1
        for hid, _ in h:
            hyp_count[hid] += 1
        if g and h:
            m = iou(np.array([b for _, b in g]), np.array([b for _, b in h]))
            # CLEAR-MOT: keep last frame's correspondences when still valid.
            cost = 1 - m
            for gi, (gid, _) in enumerate(g):
                for hi, (hid, _) in enumerate(h):
                    if last_match.get(gid) == hid and m[gi, hi] >= thr:
                        cost[gi, hi] -= 10
            cost[m < thr] = 1e6
            rows, cols = linear_sum_assignment(cost)
            pairs = [(r, c) for r, c in zip(rows, cols, strict=True) if m[r, c] >= thr]
            for r, c in pairs:
                gid, hid = g[r][0], h[c][0]
                if gid in last_match and last_match[gid] != hid:
                    idsw += 1
                last_match[gid] = hid
            fp += len(h) - len(pairs)
            fn += len(g) - len(pairs)
            for gi in range(len(g)):
                for hi in range(len(h)):
                    if m[gi, hi] >= thr:
                        pair_counts[(g[gi][0], h[hi][0])] += 1
        else:
            fp += len(h)
            fn += len(g)
    # IDF1: one-to-one global assignment of gt ids to hyp ids maximising co-occurrence.
    gids, hids = sorted(gt_count), sorted(hyp_count)
    idtp = 0
    if gids and hids:
        gi = {g: i for i, g in enumerate(gids)}
        hi = {h: i for i, h in enumerate(hids)}
        w = np.zeros((len(gids), len(hids)))
        for (g_, h_), n in pair_counts.items():
            w[gi[g_], hi[h_]] = n
        r, c = linear_sum_assignment(-w)
        idtp = int(w[r, c].sum())
    total_gt = sum(gt_count.values())
    total_hyp = sum(hyp_count.values())
    idfp, idfn = total_hyp - idtp, total_gt - idtp
    mota = 1 - (fp + fn + idsw) / max(n_gt, 1)
    idf1 = 2 * idtp / max(2 * idtp + idfp + idfn, 1)
    return MotResult(mota, idf1, n_gt, fp, fn, idsw, idtp, idfp, idfn)
