"""The "cannot see" checks (edge_controller/detect/sight.py) on real frames of the view.

Frames: the repository's sample clip (PETS09-S2L1 frames 0-119, the same view the
pole config describes), so these run without the shared data. The reference is
learnt from the first 40 frames; each cause is then made from the later frames by
a plain image operation written here (a shift, a blur, a cover, a dimming), and
must be reported, while unchanged frames and fog (reported as fog, not as a fault)
are not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_controller.detect import DetectionPipeline, DetectorConfig
from edge_controller.detect.config import SightConfig
from edge_controller.detect.sight import SightMonitor, SightState
from tests.detect.conftest import SAMPLE

Img = np.ndarray


@pytest.fixture(scope="module")
def clip() -> list[Img]:
    cap = cv2.VideoCapture(str(SAMPLE))
    out: list[Img] = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        out.append(img)
    cap.release()
    assert len(out) >= 100, "sample clip too short"
    return out


def watch(clip: list[Img], change: Callable[[Img], Img], **kw: bool) -> SightState:
    m = SightMonitor(SightConfig(every_frames=1))
    for img in clip[:40]:
        m.update(img)
    assert m.state.ok and not m.state.learning
    st = m.state
    for img in clip[40:60]:
        st = m.update(change(img), **kw)
    return st


def test_clear_view_is_fine(clip: list[Img]) -> None:
    st = watch(clip, lambda x: x)
    assert st.ok, st.as_dict()


def test_blocked(clip: list[Img]) -> None:
    def cover(x: Img) -> Img:  # a bag over the lens: dim, smooth, a little light leaking
        y = cv2.GaussianBlur(x, (0, 0), 35) // 4
        return np.asarray(y + 20, np.uint8)

    st = watch(clip, cover)
    assert st.causes == ["blocked"], st.as_dict()


def test_moved(clip: list[Img]) -> None:
    st = watch(clip, lambda x: np.roll(x, (14, 25), axis=(0, 1)))  # ~29 px
    assert "moved" in st.causes, st.as_dict()
    h, w = clip[0].shape[:2]
    turned = cv2.getRotationMatrix2D((w / 2, h / 2), 8.0, 1.0)
    st = watch(clip, lambda x: cv2.warpAffine(x, turned, (w, h)))
    assert "moved" in st.causes, st.as_dict()


def test_defocused(clip: list[Img]) -> None:
    st = watch(clip, lambda x: cv2.GaussianBlur(x, (0, 0), 3.0))
    assert st.causes == ["defocused"], st.as_dict()


def test_too_dark(clip: list[Img]) -> None:
    rng = np.random.default_rng(5)

    def lamp_off(x: Img) -> Img:  # nearly no light, a little sensor noise
        y = x.astype(np.float32) * 0.01 + rng.normal(0, 0.6, x.shape)
        return np.asarray(np.clip(y, 0, 255), np.uint8)

    st = watch(clip, lamp_off)
    assert "too_dark" in st.causes, st.as_dict()


def test_fog_is_not_a_fault_until_too_dense(clip: list[Img]) -> None:
    def veil(x: Img) -> Img:  # a light haze: contrast halved towards white
        return np.asarray(x * 0.55 + 110, np.uint8)

    st = watch(clip, veil, foggy=True)
    assert st.ok, st.as_dict()
    m = SightMonitor(SightConfig(every_frames=1))
    for img in clip[:20]:
        st = m.update(img, transmission=0.05, foggy=True)
    assert st.causes == ["low_detectability"] and st.detectability == 0.05


def test_a_passing_moment_does_not_flap(clip: list[Img]) -> None:
    m = SightMonitor(SightConfig(every_frames=1, confirm=3))
    for img in clip[:40]:
        m.update(img)
    for img in clip[40:42]:  # two covered frames: a bird, a hand
        st = m.update(np.zeros_like(img))
    assert st.ok
    for img in clip[42:46]:
        st = m.update(img)
    assert st.ok


def test_pipeline_reports_sight(clip: list[Img]) -> None:
    cfg = DetectorConfig.model_validate({"sight": {"every_frames": 1, "reference_frames": 4,
                                                   "reference_spread": 1},
                                         "motion": {"enabled": False},
                                         "tiling": {"cols": 1, "rows": 1,
                                                    "whole_frame": True}})
    p = DetectionPipeline(cfg)
    for i, img in enumerate(clip[:6]):
        p.process(i, i / 10, img)
    assert not p.sight.state.learning
    for i in range(6, 12):
        p.process(i, i / 10, np.zeros_like(clip[i]))
    assert "too_dark" in p.sight.state.causes


def test_learning_is_reported_not_a_fault(clip: list[Img]) -> None:
    """Until the reference is learnt the reference checks cannot run: the monitor says
    `learning` (and ok) until the last of its reference_frames samples, taken every
    reference_spread-th lit analysis, is in."""
    m = SightMonitor(SightConfig(every_frames=1, reference_frames=4, reference_spread=3))
    for img in clip[:10]:  # samples at analyses 1, 4, 7 and 10
        st = m.update(img)
        assert st.learning and st.ok, st.as_dict()
    assert not m.update(clip[10]).learning


def test_a_run_started_mid_clip_raises_no_false_alarm(pets: Path) -> None:
    """The known issue: started at frame 400 (or 475, 500) the monitor reported the clear
    view as `moved` on ~4 % of its analyses (up to 45 in a row from 500: the reference
    learnt from a few seconds of a group walking, whose ghosts pulled the view's match
    2-9 analysis pixels aside, so the reference was frozen). Every 5th frame analysed,
    as on the pole; each run covers 300 frames (60 analyses) after its start."""
    cap = cv2.VideoCapture(str(pets / "vtest.avi"))
    frames: list[Img] = []
    while len(frames) < 800:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(np.asarray(img, np.uint8))
    cap.release()
    bad: dict[int, list[dict[str, object]]] = {}
    for start in (400, 450, 475, 500, 525):
        m = SightMonitor(SightConfig())
        for img in frames[start:start + 300]:
            before = m.analyses
            st = m.update(img)
            if m.analyses > before and not st.ok:
                bad.setdefault(start, []).append(st.as_dict())
    assert not bad, {k: (len(v), v[0]) for k, v in bad.items()}
