"""NanoDet-m: its decoder against boxes built by hand, the shipped model on a real frame,
and the pipeline's switch between NanoDet and the SSD pipeline (`use_when`)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_controller.config import ConfigError, load
from edge_controller.detect import DetectionPipeline, DetectorConfig
from edge_controller.detect.nanodet import NANODET_INT8, NanoDet, decode
from edge_controller.preflight import check_files

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "pets09-s2l1-0-119.mp4"


def heads(size: int, cells: dict[tuple[int, int, int], tuple[float, tuple[int, ...]]]
          ) -> list[np.ndarray]:
    """Six head outputs, all background, except `cells`: (stride, row, col) -> (person
    score, the bin each side's distribution peaks at)."""
    outs: list[np.ndarray] = []
    for stride in (8, 16, 32):
        g = size // stride
        cls = np.zeros((1, g * g, 80), np.float32)
        reg = np.zeros((1, g * g, 44), np.float32)
        for (s, row, col), (score, bins) in cells.items():
            if s != stride:
                continue
            cls[0, row * g + col, 0] = score
            for side, b in enumerate(bins):
                reg[0, row * g + col, side * 11 + b] = 40.0  # a sharp peak: softmax ~ one-hot
        outs += [cls, reg]
    return outs


def test_decode_puts_the_box_at_the_cell_centre_plus_the_bins_times_the_stride() -> None:
    # Cell (row 10, col 20) at stride 16: centre (20.5 * 16, 10.5 * 16) = (328, 168);
    # sides left 2, top 3, right 1, bottom 4 bins of 16 px.
    outs = heads(416, {(16, 10, 20): (0.9, (2, 3, 1, 4))})
    d = decode(outs, 416, 416, 416, score_floor=0.3, nms_iou=0.6)
    assert d.shape == (1, 5)
    np.testing.assert_allclose(d[0, :4], [328 - 32, 168 - 48, 328 + 16, 168 + 64], atol=1e-3)
    assert d[0, 4] == pytest.approx(0.9)


def test_decode_scales_to_the_frame_drops_low_scores_and_suppresses_duplicates() -> None:
    outs = heads(416, {(8, 5, 5): (0.8, (2, 2, 2, 2)),  # centre 44, box 28..60
                       (8, 5, 6): (0.7, (3, 2, 1, 2)),  # centre 52: 28..60 again, suppressed
                       (32, 2, 2): (0.2, (1, 1, 1, 1))})  # below the floor
    d = decode(outs, 416, 832, 208, score_floor=0.3, nms_iou=0.6)
    assert len(d) == 1
    np.testing.assert_allclose(d[0, :4], [56, 14, 120, 30], atol=1e-3)


def test_decode_of_an_empty_scene_is_empty() -> None:
    assert decode(heads(416, {}), 416, 640, 480, 0.3, 0.6).shape == (0, 5)


def _frame(index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(SAMPLE))
    for _ in range(index):
        cap.grab()
    ok, img = cap.read()
    cap.release()
    assert ok
    return np.asarray(img)


def test_the_shipped_model_finds_the_people_of_a_real_greyscale_frame() -> None:
    img = _frame(60)
    grey = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    model = NanoDet(NANODET_INT8, threads=1, score_floor=0.45)
    d = model.detect(grey)
    # The sample's frame 60 has 5 people in the open (gt.txt); each box person-shaped.
    assert 3 <= len(d) <= 8, d
    h = d[:, 3] - d[:, 1]
    w = d[:, 2] - d[:, 0]
    assert ((h > w) & (h > 40)).all(), d
    assert model.inferences == 1 and model.inference_s > 0


class Fake:
    def __init__(self, box: list[float]) -> None:
        self.box = np.asarray([box], np.float32)
        self.calls = 0
        self.inference_s = 0.0

    def detect(self, image: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.box.copy()


def test_by_default_nanodet_looks_at_every_frame() -> None:
    ssd, nd = Fake([10, 10, 40, 90, 0.9]), Fake([100, 10, 130, 90, 0.9])
    pipe = DetectionPipeline(DetectorConfig(), model=ssd, nanodet=nd)
    ramp = np.linspace(80, 200, 320, dtype=np.float32)[None, :].repeat(240, axis=0)
    colour = np.stack([ramp * 0.4, ramp, ramp * 0.8], axis=2).astype(np.uint8)
    for i in range(3):
        out = pipe.process(i, i / 10, colour)
        assert out is not None and out[0, 0] == 100 and pipe.nanodet_active
    assert ssd.calls == 0 and nd.calls == 3


def test_use_when_night_and_grey_switches_between_nanodet_and_the_ssd_pipeline() -> None:
    day, low = Fake([10, 10, 40, 90, 0.9]), Fake([100, 10, 130, 90, 0.9])
    cfg = DetectorConfig(motion={"enabled": False}, nanodet={"use_when": ["night", "grey"]})
    pipe = DetectionPipeline(cfg, model=day, nanodet=low)
    # A smooth, clearly coloured daylight frame (no grain: grain would say night).
    ramp = np.linspace(80, 200, 320, dtype=np.float32)[None, :].repeat(240, axis=0)
    colour = np.stack([ramp * 0.4, ramp, ramp * 0.8], axis=2).astype(np.uint8)
    grey = np.repeat(colour[..., 1:2], 3, axis=2)
    out = pipe.process(0, 0.0, colour)
    assert out is not None and out[0, 0] == 10 and not pipe.nanodet_active
    out = pipe.process(1, 0.1, grey)
    assert out is not None and out[0, 0] == 100 and pipe.nanodet_active
    assert pipe.stats.per_pass_runs["nanodet"] == 1
    # Back to colour: the day passes run afresh (nothing stale from before the switch).
    calls = day.calls
    out = pipe.process(2, 0.2, colour)
    assert out is not None and out[0, 0] == 10 and day.calls > calls
    # Night by the controller's regime: the low-light model, even on a colour frame.
    pipe.set_conditions(regime="night")
    out = pipe.process(3, 0.3, colour // 8)
    assert pipe.enhancer.mode == "night" and pipe.nanodet_active


def test_use_when_and_enabled_limit_the_switch() -> None:
    day, low = Fake([10, 10, 40, 90, 0.9]), Fake([100, 10, 130, 90, 0.9])
    grey = np.full((240, 320, 3), 120, np.uint8)
    grey[50:150, 100:130] = 30
    pipe = DetectionPipeline(DetectorConfig(nanodet={"use_when": ["night"]}),
                             model=day, nanodet=low)
    pipe.process(0, 0.0, grey)
    assert not pipe.nanodet_active and low.calls == 0
    # A caller's own model alone serves every frame: no low-light model behind its back.
    alone = DetectionPipeline(DetectorConfig(), model=day)
    alone.process(0, 0.0, grey)
    assert alone.nanodet is None and not alone.nanodet_active


def test_a_missing_low_light_model_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    toml = tmp_path / "pole.toml"
    toml.write_text('[pole]\nid = "p1"\n\n[crossing]\nenabled = true\n\n'
                    '[[zones]]\nname = "road"\nkind = "carriageway"\n'
                    'polygon = [[0, 0], [100, 0], [100, 100]]\n\n'
                    '[detector.nanodet]\nmodel = "/nowhere/nanodet.onnx"\n')
    cfg = load(toml)
    problems = dict(check_files(cfg))
    assert "detector.nanodet.model" in problems
    assert "/nowhere/nanodet.onnx" in problems["detector.nanodet.model"]


def test_an_unknown_low_light_key_names_it(tmp_path: Path) -> None:
    toml = tmp_path / "pole.toml"
    toml.write_text('[pole]\nid = "p1"\n\n[detector.nanodet]\nthreshold = 0.3\n')
    with pytest.raises(ConfigError, match="nanodet"):
        load(toml)
