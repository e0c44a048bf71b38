"""Night handling of the enhancer: the regime from the frame's noise, the foreground model
and the gate that lets low-scoring boxes count only where something stands out."""

from __future__ import annotations

import numpy as np

from edge_controller.detect.config import EnhanceConfig
from edge_controller.detect.enhance import Enhancer, noise_level, sorted_percentile


def _scene(rng: np.random.Generator, level: float, noise: float) -> np.ndarray:
    base = np.tile(np.linspace(40, 200, 320, dtype=np.float32), (240, 1))
    img = base * level + rng.normal(0, noise, base.shape).astype(np.float32)
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def test_noise_level_tells_grainy_from_clean() -> None:
    rng = np.random.default_rng(0)
    assert noise_level(_scene(rng, 1.0, 0.0)) < 3
    assert noise_level(_scene(rng, 1.0, 30.0)) > 15


def test_fast_statistics_equal_numpys() -> None:
    # The per-frame statistics avoid numpy's sorting medians and percentiles for speed;
    # they must give numpy's numbers (its median of pair differences, its linear
    # percentile), on odd and even sizes.
    rng = np.random.default_rng(5)
    for _ in range(40):
        h, w = int(rng.integers(2, 60)), int(rng.integers(2, 90))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        g = img[::2, :, 1].astype(np.int16)
        ref = 1.4826 * float(np.median(np.abs(np.diff(g, axis=1)[:, ::2]))) / np.sqrt(2)
        assert abs(noise_level(img) - ref) < 1e-9
        v = rng.random(int(rng.integers(1, 500))).astype(np.float32)
        for q in (0.0, 1.0, 5.0, 50.0, 99.0, 99.5, 100.0):
            assert abs(sorted_percentile(np.sort(v), q) - float(np.percentile(v, q))) < 1e-6


def test_auto_gain_night_is_night_by_its_noise() -> None:
    rng = np.random.default_rng(1)
    en = Enhancer(EnhanceConfig())
    en.apply(_scene(rng, 1.0, 30.0))  # bright (the camera's gain) but grainy
    assert en.mode == "night"
    en2 = Enhancer(EnhanceConfig())
    en2.apply(_scene(rng, 1.0, 1.0))
    assert en2.mode == "clear"


def test_low_boxes_count_only_on_the_foreground() -> None:
    rng = np.random.default_rng(2)
    cfg = EnhanceConfig(regime="night")
    en = Enhancer(cfg)
    dark = 0.1
    for _ in range(12):  # learn the empty scene
        en.apply(_scene(rng, dark, 2.0))
    img = _scene(rng, dark, 2.0)
    img[100:180, 200:230] = 120  # somebody lit by the lamp
    en.apply(img)
    assert en.foreground is not None
    boxes = np.array([[200, 100, 230, 180], [40, 100, 70, 180]], np.float32)
    low = np.float32(cfg.score_threshold_night_fg + 0.01)
    keep = en.keep(boxes, np.array([low, low]), 0.4)
    assert keep.tolist() == [True, False]
    # A box at the night threshold counts anywhere.
    assert en.keep(boxes, np.array([0.9, 0.9]), 0.4).all()
    # A low box overlapping a better one is a fragment of that person.
    dets = np.array([[200, 100, 230, 180, 0.8], [205, 120, 240, 190, low]], np.float32)
    assert len(en.tidy(dets, 0.4)) == 1
