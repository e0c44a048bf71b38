"""Static INT8 quantisation (QDQ, per-channel) of the NanoDet-m 416 detector.

Input `models/nanodet_m_416.onnx` (made by `tools/convert_nanodet.py`); output
`models/nanodet_m_416_int8.onnx` with the same interface: input `image` float32
[1, 3, 416, 416] (BGR, (pixel - mean) / std), outputs `cls_8, reg_8, cls_16,
reg_16, cls_32, reg_32`.

- QDQ format, per-channel int8 weights, uint8 activations, MinMax calibration.
- Only `Conv` is quantised (`op_types_to_quantize=["Conv"]`): quantising every
  op type gives NaN scales and an all-zero output for this graph. The resize,
  concatenation, sigmoid and reshape tail stay float.

Calibrated on the DEVELOPMENT split only: every 8th frame of PETS09-S2L1 video
frames 0-399 (the report split 400-794 is never seen here), each fed twice, as
the clear frame and as a BT.601 greyscale copy (three equal channels, what an IR
camera at night gives). No synthetic night/fog frames are used: those are the
conditions the benchmark measures.

    .venv/bin/python tools/quantize_nanodet.py
    .venv/bin/python tools/quantize_nanodet.py --video /path/vtest.avi --step 8

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
DEFAULT_IN = ROOT / "models" / "nanodet_m_416.onnx"
DEFAULT_OUT = ROOT / "models" / "nanodet_m_416_int8.onnx"
DEFAULT_VIDEO = ROOT.parent / "shared" / "data" / "pets09-s2l1" / "vtest.avi"
DEV_LAST_FRAME = 399  # tuning/calibration split: video frames 0-399
INPUT_NAME = "image"
SIZE = 416
MEAN_BGR = (103.53, 116.28, 123.675)
STD_BGR = (57.375, 57.12, 58.395)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def preprocess(bgr: np.ndarray) -> np.ndarray:
    """NanoDet's input: BGR resized to 416x416, (pixel - mean) / std, [1, 3, 416, 416]."""
    r = cv2.resize(bgr, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    x = (r - np.array(MEAN_BGR, np.float32)) / np.array(STD_BGR, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def grey_bt601(bgr: np.ndarray) -> np.ndarray:
    """BT.601 luma (OpenCV's BGR2GRAY weights 0.299 R + 0.587 G + 0.114 B) in 3 channels."""
    return cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def calibration_inputs(video: Path, step: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {video}")
    inputs: list[np.ndarray] = []
    i = 0
    while i <= DEV_LAST_FRAME:
        ok, frame = cap.read()
        if not ok:
            break
        if i % step == 0:
            inputs += [preprocess(frame), preprocess(grey_bt601(frame))]
        i += 1
    cap.release()
    if not inputs:
        raise SystemExit(f"no frames read from {video}")
    return inputs


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

    inputs = calibration_inputs(args.video, args.step)
    print(f"calibration: {len(inputs)} inputs (clear + BT.601 grey) from dev frames "
          f"0-{DEV_LAST_FRAME} (every {args.step}th)")

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it: Iterator[np.ndarray] = iter(inputs)

        def get_next(self) -> dict[str, Any] | None:
            x = next(self.it, None)
            return None if x is None else {INPUT_NAME: x}

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(args.model), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(args.out), Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) sha256 {sha256(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
