"""Fixtures for the visibility tests: PETS09-S2L1 frames, ground truth and the fitted camera.

Tuning was done on video frames 0-399 (the development split); the fog test
reports on frames 400-794. Clear-weather references are learnt from frames
0-399 (that is what a pole does: it learns from the days before the fog).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.support import PETS as PETS  # tests here import it from this conftest
from tests.support import need_pets
from tests.visibility import foggen as fg

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "pets09-s2l1-0-119.mp4"

# The camera fitted to the PETS09 ground truth (foggen.fit_camera), for tests that
# run without the shared data (the sample clip is the same view). A test checks
# these against a fresh fit when the data is there.
PETS_HEIGHT_M = 7.115
PETS_TILT_DEG = 16.945
PETS_VFOV_DEG = 27.503
PETS_ROLL_DEG = -2.305


@dataclass(frozen=True)
class Pets:
    frames: dict[int, np.ndarray]  # video frame index -> BGR image
    boxes: dict[int, np.ndarray]  # video frame index -> (N, 4) all gt boxes x1, y1, x2, y2
    cam: fg.Camera
    depth: np.ndarray  # generator's ground-plane distance per pixel (full size)


# Frames used: references from the development split, fog on the report split.
REF_FRAMES = tuple(range(0, 400, 40))
REPORT_FRAMES = tuple(range(405, 795, 13))


@pytest.fixture(scope="session")
def pets() -> Pets:
    root = need_pets()
    want = set(REF_FRAMES) | set(REPORT_FRAMES)
    cap = cv2.VideoCapture(str(root / "vtest.avi"))
    frames: dict[int, np.ndarray] = {}
    i = 0
    last = max(want)
    while i <= last:
        if i in want:
            ok, img = cap.read()
            assert ok, f"vtest.avi ended at frame {i}"
            frames[i] = img
        else:
            assert cap.grab(), f"vtest.avi ended at frame {i}"
        i += 1
    cap.release()
    rows = np.loadtxt(root / "gt.txt", delimiter=",", ndmin=2)
    boxes: dict[int, np.ndarray] = {}
    for f in want:
        r = rows[rows[:, 0] == f + 1]
        boxes[f] = np.stack([r[:, 2], r[:, 3], r[:, 2] + r[:, 4], r[:, 3] + r[:, 5]], axis=1)
    cam = fg.fit_camera(root / "gt.txt")
    depth = fg.depth_map(cam, (576, 768))
    return Pets(frames, boxes, cam, depth)
