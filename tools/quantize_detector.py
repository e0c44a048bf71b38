"""Static INT8 quantisation (QDQ, per-channel) of the SSDLite person detector.

Two steps:

1. Strip: keep only the network (MobileNetV2 backbone and SSD box/class heads) of
   the converted TF graph; the in-graph preprocessing loop (a per-image resize),
   the box decoding and the 90-class NMS loop go, because the pipeline feeds
   300x300 views already and decodes one class in numpy
   (`edge_controller.detect.model.decode_ssd_raw`). Input `image` uint8
   [1, 300, 300, 3] RGB; outputs `raw_boxes` [1, 1917, 4] (box encodings ty, tx,
   th, tw), `raw_scores` [1, 1917, 91] (class logits), `anchors` [1917, 4]
   (ymin, xmin, ymax, xmax, normalised; a constant of the graph).
2. Quantise the stripped graph: QDQ, per-channel int8 weights, uint8 activations,
   MinMax calibration.

Calibrated on what the pipeline feeds the model: 300x300 RGB views (whole frame
and the tiles of a few layouts) of frames from the DEVELOPMENT split only
(PETS09-S2L1 video frames 0-399; the report split 400-794 is never seen here).

    .venv/bin/python tools/quantize_detector.py
    .venv/bin/python tools/quantize_detector.py --video /path/vtest.avi --step 8

Needs the `onnx` package (onnxruntime's quantiser imports it). Deterministic for
a given onnxruntime version, input model and calibration set.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_controller.detect.tiling import grid_regions  # noqa: E402

DEFAULT_IN = ROOT / "models" / "ssdlite_mobilenet_v2_coco.onnx"
DEFAULT_OUT = ROOT / "models" / "ssdlite_mobilenet_v2_coco_int8.onnx"
DEFAULT_VIDEO = ROOT.parent / "shared" / "data" / "pets09-s2l1" / "vtest.avi"
DEV_LAST_FRAME = 399  # tuning/calibration split: video frames 0-399
# Views the calibration sees per frame: whole frame, 2x2 and 3x2 tiles (20 % overlap).
LAYOUTS = [(1, 1), (2, 2), (3, 2)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def calibration_views(video: Path, step: int, size: int = 300) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {video}")
    views: list[np.ndarray] = []
    i = 0
    while i <= DEV_LAST_FRAME:
        ok, frame = cap.read()
        if not ok:
            break
        if i % step == 0:
            h, w = frame.shape[:2]
            for cols, rows in LAYOUTS:
                for x1, y1, x2, y2 in grid_regions(w, h, cols, rows, 0.2):
                    crop = cv2.resize(frame[y1:y2, x1:x2], (size, size))
                    views.append(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)[None])
        i += 1
    cap.release()
    if not views:
        raise SystemExit(f"no frames read from {video}")
    return views


ANCHORS = "Postprocessor/ExpandDims:0"
BOX_ENCODINGS = "concat:0"
CLASS_LOGITS = "concat_1:0"
PREPROCESSED = "Preprocessor/map/TensorArrayStack/TensorArrayGatherV3:0"  # NCHW float 0-255


def strip_ssd_head(src: Path, dst: Path) -> None:
    """Write the network-only graph of the converted SSD (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    anchors = numpy_helper.to_array(inits[ANCHORS])[0].astype(np.float32)
    producer = {o: n for n in g.node for o in n.output}
    needed: set[str] = set()
    stack = [BOX_ENCODINGS, CLASS_LOGITS]
    seen: set[str] = set()
    while stack:
        t = stack.pop()
        if t in seen or t == PREPROCESSED:
            continue
        seen.add(t)
        node = producer.get(t)
        if node is not None:
            needed.add(node.name)
            stack.extend(node.input)
    body = [n for n in g.node if n.name in needed]
    if any(n.op_type == "Loop" for n in body):
        raise SystemExit("strip failed: the network still depends on a Loop")
    nodes = [
        helper.make_node("Cast", ["image"], ["image_float"], to=TensorProto.FLOAT,
                         name="image_to_float"),
        helper.make_node("Transpose", ["image_float"], [PREPROCESSED], perm=[0, 3, 1, 2],
                         name="image_nchw"),
        *body,
        helper.make_node("Squeeze", [BOX_ENCODINGS, "squeeze_axis"], ["raw_boxes"],
                         name="raw_boxes_squeeze"),
        helper.make_node("Identity", [CLASS_LOGITS], ["raw_scores"], name="raw_scores_out"),
        helper.make_node("Identity", ["anchors_const"], ["anchors"], name="anchors_out"),
    ]
    used = {x for n in body for x in n.input}
    initializers = [i for i in g.initializer if i.name in used] + [
        numpy_helper.from_array(anchors, "anchors_const"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "squeeze_axis"),
    ]
    graph = helper.make_graph(
        nodes, "ssdlite_mobilenet_v2_coco_net",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 300, 300, 3])],
        [helper.make_tensor_value_info("raw_boxes", TensorProto.FLOAT, [1, len(anchors), 4]),
         helper.make_tensor_value_info("raw_scores", TensorProto.FLOAT,
                                       [1, len(anchors), "classes"]),
         helper.make_tensor_value_info("anchors", TensorProto.FLOAT, [len(anchors), 4])],
        initializers,
    )
    out = helper.make_model(graph, opset_imports=m.opset_import, producer_name="smartpole")
    out.ir_version = m.ir_version
    onnx.checker.check_model(out)
    onnx.save(out, str(dst))


def main() -> int:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_IN)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--video", type=Path, default=DEFAULT_VIDEO,
                    help="PETS09-S2L1 vtest.avi (only frames 0-399 are read).")
    ap.add_argument("--step", type=int, default=8, help="Use every n-th dev frame.")
    args = ap.parse_args()

    views = calibration_views(args.video, args.step)
    print(f"calibration: {len(views)} views from dev frames 0-{DEV_LAST_FRAME} "
          f"(every {args.step}th)")

    input_name = "image"

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it: Iterator[np.ndarray] = iter(views)
            self.input_name = input_name

        def get_next(self) -> dict[str, Any] | None:
            x = next(self.it, None)
            return None if x is None else {self.input_name: x}

    with tempfile.TemporaryDirectory() as tmp:
        net = Path(tmp) / "net.onnx"
        strip_ssd_head(args.model, net)
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(net), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(args.out), Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) sha256 {sha256(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
