"""`polectl visibility`: the JSON lines it promises, on the bundled sample clip and on
images fogged by the test generator (no shared data needed)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from polectl.visibility import command
from typer.testing import CliRunner

from tests.visibility import foggen as fg
from tests.visibility.conftest import (
    PETS_HEIGHT_M,
    PETS_ROLL_DEG,
    PETS_TILT_DEG,
    PETS_VFOV_DEG,
    SAMPLE,
)

app = typer.Typer()
app.command()(command)  # what tools/polectl/cli.py registers as `polectl visibility`


def pole_toml(tmp_path: Path, extra: str = "") -> Path:
    p = tmp_path / "pole.toml"
    p.write_text(
        '[pole]\nid = "pole-0042"\n\n'
        "[visibility]\nenabled = true\ninterval_s = 1.0\nreference_frames = 3\n"
        f"reference_gap_s = 0.0\n{extra}\n"
        f"[visibility.calibration]\nmounting_height_m = {PETS_HEIGHT_M}\n"
        f"tilt_deg = {PETS_TILT_DEG}\nvfov_deg = {PETS_VFOV_DEG}\nroll_deg = {PETS_ROLL_DEG}\n")
    return p


def rows(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_sample_clip_one_object_per_estimate(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, [str(SAMPLE), "--config", str(pole_toml(tmp_path))])
    assert res.exit_code == 0, res.output
    out = rows(res.stdout)
    assert len(out) == 12  # a 12 s clip, one estimate per interval_s (1 s)
    assert [r["t"] for r in out] == pytest.approx([float(i) for i in range(12)])
    for r in out:
        assert {"t", "mor_m", "band", "confidence"} <= set(r)
    assert all(r["band"] == "unknown" for r in out[:2])  # learning the reference
    assert all(r["band"] == ">=1000" and r["mor_m"] is None for r in out[4:])  # a clear day
    assert all(float(r["confidence"]) > 0.5 for r in out[4:])  # type: ignore[arg-type]


def test_fogged_images(tmp_path: Path) -> None:
    cam = fg.Camera.from_params(PETS_HEIGHT_M, PETS_TILT_DEG, PETS_VFOV_DEG, PETS_ROLL_DEG)
    depth = fg.depth_map(cam, (576, 768))
    rng = np.random.default_rng(4)
    cap = cv2.VideoCapture(str(SAMPLE))
    imgs = []
    for i in range(120):
        ok, img = cap.read()
        assert ok
        if i % 10 == 0:
            imgs.append(img)
    cap.release()
    folder = tmp_path / "shots"
    folder.mkdir()
    for i, img in enumerate(imgs):
        lin = fg.srgb_to_linear(img)
        if i >= 6:  # the fog comes in
            lin = fg.fog(lin, depth, 150.0, rng)
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), fg.sensor(lin, rng))
    res = CliRunner().invoke(app, [str(folder), "--config", str(pole_toml(tmp_path)),
                                   "--every", "5"])
    assert res.exit_code == 0, res.output
    out = rows(res.stdout)
    assert [r["t"] for r in out] == [5.0 * i for i in range(12)]
    assert out[5]["band"] == ">=1000"
    assert out[-1]["band"] == "50-200", out[-1]
    assert out[-1]["mor_m"] == pytest.approx(150.0, rel=0.3)


def test_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    cfg = pole_toml(tmp_path)
    res = runner.invoke(app, [str(tmp_path / "missing.mp4"), "--config", str(cfg)])
    assert res.exit_code == 1 and "not found" in res.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[visibility.calibration]\ntilt = 10\n")
    res = runner.invoke(app, [str(SAMPLE), "--config", str(bad)])
    assert res.exit_code == 2 and "visibility.calibration.tilt: unknown key" in res.stderr
    empty = tmp_path / "empty.toml"
    empty.write_text("[visibility]\nenabled = true\n")
    res = runner.invoke(app, [str(SAMPLE), "--config", str(empty)])
    assert res.exit_code == 1 and "calibration is incomplete" in res.stderr
    res = runner.invoke(app, [str(SAMPLE), "--config", str(cfg), "--regime", "noon"])
    assert res.exit_code == 1 and "regime" in res.stderr
    other = tmp_path / "other.toml"
    other.write_text('[pole]\nid = "Bad Id"\n')
    res = runner.invoke(app, [str(SAMPLE), "--config", str(other)])
    assert res.exit_code == 2 and "pole.id" in res.stderr
