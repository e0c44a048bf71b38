"""Multi-object tracker, ByteTrack class: constant-velocity Kalman filters plus two-stage
assignment (confident detections first, then low-score ones to keep occluded tracks alive),
with what a fixed pole camera adds:

- appearance: a colour histogram of each box (crossing/appearance.py) breaks ties between
  people walking side by side, where IoU alone cannot;
- re-identification: a confident detection that matches no live track is first compared
  with recently lost tracks by predicted position and appearance, so a person whose
  track broke behind the lamp post keeps their id instead of starting a new one;
- entry and exit areas: a track lost at the image border has left the scene and is
  dropped after `max_lost_s`; one lost in the middle of the scene (an occlusion) is
  kept for `reid_max_s`.

Sans-I/O and vectorised: every track's filter lives in one stacked numpy array, so
predict and update are a handful of matrix products per frame whatever the crowd.
Time is passed in (`t`, seconds), so skipped frames and a lower detect rate are fine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from edge_controller.crossing.appearance import DIM, features, similarity

REF_FRAME_S = 0.1  # noise parameters are per 10 fps frame, as in SORT
Arr = np.ndarray[Any, np.dtype[np.float64]]


@dataclass(frozen=True)
class TrackerParams:
    high_score: float = 0.5  # first-stage detections
    low_score: float = 0.15  # second stage keeps tracks alive through occlusion
    new_track_score: float = 0.55  # a new track needs a detection at least this sure
    match_iou: float = 0.2  # first stage: minimum IoU to match
    low_match_iou: float = 0.4  # second stage is stricter (low scores are noisier)
    confirm_hits: int = 2  # tentative until matched this many times
    max_lost_s: float = 2.0  # a track lost at the image border is kept this long
    reid_max_s: float = 5.0  # a track lost inside the scene (occlusion) is kept this long
    border_px: float = 12.0  # a box this close to the image border is leaving the scene
    app_weight: float = 2.0  # weight of appearance distance next to 1 - IoU in stage 1
    app_momentum: float = 0.9  # a track's appearance: exponential average over frames
    reid_min_sim: float = 0.85  # re-identification needs at least this appearance similarity
    reid_gate: float = 0.6  # base gate on centre distance, in box heights
    reid_gate_per_s: float = 0.8  # the gate widens by this many box heights per second lost
    coast_decay: float = 1.0  # a lost track's speed is multiplied by this per 0.1 s
    # Process noise scaled by box height (SORT/DeepSORT convention).
    std_pos: float = 1.0 / 20
    std_vel: float = 1.0 / 160


@dataclass
class Track:
    id: int
    box: Arr  # x1, y1, x2, y2 (filtered)
    score: float
    hits: int
    confirmed: bool
    last_seen: float
    velocity: tuple[float, float]  # ground-point velocity, px/s

    @property
    def foot(self) -> tuple[float, float]:
        """Ground-contact point: bottom centre of the box."""
        return float((self.box[0] + self.box[2]) / 2), float(self.box[3])


def iou_matrix(a: Arr, b: Arr) -> Arr:
    """IoU of every box in `a` (N,4+) against every box in `b` (M,4+), x1y1x2y2."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ax1, ay1, ax2, ay2 = (a[:, i, None] for i in range(4))
    bx1, by1, bx2, by2 = (b[None, :, i] for i in range(4))
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0, None)
    inter = iw * ih
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    out: Arr = inter / np.maximum(area_a + area_b - inter, 1e-9)
    return out


def _to_z(boxes: Arr) -> Arr:
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return np.stack([boxes[:, 0] + w / 2, boxes[:, 1] + h / 2, w, h], axis=1)


