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
