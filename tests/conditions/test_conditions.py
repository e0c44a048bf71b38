"""The detector in fog, at night and in greyscale, on real video made worse by an independent
generator (tests/conditions/degrade.py: its own camera, 8.5 m / 30 deg / 40 deg field of
view, lamp at 9 m; numbers in its docstring; it imports nothing from the product).

PETS09-S2L1, every 4th frame of the report split 400-794 (99 frames, a 2.5 fps
stream for the pipeline; the enhancement and thresholds were tuned on frames 0-399
only), the shipped default pipeline with one intra-op thread. Scoring: IoU 0.5
against gt.txt, `considered` boxes.

Floors: measured on an AVX-512 VNNI machine, then lowered by about 0.06 recall and
0.05 precision: onnxruntime's INT8 kernels differ between AVX2, AVX-512 VNNI and ARM
and move detections by a few recall points (the crossing tests allow the same).
They catch the enhancement being switched off or broken: without it fog at 60 m is
near 0.3 recall, night near 0 and the auto-gain night 0 (its frames are bright, only
their noise tells them apart); without the low-light model (NanoDet-m, night and
greyscale frames) night at 20 % is near 0.34 and greyscale 0.81. Floors below a goal are
marked as known gaps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_controller.detect import DetectionPipeline, DetectorConfig
from tests.conditions import degrade
from tests.support import need

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "pets09-s2l1"
FRAMES = range(400, 795, 4)

# condition: (recall floor, precision floor); measured values in the comment.
FLOORS = {  # measured 6 December 2026 (VNNI Xeon) in the comments
    "clear": (0.84, 0.88),  # 0.908 / 0.933
    "fog300": (0.85, 0.87),  # 0.912 / 0.928
    "fog120": (0.85, 0.85),  # 0.913 / 0.907
    "fog60": (0.83, 0.82),  # 0.894 / 0.877
    "night10": (0.44, 0.79),  # 0.501 / 0.850 (the darkest of the range; 0.85 is the goal)
    "night20": (0.62, 0.85),  # 0.683 / 0.900 (the low-light model)
    "night-gain20": (0.55, 0.83),  # 0.612 / 0.887 (auto-gain: found by its noise)
    "grey": (0.81, 0.88),  # 0.871 / 0.935 (the low-light model)
    "ir": (0.80, 0.88),  # 0.867 / 0.939
}


def _data() -> Path:
    if not (DATA / "vtest.avi").is_file():
        need(f"PETS09 data not found at {DATA}")
    return DATA


@pytest.fixture(scope="module")
def clip() -> tuple[dict[int, np.ndarray], object]:
    data = _data()
    sys.path.insert(0, str(ROOT / "bench"))
    from detect_eval import load_gt

    cap = cv2.VideoCapture(str(data / "vtest.avi"))
    frames: dict[int, np.ndarray] = {}
    i = 0
    want = set(FRAMES)
    while i <= max(FRAMES):
        if i in want:
            ok, img = cap.read()
            assert ok
            frames[i] = img
        else:
            assert cap.grab()
        i += 1
    cap.release()
    return frames, load_gt(data / "gt.txt")


@pytest.mark.parametrize("condition", list(FLOORS))
def test_condition_floor(condition: str, clip: tuple[dict[int, np.ndarray], object]) -> None:
    from detect_eval import evaluate

    frames, gt = clip
    pipe = DetectionPipeline(DetectorConfig(threads=1))
    out: dict[int, np.ndarray] = {}
    last = np.zeros((0, 5), np.float32)
    for i in FRAMES:
        img = degrade.make(condition, frames[i], np.random.default_rng(1000 + i))
        r = pipe.process(i, i / 10, img)
        if r is not None:
            last = r
        out[i] = last
    c = evaluate(out, gt, FRAMES)  # type: ignore[arg-type]
    print(f"{condition}: recall {c.recall:.3f} precision {c.precision:.3f} "
          f"mode {pipe.enhancer.mode} sight {pipe.sight.state.causes}")
    r_min, p_min = FLOORS[condition]
    assert c.recall >= r_min and c.precision >= p_min, (condition, c.recall, c.precision)
