"""Tiles, zone crops, windows and the merge (pure functions), plus one real frame where a
person straddles a tile border."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_controller.detect import DetectorConfig, Model
from edge_controller.detect.boxes import areas, intersections, iou_matrix
from edge_controller.detect.config import SSD_INT8
from edge_controller.detect.tiling import (
    PassResult,
    cover,
    grid_regions,
    merge,
    pass_result,
    zone_regions,
)


@given(w=st.integers(64, 2000), h=st.integers(64, 2000), cols=st.integers(1, 5),
       rows=st.integers(1, 5), overlap=st.floats(0, 0.5), top=st.floats(0, 0.5))
def test_grid_covers_the_frame_below_top(w, h, cols, rows, overlap, top) -> None:
    regs = grid_regions(w, h, cols, rows, overlap, top)
    assert len(regs) == cols * rows
    mask = np.zeros((h, w), dtype=bool)
    for x1, y1, x2, y2 in regs:
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        mask[y1:y2, x1:x2] = True
    assert mask[round(h * top):].all()


def test_grid_overlap_is_a_fraction_of_the_tile() -> None:
    a, c = grid_regions(1000, 500, 2, 1, 0.2)
    assert a == (0, 0, 556, 500) and c == (444, 0, 1000, 500)


def test_zone_regions_bound_polygons_with_margin() -> None:
    zones = [[[100, 100], [200, 120], [150, 300]], [[-50, -50], [10, -50], [10, 10]]]
    regs = zone_regions(zones, 640, 480, margin=10)
    assert regs[0] == (90, 90, 210, 310)
    assert regs[1] == (0, 0, 20, 20)  # clipped to the frame
    assert zone_regions([[[300, 200], [310, 200], [305, 210]]], 640, 480) == [
        (273, 173, 337, 237)]  # a tiny zone is grown to 64 x 64 around its centre


def test_cover_holds_every_item_whole() -> None:
    items = np.array([[10, 10, 40, 90], [60, 20, 90, 100], [500, 300, 530, 380],
                      [700, 50, 760, 400]], dtype=float)
    wins = cover(items, (300, 280), 768, 576, margin=8)
    assert len(wins) == 3  # two people close together share a window; the tall one alone
    for b in items:
        assert any(x1 <= b[0] and y1 <= b[1] and x2 >= b[2] and y2 >= b[3]
                   for x1, y1, x2, y2 in wins), b


def res(boxes, cut=None) -> PassResult:
    d = np.asarray(boxes, dtype=np.float32).reshape(-1, 5)
    c = np.zeros(len(d), bool) if cut is None else np.asarray(cut, bool)
    return PassResult(d, c)


def test_merge_drops_fragments_cut_at_a_border() -> None:
    full = res([[100, 100, 130, 180, 0.7]])
    fragment = res([[100, 100, 118, 180, 0.9]], cut=[True])  # higher score but cut
    out = merge([fragment, full])
    np.testing.assert_allclose(out, [[100, 100, 130, 180, 0.7]])


def test_merge_drops_a_group_box_holding_two_people() -> None:
    group = res([[100, 100, 170, 200, 0.95]])
    people = res([[100, 102, 132, 198, 0.8], [138, 100, 170, 200, 0.7]])
    out = merge([group, people])
    assert len(out) == 2 and not (out[:, 4] == np.float32(0.95)).any()


def test_merge_keeps_distinct_people_and_nms_duplicates() -> None:
    a = res([[0, 0, 30, 80, 0.9], [200, 0, 230, 80, 0.8]])
    b = res([[2, 1, 31, 82, 0.85]])
    out = merge([a, b])
    assert len(out) == 2


def same_person(dets: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """[det, gt]: the detection is that person (IoU >= 0.3 or mostly inside the gt box)."""
    inside = intersections(dets[:, :4], gt) / np.maximum(areas(dets[:, :4])[:, None], 1e-9)
    return (iou_matrix(dets[:, :4], gt) >= 0.3) | (inside >= 0.7)


def test_person_straddling_a_tile_border_is_reported_once(pets_frames, pets_gt) -> None:
    frame = 50
    img, gt = pets_frames[frame], pets_gt[frame]
    h, w = img.shape[:2]
    regs = grid_regions(w, h, 3, 2, 0.2, 0.15)
    inner_x = {r[0] for r in regs if r[0] > 0} | {r[2] for r in regs if r[2] < w}
    inner_y = {r[1] for r in regs if r[1] > regs[0][1]} | {r[3] for r in regs if r[3] < h}
    straddling = [g for g in gt if any(g[0] < x < g[2] for x in inner_x)
                  or any(g[1] < y < g[3] for y in inner_y)]
    assert straddling, "fixture frame must have a person across a tile border"
    model = Model(DetectorConfig(model=SSD_INT8, score_threshold=0.3))
    parts = [pass_result(model.detect(img[y1:y2, x1:x2]), r, w, h, 4)
             for r in regs for (x1, y1, x2, y2) in [r]]
    raw = np.concatenate([p.dets for p in parts])
    # without the merge, people seen by two tiles are reported twice
    assert (same_person(raw, np.asarray(straddling)).sum(axis=0) >= 2).any()
    merged = merge(parts)
    counts = same_person(merged, gt).sum(axis=0)
    assert counts.max() <= 1, counts
    best = iou_matrix(merged[:, :4], np.asarray(straddling)).max(axis=0)
    assert (best >= 0.5).all(), best


@pytest.mark.parametrize("n", [0, 1])
def test_merge_of_nothing(n) -> None:
    assert merge([res([])] * n).shape == (0, 5)
