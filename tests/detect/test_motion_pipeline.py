"""Motion gating and the pipeline's frame/region decisions, with a fake model."""

from __future__ import annotations

import numpy as np

from edge_controller.detect import DetectionPipeline, DetectorConfig, MotionGate
from edge_controller.detect.boxes import Detections
from edge_controller.detect.config import MotionConfig
from edge_controller.detect.motion import blobs
from edge_controller.detect.tiling import PassResult, merge

W, H = 320, 240


class FakeModel:
    """Counts calls; reports a 'person' wherever a bright blob is in the crop."""

    def __init__(self) -> None:
        self.inference_s = 0.0
        self.calls = 0

    def detect(self, image_bgr: np.ndarray) -> Detections:
        self.calls += 1
        ys, xs = np.nonzero(image_bgr[:, :, 0] > 200)
        if len(xs) == 0:
            return np.zeros((0, 5), np.float32)
        return np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 0.9]], np.float32)


def scene(x: int | None = None, noise: int = 0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((H, W, 3), 90, np.uint8)
    img[150:, :] = 60  # a "road"
    if noise:
        img = np.clip(img.astype(int) + rng.integers(-noise, noise + 1, img.shape), 0, 255)
        img = img.astype(np.uint8)
    if x is not None:
        img[100:160, x:x + 20] = 230  # a person
    return img


def cfg(**kw: object) -> DetectorConfig:
    base: dict[str, object] = {"tiling": {"whole_frame": False, "cols": 2, "rows": 2,
                                          "overlap": 0.2}}
    base.update(kw)
    return DetectorConfig.model_validate(base)


def test_gate_is_quiet_on_a_static_scene_and_fires_on_motion() -> None:
    g = MotionGate(MotionConfig())
    assert g.update(scene()).all()  # first frame: everything is new
    for i in range(5):
        m = g.update(scene(noise=3, seed=i))
        assert m.mean() < 0.001
    m = g.update(scene(x=50))
    assert m.any()
    regions = [(0, 0, W // 2, H), (W // 2, 0, W, H)]
    assert g.active(regions) == [True, False]
    b = blobs(m, g.scale)
    assert len(b) == 1 and b[0, 0] <= 50 and b[0, 2] >= 70


def test_static_scene_runs_no_inference_between_refreshes() -> None:
    fake = FakeModel()
    p = DetectionPipeline(cfg(motion={"refresh_frames": 10}), model=fake)
    first = p.process(0, 0.0, scene(x=40))
    assert first is not None and len(first) == 1
    calls = fake.calls
    assert calls == 4  # all four tiles on the first frame
    for i in range(1, 10):
        out = p.process(i, i / 10, scene(x=40, noise=2, seed=i))
        assert out is not None and len(out) == 1  # the still person is kept
    assert fake.calls == calls
    p.process(10, 1.0, scene(x=40))  # 10 frames on: refresh, every tile again
    assert fake.calls == calls + 4
    assert p.stats.frames_processed == 11 and p.stats.full_refreshes == 2


def test_motion_runs_inference_where_it_moved() -> None:
    fake = FakeModel()
    p = DetectionPipeline(cfg(), model=fake)
    p.process(0, 0.0, scene(x=40))
    before = fake.calls
    out = p.process(1, 0.1, scene(x=48))
    assert fake.calls == before + 1  # one window around the person who moved
    assert out is not None and len(out) == 1 and abs(float(out[0, 0]) - 48) <= 1


def test_tile_gating_without_focus() -> None:
    fake = FakeModel()
    p = DetectionPipeline(cfg(focus={"enabled": False}), model=fake)
    p.process(0, 0.0, scene(x=40))
    fake.calls = 0
    p.process(1, 0.1, scene(x=44))  # moves inside the left tiles only
    assert 1 <= fake.calls <= 2


def test_detect_interval_and_max_fps_skip_frames() -> None:
    p = DetectionPipeline(cfg(detect_interval=3), model=FakeModel())
    got = [p.process(i, i / 10, scene(x=40)) is not None for i in range(7)]
    assert got == [True, False, False, True, False, False, True]
    p = DetectionPipeline(cfg(max_fps=5.0), model=FakeModel())
    got = [p.process(i, i / 10, scene(x=40)) is not None for i in range(5)]
    assert got == [True, False, True, False, True]
    assert p.stats.frames_seen == 5 and p.stats.frames_processed == 3


def test_output_is_float32_n_by_5_in_frame_pixels() -> None:
    p = DetectionPipeline(cfg(motion={"enabled": False}), model=FakeModel())
    out = p.process(0, 0.0, scene(x=250))
    assert out is not None and out.dtype == np.float32 and out.shape == (1, 5)
    np.testing.assert_allclose(out[0, :4], [250, 100, 270, 160])


def test_zone_crops_only() -> None:
    fake = FakeModel()
    zones = [[[200, 80], [300, 80], [300, 200], [200, 200]]]
    p = DetectionPipeline(cfg(crops={"enabled": True, "only": True},
                              motion={"enabled": False}), zones=zones, model=fake)
    assert [q.name for q in p.layout(W, H)] == ["zone-0"]
    out = p.process(0, 0.0, scene(x=250))
    assert fake.calls == 1 and out is not None and len(out) == 1


def test_join_cut_halves() -> None:
    top = PassResult(np.array([[100, 50, 130, 120, 0.6]], np.float32), np.array([True]))
    bottom = PassResult(np.array([[98, 100, 131, 170, 0.7]], np.float32), np.array([True]))
    out = merge([top, bottom])
    np.testing.assert_allclose(out, [[98, 50, 131, 170, 0.7]])