def _to_box(z: Arr) -> Arr:
    cx, cy, w, h = z[:, 0], z[:, 1], np.maximum(z[:, 2], 1.0), np.maximum(z[:, 3], 1.0)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _match_cost(cost: Arr, allowed: np.ndarray[Any, np.dtype[np.bool_]]
                ) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Minimum-cost one-to-one assignment restricted to `allowed` pairs."""
    if cost.size == 0:
        return [], list(range(cost.shape[0])), list(range(cost.shape[1]))
    c = np.where(allowed, cost, 1e6)
    rows, cols = linear_sum_assignment(c)
    pairs = [(int(r), int(k)) for r, k in zip(rows, cols, strict=True) if allowed[r, k]]
    mr = {r for r, _ in pairs}
    mc = {k for _, k in pairs}
    return (pairs, [r for r in range(cost.shape[0]) if r not in mr],
            [k for k in range(cost.shape[1]) if k not in mc])


def _match(iou: Arr, min_iou: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    if iou.size == 0:
        return [], list(range(iou.shape[0])), list(range(iou.shape[1]))
    rows, cols = linear_sum_assignment(-iou)
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= min_iou]
    mr = {r for r, _ in pairs}
    mc = {c for _, c in pairs}
    return (pairs, [r for r in range(iou.shape[0]) if r not in mr],
            [c for c in range(iou.shape[1]) if c not in mc])


class Tracker:
    """`update(t, detections)` with detections (N,5) x1,y1,x2,y2,score; returns live tracks."""

    _H = np.hstack([np.eye(4), np.zeros((4, 4))])

    def __init__(self, params: TrackerParams | None = None) -> None:
        self.p = params or TrackerParams()
        self.x = np.zeros((0, 8))  # state: cx, cy, w, h, vcx, vcy, vw, vh
        self.P = np.zeros((0, 8, 8))
        self.ids = np.zeros(0, dtype=np.int64)
        self.hits = np.zeros(0, dtype=np.int64)
        self.scores = np.zeros(0)
        self.last_seen = np.zeros(0)
        self.active = np.zeros(0, dtype=bool)  # matched at the last update
        self.feat = np.zeros((0, DIM), dtype=np.float32)
        self.frame_size: tuple[int, int] | None = None  # (width, height) once an image is seen
        self._next_id = 1
        self._t: float | None = None

    # ---- Kalman, vectorised over tracks -------------------------------------

    def _predict(self, dt: float) -> None:
        if not len(self.x) or dt <= 0:
            return
        f = np.eye(8)
        f[:4, 4:] = np.eye(4) * dt
        # Noise grows with elapsed time (in reference frames of 0.1 s) and box height;
        # velocities are px/s, hence the x10 on their deviation.
        k = dt / REF_FRAME_S
        h = np.maximum(self.x[:, 3], 1.0)
        sp, sv = self.p.std_pos * h, self.p.std_vel * h / REF_FRAME_S
        q = np.stack([sp, sp, sp, sp, sv, sv, sv, sv], axis=1) ** 2 * k
        # A lost track coasts: its box size stops changing (a size velocity learnt from a
        # few noisy boxes otherwise grows or shrinks it absurdly within seconds), and its
        # speed decays by `coast_decay` (1.0, no decay, measured best on frames 0-399).
        lost = ~self.active
        if lost.any():
            self.x[lost, 6:8] = 0.0
            self.x[lost, 4:6] *= self.p.coast_decay ** k
        self.x = self.x @ f.T
        self.P = f @ self.P @ f.T + np.einsum("ni,ij->nij", q, np.eye(8))

    def _update(self, idx: np.ndarray[Any, np.dtype[np.int64]], z: Arr) -> None:
        H = self._H
        h = np.maximum(z[:, 3], 1.0)
        r = (np.stack([h, h, h, h], axis=1) * self.p.std_pos) ** 2
        P = self.P[idx]
        S = H @ P @ H.T + np.einsum("ni,ij->nij", r, np.eye(4))
        K = P @ H.T @ np.linalg.inv(S)
        y = z - self.x[idx, :4]
        self.x[idx] = self.x[idx] + np.einsum("nij,nj->ni", K, y)
        self.P[idx] = (np.eye(8) - K @ H) @ P

    def _reset(self, idx: np.ndarray[Any, np.dtype[np.int64]], z: Arr) -> None:
        """Re-identified tracks jump to their detection: the old prediction is stale."""
        self.x[idx, :4] = z
        self.x[idx, 4:] *= 0.5
        h = np.maximum(z[:, 3], 1.0)
        std = np.stack([2 * self.p.std_pos * h] * 4
                       + [10 * self.p.std_vel * h / REF_FRAME_S] * 4, axis=1)
        self.P[idx] = np.einsum("ni,ij->nij", std**2, np.eye(8))

    def _spawn(self, z: Arr, scores: Arr, t: float,
               feat: np.ndarray[Any, np.dtype[np.float32]]) -> None:
        n = len(z)
        if not n:
            return
        x = np.hstack([z, np.zeros((n, 4))])
        h = np.maximum(z[:, 3], 1.0)
        std = np.stack([2 * self.p.std_pos * h] * 4
                       + [10 * self.p.std_vel * h / REF_FRAME_S] * 4, axis=1)
        P = np.einsum("ni,ij->nij", std**2, np.eye(8))
        self.x = np.vstack([self.x, x])
        self.P = np.concatenate([self.P, P])
        self.ids = np.concatenate([self.ids, np.arange(self._next_id, self._next_id + n)])
        self._next_id += n
        self.hits = np.concatenate([self.hits, np.ones(n, dtype=np.int64)])
        self.scores = np.concatenate([self.scores, scores])
        self.last_seen = np.concatenate([self.last_seen, np.full(n, t)])
        self.active = np.concatenate([self.active, np.ones(n, dtype=bool)])
        self.feat = np.concatenate([self.feat, feat])

    # ---- the frame step ------------------------------------------------------

# Long: predict, match (IoU, appearance), re-identify and coast: one step on shared arrays.
    def update(self, t: float, detections: Arr,
               image: np.ndarray[Any, np.dtype[np.uint8]] | None = None) -> list[Track]:
        """One frame: detections (N, 5) x1, y1, x2, y2, score; `image` (BGR) adds
        appearance, without it the tracker runs on motion and IoU alone."""
        det = np.asarray(detections, dtype=np.float64).reshape(-1, 5)
        if image is not None:
            self.frame_size = (image.shape[1], image.shape[0])
        dt = 0.0 if self._t is None else t - self._t
        self._t = t
        self._predict(dt)
        boxes = _to_box(self.x[:, :4]) if len(self.x) else np.zeros((0, 4))
        high_m = det[:, 4] >= self.p.high_score
        high = det[high_m]
        low = det[(det[:, 4] >= self.p.low_score) & ~high_m]
        f_high = features(image, high[:, :4])

        # Stage 1: every track (active or recently lost) against confident detections.
        iou = iou_matrix(boxes, high)
        cost = 1.0 - iou
        if image is not None and len(self.feat) and len(high):
            known = (np.linalg.norm(self.feat, axis=1) > 0)[:, None] \
                & (np.linalg.norm(f_high, axis=1) > 0)[None, :]
            cost += np.where(known, self.p.app_weight * (1.0 - similarity(self.feat, f_high)), 0)
        pairs, un_tracks, un_high = _match_cost(cost, iou >= self.p.match_iou)
        # Stage 2: tracks that were active, against low-score detections only.
        cand = [i for i in un_tracks if self.active[i]]
        pairs2, _, _ = _match(iou_matrix(boxes[cand], low), self.p.low_match_iou)
        # Stage 3: lost confirmed tracks against the confident detections left over.
        lost = [i for i in un_tracks if not self.active[i] and self.hits[i] >= self.p.confirm_hits]
        pairs3 = self._reidentify(t, boxes, lost, high, f_high, un_high)
        matched_t = [r for r, _ in pairs] + [cand[r] for r, _ in pairs2]
        matched_z = [high[c, :4] for _, c in pairs] + [low[c, :4] for _, c in pairs2]
        matched_s = [high[c, 4] for _, c in pairs] + [low[c, 4] for _, c in pairs2]

        self.active[:] = False
        if matched_t:
            idx = np.asarray(matched_t, dtype=np.int64)
            self._update(idx, _to_z(np.asarray(matched_z)))
            self.hits[idx] += 1
            self.scores[idx] = matched_s
            self.last_seen[idx] = t
            self.active[idx] = True
        if pairs3:
            idx = np.asarray([r for r, _ in pairs3], dtype=np.int64)
            cols = [c for _, c in pairs3]
            self._reset(idx, _to_z(high[cols, :4]))
            self.hits[idx] += 1
            self.scores[idx] = high[cols, 4]
            self.last_seen[idx] = t
            self.active[idx] = True
        self._learn_appearance([(r, c) for r, c in pairs] + pairs3, high, f_high)
        used = {c for _, c in pairs3}
        rest = [c for c in un_high if c not in used]
        fresh_m = high[rest, 4] >= self.p.new_track_score
        fresh = high[rest][fresh_m]
        self._spawn(_to_z(fresh[:, :4]), fresh[:, 4], t, f_high[rest][fresh_m])

        lost_for = t - self.last_seen
        keep = lost_for <= np.where(self._at_border(), self.p.max_lost_s,
                                    max(self.p.reid_max_s, self.p.max_lost_s))
        # A tentative track that missed is noise, not a lost person.
        keep &= self.active | (self.hits >= self.p.confirm_hits)
        for name in ("x", "P", "ids", "hits", "scores", "last_seen", "active", "feat"):
            setattr(self, name, getattr(self, name)[keep])
        return self.tracks()

    def _at_border(self) -> np.ndarray[Any, np.dtype[np.bool_]]:
        if self.frame_size is None or not len(self.x):
            return np.ones(len(self.x), dtype=bool)  # no scene known: lose tracks quickly
        w, h = self.frame_size
        b = _to_box(self.x[:, :4])
        m = self.p.border_px
        out: np.ndarray[Any, np.dtype[np.bool_]] = (
            (b[:, 0] <= m) | (b[:, 1] <= m) | (b[:, 2] >= w - m) | (b[:, 3] >= h - m))
        return out

    def _reidentify(self, t: float, boxes: Arr, lost: list[int], high: Arr,
                    f_high: np.ndarray[Any, np.dtype[np.float32]],
                    un_high: list[int]) -> list[tuple[int, int]]:
        """(track index, detection index) pairs: lost tracks found again."""
        if not lost or not un_high:
            return []
        tb = boxes[lost]
        db = high[un_high, :4]
        tc = np.stack([(tb[:, 0] + tb[:, 2]) / 2, (tb[:, 1] + tb[:, 3]) / 2], axis=1)
        dc = np.stack([(db[:, 0] + db[:, 2]) / 2, (db[:, 1] + db[:, 3]) / 2], axis=1)
        th = np.maximum(tb[:, 3] - tb[:, 1], 1.0)
        dh = np.maximum(db[:, 3] - db[:, 1], 1.0)
        scale = np.maximum(th[:, None], dh[None, :])
        dist = np.linalg.norm(tc[:, None, :] - dc[None, :, :], axis=2) / scale
        away = (t - self.last_seen[lost])[:, None]
        gate = self.p.reid_gate + self.p.reid_gate_per_s * away
        ratio = th[:, None] / dh[None, :]
        sim = similarity(self.feat[lost], f_high[un_high])
        ok = (dist <= gate) & (ratio > 0.67) & (ratio < 1.5) & (sim >= self.p.reid_min_sim)
        cost = dist / np.maximum(gate, 1e-6) + (1.0 - sim)
        pairs, _, _ = _match_cost(cost, ok)
        return [(lost[r], un_high[c]) for r, c in pairs]

    def _learn_appearance(self, pairs: list[tuple[int, int]], high: Arr,
                          f_high: np.ndarray[Any, np.dtype[np.float32]]) -> None:
        """Average in the new look, but not from a box that overlaps another person's:
        there the histogram mixes two people."""
        if not pairs:
            return
        ov = iou_matrix(high[:, :4], high[:, :4])
        np.fill_diagonal(ov, 0.0)
        m = self.p.app_momentum
        for r, c in pairs:
            f = f_high[c]
            if not f.any() or (len(ov) and ov[c].max() > 0.2):
                continue
            cur = self.feat[r]
            v = f if not cur.any() else m * cur + (1 - m) * f
            n = float(np.linalg.norm(v))
            self.feat[r] = v / n if n > 0 else v

    def tracks(self, include_lost: bool = False) -> list[Track]:
        out = []
        boxes = _to_box(self.x[:, :4]) if len(self.x) else np.zeros((0, 4))
        for i in range(len(self.x)):
            confirmed = bool(self.hits[i] >= self.p.confirm_hits)
            if not confirmed or not (self.active[i] or include_lost):
                continue
            vx, vy, vh = self.x[i, 4], self.x[i, 5], self.x[i, 7]
            out.append(Track(int(self.ids[i]), boxes[i], float(self.scores[i]),
                             int(self.hits[i]), confirmed, float(self.last_seen[i]),
                             (float(vx), float(vy + vh / 2))))
        return out
