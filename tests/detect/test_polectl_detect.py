"""`polectl detect`: the JSONL it promises, on the bundled sample clip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from polectl.detect import DetectError, detect_video

from tests.detect.conftest import SAMPLE


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_writes_one_object_per_processed_frame(tmp_path: Path) -> None:
    out = tmp_path / "d.jsonl"
    summary = detect_video(SAMPLE, None, out, progress=False, max_frames=20)
    rows = lines(out)
    assert summary["frames"] == 20 and summary["processed"] == len(rows) == 20
    assert [r["frame"] for r in rows] == list(range(20))
    for r in rows:
        assert set(r) == {"frame", "t", "boxes"}
        assert r["t"] == pytest.approx(r["frame"] / 10, abs=1e-3)
        for b in r["boxes"]:
            assert len(b) == 5
            x1, y1, x2, y2, s = b
            assert 0 <= x1 < x2 <= 768 and 0 <= y1 < y2 <= 576 and 0 < s <= 1
    assert sum(len(r["boxes"]) for r in rows) >= 20  # people walk through every frame


def test_config_detector_section_is_used(tmp_path: Path) -> None:
    cfg = tmp_path / "pole.toml"
    cfg.write_text('[pole]\nid = "pole-0042"\n\n[detector]\ndetect_interval = 2\n'
                   '[detector.tiling]\ncols = 2\nrows = 2\n')
    out = tmp_path / "d.jsonl"
    detect_video(SAMPLE, cfg, out, progress=True, max_frames=6)
    assert [r["frame"] for r in lines(out)] == [0, 2, 4]


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DetectError, match="not found"):
        detect_video(tmp_path / "missing.mp4", None, tmp_path / "o.jsonl", progress=False)
    bad = tmp_path / "bad.toml"
    bad.write_text("[detector]\nscore_treshold = 0.5\n")
    with pytest.raises(DetectError, match=r"detector\.score_treshold: unknown key"):
        detect_video(SAMPLE, bad, tmp_path / "o.jsonl", progress=False)
    broken = tmp_path / "broken.toml"
    broken.write_text("[detector\n")
    with pytest.raises(DetectError, match="syntax"):
        detect_video(SAMPLE, broken, tmp_path / "o.jsonl", progress=False)
    other = tmp_path / "other.toml"
    other.write_text('[pole]\nid = "Bad Id"\n')
    with pytest.raises(DetectError, match=r"pole\.id"):
        detect_video(SAMPLE, other, tmp_path / "o.jsonl", progress=False)
    notvideo = tmp_path / "x.mp4"
    notvideo.write_text("not a video")
    with pytest.raises(DetectError, match="cannot open"):
        detect_video(notvideo, None, tmp_path / "o.jsonl", progress=False)


CALIBRATED = ('[pole]\nid = "pole-0042"\n\n[visibility.calibration]\nmounting_height_m = 8.5\n'
              'tilt_deg = 30.0\nvfov_deg = 40.0\n')


def test_regime_mor_and_the_config_calibration(tmp_path: Path) -> None:
    """--regime and --mor as the live controller feeds them; the calibration's distances
    reach the fog model (issue 15)."""
    cfg = tmp_path / "pole.toml"
    cfg.write_text(CALIBRATED)
    s = detect_video(SAMPLE, cfg, tmp_path / "d.jsonl", progress=False, max_frames=3,
                     regime="night")
    assert s["enhance"] == "night" and s["calibration"] is True
    s = detect_video(SAMPLE, cfg, tmp_path / "d.jsonl", progress=False, max_frames=3,
                     regime="day", mor_m=40.0)  # dense fog by the model: fog removal runs
    assert s["enhance"] == "fog" and s["calibration"] is True
    s = detect_video(SAMPLE, None, tmp_path / "d.jsonl", progress=False, max_frames=3,
                     regime="day", mor_m=40.0)  # no calibration: the MOR alone does nothing
    assert s["calibration"] is False
    with pytest.raises(DetectError, match="regime"):
        detect_video(SAMPLE, None, tmp_path / "d.jsonl", progress=False, regime="dusk")


def test_cli_detect_and_replay_take_regime_and_mor(tmp_path: Path) -> None:
    from polectl.cli import app
    from typer.testing import CliRunner

    cfg = tmp_path / "pole.toml"
    cfg.write_text(CALIBRATED + '\n[[zones]]\nname = "mid-road"\nkind = "carriageway"\n'
                   'polygon = [[300, 190], [560, 175], [640, 300], [300, 290]]\n')
    r = CliRunner().invoke(app, ["detect", str(SAMPLE), "-c", str(cfg), "--out",
                                 str(tmp_path / "d.jsonl"), "--max-frames", "2",
                                 "--regime", "day", "--mor", "40"])
    assert r.exit_code == 0, r.output
    assert '"enhance": "fog"' in r.output
    r = CliRunner().invoke(app, ["replay", str(SAMPLE), "-c", str(cfg), "--events-out",
                                 str(tmp_path / "e.jsonl"), "--max-frames", "2", "--json",
                                 "--regime", "night", "--mor", "200"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["replay", str(SAMPLE), "-c", str(cfg), "--events-out",
                                 str(tmp_path / "e.jsonl"), "--max-frames", "2",
                                 "--regime", "dusk"])
    assert r.exit_code == 1 and "regime" in r.output
