"""Fogged copies of the bundled sample clip for HIL tests (tests/visibility/foggen.py's
independent generator, the PETS camera geometry)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from polesim.pole import SAMPLE_VIDEO

from tests.visibility import foggen as fg
from tests.visibility.conftest import PETS_HEIGHT_M, PETS_ROLL_DEG, PETS_TILT_DEG, PETS_VFOV_DEG

SIZE = (384, 288)


def fog_video(path: Path, segments: list[tuple[float, float | None]], fps: float,
              seed: int) -> Path:
    """The sample clip at SIZE and `fps` (every other frame), in segments of (seconds,
    MOR in metres or None for clear weather), with sensor noise; MJPEG AVI at `path`."""
    w, h = SIZE
    cam = fg.Camera.from_params(PETS_HEIGHT_M, PETS_TILT_DEG, PETS_VFOV_DEG, PETS_ROLL_DEG,
                                size=SIZE)
    depth = fg.depth_map(cam, (h, w))
    cap = cv2.VideoCapture(str(SAMPLE_VIDEO))
    src = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        src.append(cv2.resize(img, SIZE, interpolation=cv2.INTER_AREA))
    cap.release()
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, SIZE)
    rng = np.random.default_rng(seed)
    i = 0
    for seconds, mor_m in segments:
        for _ in range(int(seconds * fps)):
            lin = fg.srgb_to_linear(src[(2 * i) % len(src)])
            if mor_m is not None:
                lin = fg.fog(lin, depth, mor_m, rng)
            out.write(fg.sensor(lin, rng))
            i += 1
    out.release()
    return path
