"""YOLOv8/YOLO11 path: a tiny ONNX graph with a known [1, 4+nc, N] output, run through
`Model` (letterbox, decode, NMS, back to original pixels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_controller.detect import DetectorConfig, Model, decode_yolo  # noqa: E402
from edge_controller.detect.model import letterbox, letterbox_params  # noqa: E402

# Rows cx, cy, w, h (model-input pixels, 64x64 input), class 0 = person, class 1 = other.
HEAD = np.array([
    # A     B     C     D     E
    [20.0, 21.0, 45.0, 40.0, 50.0],  # cx
    [30.0, 30.0, 30.0, 40.0, 20.0],  # cy
    [10.0, 10.0, 8.0, 6.0, 8.0],  # w
    [20.0, 20.0, 16.0, 12.0, 16.0],  # h
    [0.9, 0.8, 0.1, 0.3, 0.7],  # person
    [0.0, 0.0, 0.95, 0.0, 0.0],  # other
], dtype=np.float32)
# Real exports have many more candidates than rows (8400 vs 84): pad with empty ones.
HEAD = np.concatenate([HEAD, np.zeros((6, 4), dtype=np.float32)], axis=1)[None]


def tiny_yolo(path: Path) -> Path:
    """images [1, 3, 64, 64] -> output0 = HEAD + 0 * mean(images)."""
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["head", "z"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(HEAD.shape))],
        [numpy_helper.from_array(HEAD, "head"),
         numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_tiny_yolo_through_model(tmp_path: Path) -> None:
    cfg = DetectorConfig(model=tiny_yolo(tmp_path / "y.onnx"), kind="yolo",
                         input_size=(64, 64), person_class_ids=[0], score_threshold=0.5,
                         nms_iou=0.45)
    image = np.zeros((96, 128, 3), dtype=np.uint8)  # letterbox: scale 0.5, pad y 8
    d = Model(cfg).detect(image)
    # A kept (B is its duplicate, C another class, D below threshold), E kept.
    np.testing.assert_allclose(d, [[30, 24, 50, 64, 0.9], [92, 8, 108, 40, 0.7]], atol=1e-4)


def test_decode_yolo_accepts_transposed_output() -> None:
    lb = letterbox_params(128, 96, (64, 64))
    a = decode_yolo(HEAD, lb, class_ids=[0], score_threshold=0.5, iou_threshold=0.45)
    b = decode_yolo(HEAD.transpose(0, 2, 1), lb, class_ids=[0], score_threshold=0.5,
                    iou_threshold=0.45, transposed=True)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 2


def test_decode_yolo_bad_class_ids() -> None:
    with pytest.raises(ValueError, match="out of range"):
        decode_yolo(HEAD, letterbox_params(64, 64, (64, 64)), class_ids=[5],
                    score_threshold=0.5, iou_threshold=0.5)


@given(w=st.integers(16, 2000), h=st.integers(16, 2000),
       fx=st.floats(0, 1), fy=st.floats(0, 1))
def test_letterbox_maps_points_back(w: int, h: int, fx: float, fy: float) -> None:
    lb = letterbox_params(w, h, (640, 640))
    x, y = fx * w, fy * h
    mx, my = x * lb.scale + lb.pad_x, y * lb.scale + lb.pad_y
    assert 0 <= mx <= 640 + 1e-6 and 0 <= my <= 640 + 1e-6
    assert abs((mx - lb.pad_x) / lb.scale - x) < 1e-6 * max(w, h)


def test_letterbox_image_places_content() -> None:
    img = np.full((50, 100, 3), 200, dtype=np.uint8)
    out, lb = letterbox(img, (64, 64))
    assert out.shape == (64, 64, 3)
    assert lb.scale == pytest.approx(0.64) and lb.pad_x == 0
    top = round(lb.pad_y)
    assert (out[top + 1:top + 30, 5] == 200).all() and (out[0, 5] == 114).all()
