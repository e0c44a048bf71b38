"""The shipped ONNX models load and find people where the PETS09 ground truth has them."""

from __future__ import annotations

import numpy as np
import pytest

from edge_controller.detect import DetectorConfig, Model, decode_ssd
from edge_controller.detect.boxes import iou_matrix
from edge_controller.detect.config import SSD_FP32, SSD_INT8
from edge_controller.detect.model import decode_ssd_raw
from edge_controller.detect.tiling import grid_regions, merge, pass_result

FRAMES = (50, 150, 300)


def matched(dets: np.ndarray, gt: np.ndarray, thr: float = 0.5) -> int:
    """Greedy one-to-one matches at IoU >= thr."""
    if len(dets) == 0 or len(gt) == 0:
        return 0
    m = iou_matrix(dets[:, :4], gt)
    n = 0
    while m.size and m.max() >= thr:
        i, j = np.unravel_index(np.argmax(m), m.shape)
        m[i, :] = 0
        m[:, j] = 0
        n += 1
    return n


@pytest.mark.parametrize("path", [SSD_FP32, SSD_INT8], ids=["fp32", "int8"])
def test_model_finds_people_on_pets_frames(path, pets_frames, pets_gt) -> None:
    model = Model(DetectorConfig(model=path, score_threshold=0.4))
    hits = total = false = 0
    for f in FRAMES:
        img = pets_frames[f]
        h, w = img.shape[:2]
        parts = [pass_result(model.detect(img[y1:y2, x1:x2]), (x1, y1, x2, y2), w, h, 4)
                 for x1, y1, x2, y2 in grid_regions(w, h, 3, 2, 0.2, 0.15)]
        dets = merge(parts)
        assert dets.dtype == np.float32 and dets.shape[1] == 5
        assert (dets[:, 4] >= 0.4).all()
        gt = pets_gt[f]
        n = matched(dets, gt)
        hits += n
        total += len(gt)
        false += len(dets) - n
    assert hits / total >= 0.7, (hits, total)
    assert false <= 0.3 * max(1, hits), (false, hits)


def test_whole_frame_detection_is_in_frame_pixels(pets_frames) -> None:
    img = pets_frames[150]
    dets = Model(DetectorConfig(model=SSD_FP32, score_threshold=0.3)).detect(img)
    assert len(dets) >= 1
    assert (dets[:, 0] >= 0).all() and (dets[:, 2] <= img.shape[1]).all()
    assert (dets[:, 1] >= 0).all() and (dets[:, 3] <= img.shape[0]).all()
    assert (dets[:, 2] > dets[:, 0]).all() and (dets[:, 3] > dets[:, 1]).all()


def test_decode_ssd_filters_class_and_score_and_scales() -> None:
    boxes = np.array([[[0.1, 0.2, 0.5, 0.4], [0.0, 0.0, 1.0, 1.0], [0.2, 0.2, 0.3, 0.3]]])
    scores = np.array([[0.9, 0.8, 0.2]])
    classes = np.array([[1.0, 3.0, 1.0]])
    d = decode_ssd(boxes, scores, classes, width=200, height=100, class_ids=[1],
                   score_threshold=0.5, num=np.array([3.0]))
    np.testing.assert_allclose(d, [[40, 10, 80, 50, 0.9]], rtol=1e-6)


def test_decode_ssd_raw_inverts_the_box_encoding() -> None:
    anchors = np.array([[0.2, 0.2, 0.6, 0.4], [0.5, 0.5, 0.7, 0.9]], dtype=np.float32)
    # anchor 0 shifted down by 0.25 of its height, twice as tall; anchor 1 unchanged
    enc = np.array([[[2.5, 0.0, 5 * np.log(2.0), 0.0], [0.0, 0.0, 0.0, 0.0]]])
    logits = np.array([[[0.0, 3.0], [0.0, -3.0]]])  # column 1 = person
    d = decode_ssd_raw(enc, logits, anchors, width=100, height=100, class_ids=[1],
                       score_threshold=0.5)
    assert d.shape == (1, 5)
    # yc = 0.4 + 0.25*0.4 = 0.5, h = 0.8 -> y 0.1..0.9; x unchanged 0.2..0.4
    np.testing.assert_allclose(d[0, :4], [20, 10, 40, 90], atol=1e-4)
    np.testing.assert_allclose(d[0, 4], 1 / (1 + np.exp(-3.0)), rtol=1e-6)


def test_missing_model_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        Model(DetectorConfig(model=tmp_path / "nope.onnx"))
