"""Shared fixtures: the PETS09-S2L1 development data (../shared), frames and ground truth."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.support import PETS as PETS  # tests here import it from this conftest
from tests.support import need_pets

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "pets09-s2l1-0-119.mp4"


@pytest.fixture(scope="session")
def pets() -> Path:
    return need_pets()


@pytest.fixture(scope="session")
def pets_frames(pets: Path) -> dict[int, np.ndarray]:
    """A few video frames of the development split (0-399), by index."""
    want = {50, 150, 151, 152, 300}
    cap = cv2.VideoCapture(str(pets / "vtest.avi"))
    out: dict[int, np.ndarray] = {}
    i = 0
    while len(out) < len(want):
        ok, img = cap.read()
        assert ok, "vtest.avi ended early"
        if i in want:
            out[i] = img
        i += 1
    cap.release()
    return out


@pytest.fixture(scope="session")
def pets_gt(pets: Path) -> dict[int, np.ndarray]:
    """Video frame -> considered ground-truth boxes (N, 4) x1, y1, x2, y2."""
    rows = np.loadtxt(pets / "gt.txt", delimiter=",", ndmin=2)
    out: dict[int, np.ndarray] = {}
    for f in np.unique(rows[:, 0]).astype(int):
        r = rows[(rows[:, 0] == f) & (rows[:, 6] != 0)]
        out[int(f) - 1] = np.stack(
            [r[:, 2], r[:, 3], r[:, 2] + r[:, 4], r[:, 3] + r[:, 5]], axis=1)
    return out
